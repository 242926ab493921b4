package network

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/errdefs"
)

func TestResolvConf(t *testing.T) {
	for _, tc := range []struct {
		name, host                  string
		dns, search, opts, fallback []string
		want                        string
	}{
		{name: "host nameservers kept", host: "nameserver 192.0.2.53\nnameserver 127.0.0.53\nsearch a.test b.test\n",
			fallback: []string{"8.8.8.8"}, want: "nameserver 192.0.2.53\nsearch a.test b.test\n"},
		{name: "loopback only uses fallbacks", host: "nameserver 127.0.0.53\nnameserver ::1\n",
			fallback: []string{"8.8.8.8", "8.8.4.4"}, want: "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"},
		{name: "loopback only, no fallback", host: "nameserver 127.0.0.1\n", want: "# No nameserver"},
		{name: "flags replace the host's", host: "nameserver 192.0.2.53\nsearch a.test\noptions ndots:5\n",
			dns: []string{"192.0.2.99"}, search: []string{"b.test"}, opts: []string{"timeout:1"},
			want: "nameserver 192.0.2.99\nsearch b.test\noptions timeout:1\n"},
		{name: "no host file", host: "", fallback: []string{"8.8.8.8"}, want: "nameserver 8.8.8.8\n"},
	} {
		got, err := resolvConf(tc.host, tc.dns, tc.search, tc.opts, tc.fallback)
		if err != nil || !strings.Contains(got, tc.want) || strings.Contains(got, "nameserver 127.") || strings.Contains(got, "nameserver ::1") {
			t.Errorf("%s:\n%s\nwant it to contain\n%s (err %v)", tc.name, got, tc.want, err)
		}
	}
	if _, err := resolvConf("", []string{"dns.google"}, nil, nil, nil); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("--dns with a name: %v", err)
	}
}

func TestExtraHostsAndInPlaceRewrite(t *testing.T) {
	hosts, err := parseExtraHosts([]string{"db:10.0.0.5", "v6:[fd00::5]", "v6b:fd00::6"})
	if err != nil || len(hosts) != 3 || hosts[1].IP != "fd00::5" || hosts[2].IP != "fd00::6" {
		t.Fatalf("extra hosts: %v %v", hosts, err)
	}
	for _, bad := range []string{"nocolon", ":10.0.0.1", "db:notanip"} {
		if _, err := parseExtraHosts([]string{bad}); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("--add-host %q: %v", bad, err)
		}
	}
	path := filepath.Join(t.TempDir(), "hosts")
	long := strings.Repeat("10.0.0.1 a-long-name\n", 20)
	if err := rewriteInPlace(path, []byte(long)); err != nil {
		t.Fatal(err)
	}
	// Hold the file open as a bind mount would hold its inode.
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := rewriteInPlace(path, []byte("10.0.0.2 short\n")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	st1, _ := f.Stat()
	st2, _ := os.Stat(path)
	if string(b) != "10.0.0.2 short\n" || !os.SameFile(st1, st2) || st1.Size() != int64(len(b)) {
		t.Fatalf("after an in-place rewrite: %q, same inode %v", b, os.SameFile(st1, st2))
	}
}
