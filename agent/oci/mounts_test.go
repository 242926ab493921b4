package oci

import (
	"context"
	"errors"
	"testing"

	"github.com/berth-dev/berth/errdefs"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

func TestBindAndTmpfsMounts(t *testing.T) {
	s := generate(t, testInput(t, &berthv1.ContainerSpec{Mounts: []*berthv1.Mount{
		{Type: "bind", Source: "/srv/data/", Destination: "/data/sub", ReadOnly: true},
		{Type: "tmpfs", Destination: "/run", Options: []string{"size=64m"}},
		{Type: "bind", Source: "/srv/data", Destination: "/data"},
		{Type: "tmpfs", Destination: "/scratch", Options: []string{"exec,mode=1777", "size=10%"}},
		{Type: "bind", Source: "/var/log", Destination: "/logs", Options: []string{"ro", "rslave"}},
	}}))

	m := mustMount(t, s, "/data/sub")
	if m.Type != "bind" || m.Source != "/srv/data" {
		t.Errorf("bind %+v", m)
	}
	equal(t, "-v /srv/data:/data/sub:ro", m.Options, []string{"rbind", "ro", "rprivate"})
	equal(t, "-v /srv/data:/data", mustMount(t, s, "/data").Options, []string{"rbind", "rprivate"})
	equal(t, "rslave bind", mustMount(t, s, "/logs").Options, []string{"rbind", "ro", "rslave"})
	if s.Linux.RootfsPropagation != "rslave" {
		t.Errorf("rootfs propagation %q, want rslave for a slave bind", s.Linux.RootfsPropagation)
	}

	run := mustMount(t, s, "/run")
	if run.Type != "tmpfs" || run.Source != "tmpfs" {
		t.Errorf("tmpfs %+v", run)
	}
	equal(t, "--tmpfs /run:size=64m", run.Options, []string{"noexec", "nosuid", "nodev", "rprivate", "size=64m"})
	equal(t, "--tmpfs /scratch:exec,...", mustMount(t, s, "/scratch").Options, []string{"nosuid", "nodev", "rprivate", "exec", "mode=1777", "size=10%"})

	// Parents before children, whatever the order given.
	pos := map[string]int{}
	for i, m := range s.Mounts {
		pos[m.Destination] = i
	}
	if pos["/data"] > pos["/data/sub"] {
		t.Errorf("/data mounted after /data/sub: %v", pos)
	}
	if pos["/dev"] > pos["/run"] {
		t.Errorf("user mounts before the defaults: %v", pos)
	}
}

func TestUserMountReplacesDefault(t *testing.T) {
	s := generate(t, testInput(t, &berthv1.ContainerSpec{Mounts: []*berthv1.Mount{
		{Type: "bind", Source: "/host/shm", Destination: "/dev/shm"},
	}}))
	n := 0
	for _, m := range s.Mounts {
		if m.Destination == "/dev/shm" {
			n++
			if m.Type != "bind" {
				t.Errorf("/dev/shm is %+v, want the user's bind", m)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d mounts at /dev/shm, want 1", n)
	}

	// A user /dev replaces everything Docker would mount under it.
	s = generate(t, testInput(t, &berthv1.ContainerSpec{Mounts: []*berthv1.Mount{
		{Type: "bind", Source: "/dev", Destination: "/dev"},
	}}))
	for _, dst := range []string{"/dev/pts", "/dev/shm", "/dev/mqueue"} {
		if _, ok := findMount(s, dst); ok {
			t.Errorf("default %s kept under a user /dev", dst)
		}
	}
}

func TestShmSize(t *testing.T) {
	for size, want := range map[string]string{
		"":       "size=67108864",
		"128m":   "size=134217728",
		"1g":     "size=1073741824",
		"512MiB": "size=536870912",
		"4096":   "size=4096",
		"1.5k":   "size=1536",
	} {
		s := generate(t, testInput(t, &berthv1.ContainerSpec{ShmSize: size}))
		opts := mustMount(t, s, "/dev/shm").Options
		if opts[len(opts)-1] != want {
			t.Errorf("shm_size %q: options %v, want %s", size, opts, want)
		}
	}
	for _, bad := range []string{"64x", "-1m", "0", "m"} {
		_, err := Generate(t.Context(), testInput(t, &berthv1.ContainerSpec{ShmSize: bad}))
		wantInvalid(t, err, "shm_size")
	}
}

func TestReadOnlyRootfs(t *testing.T) {
	s := generate(t, testInput(t, &berthv1.ContainerSpec{ReadOnlyRootfs: true, Mounts: []*berthv1.Mount{
		{Type: "tmpfs", Destination: "/tmp"},
	}}))
	if !s.Root.Readonly {
		t.Error("root not read-only")
	}
	for _, m := range s.Mounts {
		ro := contains(m.Options, "ro")
		switch m.Destination {
		case "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/tmp":
			if ro {
				t.Errorf("%s is read-only; it must stay writable", m.Destination)
			}
		default:
			if !ro {
				t.Errorf("%s is writable under a read-only rootfs", m.Destination)
			}
		}
	}
}

func TestMountErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		m     []*berthv1.Mount
		words []string
	}{
		{"relative destination", []*berthv1.Mount{{Type: "bind", Source: "/a", Destination: "data"}}, []string{"mounts[0]", "destination", "data"}},
		{"empty destination", []*berthv1.Mount{{Type: "tmpfs"}}, []string{"mounts[0]", "destination"}},
		{"root destination", []*berthv1.Mount{{Type: "bind", Source: "/a", Destination: "/"}}, []string{"mounts[0]", "'/'"}},
		{"duplicate", []*berthv1.Mount{{Type: "tmpfs", Destination: "/x"}, {Type: "tmpfs", Destination: "/x/"}}, []string{"mounts[1]", "duplicate", "/x"}},
		{"relative source", []*berthv1.Mount{{Type: "bind", Source: "data", Destination: "/data"}}, []string{"mounts[0]", "source", "data"}},
		{"bad bind option", []*berthv1.Mount{{Type: "bind", Source: "/a", Destination: "/a", Options: []string{"rw", "fast"}}}, []string{"mounts[0]", "fast"}},
		{"two propagations", []*berthv1.Mount{{Type: "bind", Source: "/a", Destination: "/a", Options: []string{"shared", "slave"}}}, []string{"mounts[0]", "propagation"}},
		{"bad tmpfs size", []*berthv1.Mount{{Type: "tmpfs", Destination: "/run", Options: []string{"size=64x"}}}, []string{"mounts[0]", "size", "64x"}},
		{"bad tmpfs mode", []*berthv1.Mount{{Type: "tmpfs", Destination: "/run", Options: []string{"mode=999"}}}, []string{"mounts[0]", "mode"}},
		{"unknown tmpfs option", []*berthv1.Mount{{Type: "tmpfs", Destination: "/run", Options: []string{"fast"}}}, []string{"mounts[0]", "fast"}},
		{"tmpfs with source", []*berthv1.Mount{{Type: "tmpfs", Source: "/a", Destination: "/run"}}, []string{"mounts[0]", "source"}},
		{"unknown type", []*berthv1.Mount{{Type: "nfs", Source: "/a", Destination: "/a"}}, []string{"mounts[0]", "nfs"}},
		{"nil mount", []*berthv1.Mount{{Type: "tmpfs", Destination: "/a"}, nil}, []string{"mounts[1]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Generate(t.Context(), testInput(t, &berthv1.ContainerSpec{Mounts: tc.m}))
			wantInvalid(t, err, tc.words...)
		})
	}
}

func TestVolumeMounts(t *testing.T) {
	vol := []*berthv1.Mount{{Type: "volume", Source: "pgdata", Destination: "/var/lib/postgresql/data", Options: []string{"nocopy"}}}
	_, err := Generate(t.Context(), testInput(t, &berthv1.ContainerSpec{Mounts: vol}))
	wantKind(t, err, errdefs.ErrNotImplemented, "mounts[0]", "pgdata")

	in := testInput(t, &berthv1.ContainerSpec{Mounts: vol})
	in.ResolveVolume = func(_ context.Context, name string) (string, error) {
		return "/var/lib/berth/volumes/" + name + "/_data", nil
	}
	m := mustMount(t, generate(t, in), "/var/lib/postgresql/data")
	if m.Source != "/var/lib/berth/volumes/pgdata/_data" || m.Type != "bind" {
		t.Errorf("volume mount %+v", m)
	}
	equal(t, "volume options", m.Options, []string{"rbind", "rprivate"})

	in.ResolveVolume = func(context.Context, string) (string, error) { return "", errors.New("disk full") }
	if _, err := Generate(t.Context(), in); err == nil {
		t.Error("volume resolver error ignored")
	}
}
