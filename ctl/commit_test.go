package ctl

import (
	"reflect"
	"testing"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

func TestApplyChange(t *testing.T) {
	cfg := &berthv1.ImageConfig{}
	for _, ch := range []string{
		`CMD ["cat", "/hello.txt"]`,
		`ENTRYPOINT /bin/app --flag`,
		`ENV A=1 B="two words"`,
		`ENV OLD style value`,
		`WORKDIR /data`,
		`USER nobody`,
		`LABEL k=v`,
		`EXPOSE 80 53/udp`,
		`VOLUME ["/v1"]`,
		`STOPSIGNAL SIGINT`,
	} {
		if err := applyChange(cfg, ch); err != nil {
			t.Fatalf("%s: %v", ch, err)
		}
	}
	want := &berthv1.ImageConfig{
		Cmd:          []string{"cat", "/hello.txt"},
		Entrypoint:   []string{"/bin/sh", "-c", "/bin/app --flag"},
		Env:          []string{"A=1", "B=two words", "OLD=style value"},
		WorkingDir:   "/data",
		User:         "nobody",
		Labels:       map[string]string{"k": "v"},
		ExposedPorts: []string{"80/tcp", "53/udp"},
		Volumes:      []string{"/v1"},
		StopSignal:   "SIGINT",
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got %v\nwant %v", cfg, want)
	}
	for _, bad := range []string{"RUN echo", "CMD", `ENV ="x"`, `ENV A="open`} {
		if err := applyChange(&berthv1.ImageConfig{}, bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestSplitCpArg(t *testing.T) {
	for in, want := range map[string][2]string{
		"web:/etc/hosts": {"web", "/etc/hosts"},
		"/tmp/a:b":       {"", "/tmp/a:b"},
		"./x":            {"", "./x"},
		"file":           {"", "file"},
		"-":              {"", "-"},
	} {
		if c, p := splitCpArg(in); c != want[0] || p != want[1] {
			t.Errorf("splitCpArg(%q) = %q, %q; want %q", in, c, p, want)
		}
	}
}
