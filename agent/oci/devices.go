package oci

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// hostDevices lists the device nodes under dir ("/dev" when empty) for a
// privileged container, as containerd's HostDevices does for Docker:
// every char and block device, except those under directories the
// container mounts its own of (pts, shm, mqueue) or that are per-process
// (fd), and the host's console.
func hostDevices(dir string) ([]specs.LinuxDevice, error) {
	if dir == "" {
		dir = "/dev"
	}
	var out []specs.LinuxDevice
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			// A node can vanish or be unreadable while we walk (udev);
			// that loses one device, not the container.
			if p == dir {
				return err
			}
			if d != nil && d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			switch d.Name() {
			case "pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev":
				if p != dir {
					return filepath.SkipDir
				}
			}
			return nil
		}
		if d.Name() == "console" || d.Type()&(fs.ModeDevice|fs.ModeCharDevice) == 0 {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return nil
		}
		var typ string
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFCHR:
			typ = "c"
		case unix.S_IFBLK:
			typ = "b"
		default:
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return nil
		}
		mode := os.FileMode(st.Mode & 0o777)
		uid, gid := st.Uid, st.Gid
		out = append(out, specs.LinuxDevice{
			Path:     filepath.Join("/dev", rel),
			Type:     typ,
			Major:    int64(unix.Major(st.Rdev)),
			Minor:    int64(unix.Minor(st.Rdev)),
			FileMode: &mode,
			UID:      &uid,
			GID:      &gid,
		})
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return out, nil
}
