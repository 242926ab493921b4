package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
)

// sandbox is a snapshot dir next to things a malicious layer wants to
// reach: a canary file, and a directory "outside" holding another one.
type sandbox struct {
	base, dir, canary, outside string
	before                     string
}

func newSandbox(t *testing.T) *sandbox {
	base := t.TempDir()
	s := &sandbox{
		base:    base,
		dir:     filepath.Join(base, "snap", "fs"),
		canary:  filepath.Join(base, "canary"),
		outside: filepath.Join(base, "outside"),
	}
	for _, d := range []string{s.dir, s.outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{s.canary, filepath.Join(s.outside, "canary")} {
		if err := os.WriteFile(f, []byte("untouched"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(f, t0, t0); err != nil {
			t.Fatal(err)
		}
	}
	s.before = s.outsideState(t)
	return s
}

// outsideState describes everything under base except the snapshot dir.
func (s *sandbox) outsideState(t *testing.T) string {
	full := describe(t, s.base)
	var keep []string
	for _, l := range strings.Split(full, "\n") {
		if strings.HasPrefix(l, "snap/fs/") || strings.HasPrefix(l, "snap/fs ") || strings.HasPrefix(l, ". ") || strings.HasPrefix(l, "snap ") {
			continue
		}
		// Directory mtimes of base would change with any test bookkeeping.
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n")
}

func (s *sandbox) check(t *testing.T) {
	t.Helper()
	if got := s.outsideState(t); got != s.before {
		t.Errorf("outside of the snapshot changed:\n%s\nwas\n%s", got, s.before)
	}
	for _, f := range []string{s.canary, filepath.Join(s.outside, "canary")} {
		var st unix.Stat_t
		if err := unix.Lstat(f, &st); err != nil {
			t.Fatalf("canary %s: %v", f, err)
		}
		if st.Nlink != 1 || st.Mode != unix.S_IFREG|0o644 || st.Mtim.Nano() != t0.UnixNano() || mustRead(t, f) != "untouched" {
			t.Errorf("canary %s touched: %+v", f, st)
		}
	}
	if _, err := os.Lstat("/passwd-berth-test"); err == nil {
		t.Errorf("a file landed in the host root")
	}
}

func TestApplyContainsMaliciousLayers(t *testing.T) {
	requireRoot(t)
	type tc struct {
		name string
		ents func(s *sandbox) []ent
		// inside names paths that must exist in the snapshot afterwards
		// when Apply succeeds (contained rather than refused); $canary
		// stands for the canary's absolute path made relative.
		inside []string
	}
	cases := []tc{
		{"dotdot", func(s *sandbox) []ent {
			return []ent{file("../../canary", "pwned", 0o644), file("a/../../../outside/canary", "pwned", 0o644)}
		}, []string{"canary", "outside/canary"}},
		{"absolute", func(s *sandbox) []ent {
			return []ent{file(s.canary, "pwned", 0o644), file("/passwd-berth-test", "pwned", 0o644)}
		}, []string{"$canary", "passwd-berth-test"}},
		{"symlink-absolute-then-through", func(s *sandbox) []ent {
			return []ent{symlink("evil", s.outside), file("evil/canary", "pwned", 0o644), file("evil/new", "pwned", 0o644)}
		}, nil},
		{"symlink-relative-then-through", func(s *sandbox) []ent {
			return []ent{symlink("evil", "../../outside"), file("evil/canary", "pwned", 0o644), dirEnt("evil/newdir/", 0o755)}
		}, []string{"evil", "outside/canary", "outside/newdir"}},
		{"symlink-chain", func(s *sandbox) []ent {
			return []ent{dirEnt("a/", 0o755), symlink("a/up", ".."), symlink("a/up2", "up/.."), file("a/up2/up2/up/canary", "pwned", 0o644)}
		}, nil},
		{"symlink-proc-magic", func(s *sandbox) []ent {
			return []ent{symlink("p", "/proc/self/root"+s.outside), file("p/canary", "pwned", 0o644)}
		}, nil},
		{"symlink-then-chmod-dir", func(s *sandbox) []ent {
			return []ent{symlink("evil", s.outside), dirEnt("evil/", 0o777)}
		}, []string{"evil"}},
		{"hardlink-dotdot", func(s *sandbox) []ent {
			return []ent{hardlink("hl", "../../canary")}
		}, nil},
		{"hardlink-absolute", func(s *sandbox) []ent {
			return []ent{hardlink("hl", s.canary)}
		}, nil},
		{"hardlink-through-symlink", func(s *sandbox) []ent {
			return []ent{symlink("evil", s.outside), hardlink("hl", "evil/canary"), file("hl", "pwned", 0o644)}
		}, nil},
		{"hardlink-to-symlink-then-write", func(s *sandbox) []ent {
			return []ent{symlink("evil", s.canary), hardlink("hl", "evil"), file("evil", "pwned", 0o644)}
		}, nil},
		{"whiteout-through-symlink", func(s *sandbox) []ent {
			return []ent{symlink("evil", s.outside), whiteoutEnt("evil/.wh.canary"), whiteoutEnt("evil/.wh..wh..opq")}
		}, nil},
		{"whiteout-dotdot", func(s *sandbox) []ent {
			return []ent{whiteoutEnt("../../.wh.canary"), whiteoutEnt("../../outside/.wh..wh..opq"), whiteoutEnt("a/.wh..")}
		}, nil},
		{"device-and-xattr-through-symlink", func(s *sandbox) []ent {
			x := file("evil/canary", "pwned", 0o644)
			x.hdr.PAXRecords = map[string]string{"SCHILY.xattr.user.pwned": "1"}
			return []ent{
				symlink("evil", s.outside),
				{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "evil/dev", Mode: 0o666, Devmajor: 1, Devminor: 3}},
				{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "evil/fifo", Mode: 0o666}},
				x,
			}
		}, nil},
		{"symlink-at-root", func(s *sandbox) []ent {
			return []ent{symlink(".", s.outside), file("canary", "pwned", 0o644)}
		}, nil},
		{"file-at-root", func(s *sandbox) []ent {
			return []ent{file("..", "x", 0o644), file("canary", "pwned", 0o644)}
		}, nil},
		{"overlay-xattr-smuggled", func(s *sandbox) []ent {
			d := dirEnt("d/", 0o755)
			d.hdr.PAXRecords = map[string]string{"SCHILY.xattr.trusted.overlay.redirect": "/etc", "SCHILY.xattr.trusted.overlay.opaque": "y"}
			return []ent{d}
		}, []string{"d"}},
	}
	for _, c := range cases {
		for _, mode := range []WhiteoutMode{WhiteoutDelete, WhiteoutOverlay} {
			name := c.name + "/delete"
			if mode == WhiteoutOverlay {
				name = c.name + "/overlay"
			}
			t.Run(name, func(t *testing.T) {
				s := newSandbox(t)
				layer := tarOf(t, c.ents(s)...)
				_, err := Apply(context.Background(), s.dir, bytes.NewReader(layer), WithWhiteoutMode(mode), quiet)
				s.check(t)
				if err != nil {
					// Refused: fine, as long as the error names an entry.
					if !strings.Contains(err.Error(), "layer entry") {
						t.Errorf("error does not name the entry: %v", err)
					}
					if !errors.Is(err, errdefs.ErrInvalidArgument) {
						t.Errorf("refusal is not ErrInvalidArgument: %v", err)
					}
					t.Logf("refused: %v", err)
					return
				}
				for _, p := range c.inside {
					p = strings.ReplaceAll(p, "$canary", strings.TrimPrefix(s.canary, "/"))
					if !exists(filepath.Join(s.dir, p)) {
						t.Errorf("contained entry %s not inside the snapshot", p)
					}
				}
				if c.name == "overlay-xattr-smuggled" {
					if xs := xattrs(t, filepath.Join(s.dir, "d")); slices.ContainsFunc(xs, func(x string) bool { return strings.HasPrefix(x, "trusted.overlay.") }) {
						t.Errorf("layer set overlay xattrs: %v", xs)
					}
				}
			})
		}
	}
}
