package oci

import (
	"os"
	"testing"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// TestArgs is Docker's table of entrypoint/cmd overrides.
func TestArgs(t *testing.T) {
	l := func(s ...string) []string { return s }
	for _, tc := range []struct {
		name            string
		imgEP, imgCmd   []string
		userEP, userCmd []string
		want            []string
		wantErr         bool
	}{
		{"image cmd only", nil, l("sh"), nil, nil, l("sh"), false},
		{"image entrypoint and cmd", l("/entry.sh"), l("serve", "-v"), nil, nil, l("/entry.sh", "serve", "-v"), false},
		{"user cmd replaces image cmd, keeps entrypoint", l("/entry.sh"), l("serve"), nil, l("migrate"), l("/entry.sh", "migrate"), false},
		{"user cmd without image entrypoint", nil, l("sh"), nil, l("echo", "hi"), l("echo", "hi"), false},
		{"--entrypoint drops the image cmd", l("/entry.sh"), l("serve"), l("bash"), nil, l("bash"), false},
		{"--entrypoint with user cmd", l("/entry.sh"), l("serve"), l("bash"), l("-c", "true"), l("bash", "-c", "true"), false},
		{"--entrypoint on image with cmd only", nil, l("sh"), l("env"), nil, l("env"), false},
		{"--entrypoint '' with user cmd", l("/entry.sh"), l("serve"), l(""), l("ls"), l("ls"), false},
		{"--entrypoint '' alone is no command", l("/entry.sh"), l("serve"), l(""), nil, nil, true},
		{"image entrypoint [''] is cleared", l(""), l("sh"), nil, nil, l("sh"), false},
		{"nothing at all", nil, nil, nil, nil, nil, true},
		{"empty command string", nil, l(""), nil, nil, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := testInput(t, &berthv1.ContainerSpec{Entrypoint: tc.userEP, Cmd: tc.userCmd})
			in.Image = &berthv1.ImageConfig{Entrypoint: tc.imgEP, Cmd: tc.imgCmd}
			s, err := Generate(t.Context(), in)
			if tc.wantErr {
				wantInvalid(t, err, "cmd")
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			equal(t, "args", s.Process.Args, tc.want)
		})
	}
}

func TestEnv(t *testing.T) {
	for _, tc := range []struct {
		name     string
		image    []string
		user     []string
		tty      bool
		hostname string
		want     []string
	}{
		{
			name:  "image PATH replaces the default in place",
			image: []string{"PATH=/opt/bin:/bin", "LANG=C.UTF-8"},
			want:  []string{"PATH=/opt/bin:/bin", "HOSTNAME=" + testID[:12], "LANG=C.UTF-8"},
		},
		{
			name:  "user overrides image by key; user entries come first",
			image: []string{"A=image", "B=image"},
			user:  []string{"B=user", "C=user"},
			want:  []string{"PATH=" + DefaultPath, "HOSTNAME=" + testID[:12], "B=user", "C=user", "A=image"},
		},
		{
			name:     "tty adds TERM; hostname follows --hostname",
			tty:      true,
			hostname: "web",
			want:     []string{"PATH=" + DefaultPath, "HOSTNAME=web", "TERM=xterm"},
		},
		{
			name: "user can override TERM and HOSTNAME",
			tty:  true,
			user: []string{"TERM=dumb", "HOSTNAME=x"},
			want: []string{"PATH=" + DefaultPath, "HOSTNAME=x", "TERM=dumb"},
		},
		{
			name:  "a bare key unsets, and hides the image's value",
			image: []string{"SECRET=1", "KEEP=1"},
			user:  []string{"SECRET", "TERM"},
			want:  []string{"PATH=" + DefaultPath, "HOSTNAME=" + testID[:12], "KEEP=1"},
		},
		{
			name: "empty values are kept",
			user: []string{"EMPTY="},
			want: []string{"PATH=" + DefaultPath, "HOSTNAME=" + testID[:12], "EMPTY="},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := testInput(t, &berthv1.ContainerSpec{Env: tc.user, Tty: tc.tty, Hostname: tc.hostname})
			in.Image.Env = tc.image
			s := generate(t, in)
			equal(t, "env", s.Process.Env, tc.want)
			if s.Process.Terminal != tc.tty {
				t.Errorf("terminal %v, want %v", s.Process.Terminal, tc.tty)
			}
		})
	}
	_, err := Generate(t.Context(), testInput(t, &berthv1.ContainerSpec{Env: []string{"=x"}}))
	wantInvalid(t, err, "env", "=x")
}

func TestWorkingDir(t *testing.T) {
	in := testInput(t, &berthv1.ContainerSpec{})
	in.Image.WorkingDir = "/app"
	if s := generate(t, in); s.Process.Cwd != "/app" {
		t.Errorf("cwd %q, want the image's /app", s.Process.Cwd)
	}
	in.Spec.WorkingDir = "/srv/../data/"
	if s := generate(t, in); s.Process.Cwd != "/data" {
		t.Errorf("cwd %q, want the user's, cleaned: /data", s.Process.Cwd)
	}
	in.Spec.WorkingDir = "data"
	_, err := Generate(t.Context(), in)
	wantInvalid(t, err, "working_dir", "data")
}

func TestHostname(t *testing.T) {
	s := generate(t, testInput(t, &berthv1.ContainerSpec{Hostname: "db-1", Domainname: "example.com"}))
	if s.Hostname != "db-1" || s.Domainname != "example.com" {
		t.Errorf("hostname %q domainname %q", s.Hostname, s.Domainname)
	}
	in := testInput(t, &berthv1.ContainerSpec{})
	in.ID = "short"
	if s := generate(t, in); s.Hostname != "short" {
		t.Errorf("hostname %q, want the whole short ID", s.Hostname)
	}
	_, err := Generate(t.Context(), testInput(t, &berthv1.ContainerSpec{Hostname: "a b"}))
	wantInvalid(t, err, "hostname", "a b")

	// With the host network the container shows the host's name, as Docker.
	host, err := os.Hostname()
	if err != nil {
		t.Skip(err)
	}
	s = generate(t, testInput(t, &berthv1.ContainerSpec{Network: &berthv1.NetworkConfig{Mode: "host"}}))
	if s.Hostname != host {
		t.Errorf("host network hostname %q, want %q", s.Hostname, host)
	}
}

func TestInit(t *testing.T) {
	in := testInput(t, &berthv1.ContainerSpec{Init: true, Cmd: []string{"sleep", "1"}})
	_, err := Generate(t.Context(), in)
	if err == nil {
		t.Fatal("--init without an init binary accepted")
	}
	in.InitBinary = "/usr/libexec/berth/init"
	s := generate(t, in)
	equal(t, "args", s.Process.Args, []string{InitPathInContainer, "--", "sleep", "1"})
	m := mustMount(t, s, InitPathInContainer)
	if m.Source != in.InitBinary || m.Type != "bind" {
		t.Errorf("init mount %+v", m)
	}
}
