package container

// Rootfs preparation inside the init's new mount namespace, in runc's
// order: make / a slave so nothing we mount leaks to the host, bind the
// rootfs onto itself (pivot_root needs a mount point), mount the spec's
// mounts with /dev's nodes and links, pivot_root(".", "."), detach the old
// root, then the read-only and masking passes. Paths under the rootfs are
// always resolved with secureJoin so a symlink in an image cannot send a
// mount outside it.

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// mountFlag maps mount(8)-style options to flags; clear means the option
// removes the flag (e.g. "rw" clears MS_RDONLY).
var mountFlags = map[string]struct {
	clear bool
	flag  uintptr
}{
	"async":         {true, unix.MS_SYNCHRONOUS},
	"atime":         {true, unix.MS_NOATIME},
	"bind":          {false, unix.MS_BIND},
	"defaults":      {false, 0},
	"dev":           {true, unix.MS_NODEV},
	"diratime":      {true, unix.MS_NODIRATIME},
	"dirsync":       {false, unix.MS_DIRSYNC},
	"exec":          {true, unix.MS_NOEXEC},
	"mand":          {false, unix.MS_MANDLOCK},
	"noatime":       {false, unix.MS_NOATIME},
	"nodev":         {false, unix.MS_NODEV},
	"nodiratime":    {false, unix.MS_NODIRATIME},
	"noexec":        {false, unix.MS_NOEXEC},
	"nomand":        {true, unix.MS_MANDLOCK},
	"norelatime":    {true, unix.MS_RELATIME},
	"nostrictatime": {true, unix.MS_STRICTATIME},
	"nosuid":        {false, unix.MS_NOSUID},
	"rbind":         {false, unix.MS_BIND | unix.MS_REC},
	"relatime":      {false, unix.MS_RELATIME},
	"remount":       {false, unix.MS_REMOUNT},
	"ro":            {false, unix.MS_RDONLY},
	"rw":            {true, unix.MS_RDONLY},
	"strictatime":   {false, unix.MS_STRICTATIME},
	"suid":          {true, unix.MS_NOSUID},
	"sync":          {false, unix.MS_SYNCHRONOUS},
}

var propagationFlags = map[string]uintptr{
	"private":     unix.MS_PRIVATE,
	"rprivate":    unix.MS_PRIVATE | unix.MS_REC,
	"shared":      unix.MS_SHARED,
	"rshared":     unix.MS_SHARED | unix.MS_REC,
	"slave":       unix.MS_SLAVE,
	"rslave":      unix.MS_SLAVE | unix.MS_REC,
	"unbindable":  unix.MS_UNBINDABLE,
	"runbindable": unix.MS_UNBINDABLE | unix.MS_REC,
}

// parseMountOptions splits options into mount flags, propagation changes
// (applied by separate mount calls) and filesystem data.
func parseMountOptions(opts []string) (flags uintptr, prop []uintptr, data string) {
	var d []string
	for _, o := range opts {
		if f, ok := mountFlags[o]; ok {
			if f.clear {
				flags &^= f.flag
			} else {
				flags |= f.flag
			}
			continue
		}
		if p, ok := propagationFlags[o]; ok {
			prop = append(prop, p)
			continue
		}
		d = append(d, o)
	}
	return flags, prop, strings.Join(d, ",")
}

// secureJoin resolves unsafe under root as if root were "/": ".." stops at
// root and symlinks (absolute ones relative to root) are followed within
// it. Components that do not exist yet are kept as they are.
func secureJoin(root, unsafe string) (string, error) {
	var resolved string // relative to root, always clean, starts with "/"
	rest := unsafe
	links := 0
	for rest != "" {
		var part string
		part, rest, _ = strings.Cut(strings.TrimLeft(rest, "/"), "/")
		switch part {
		case "", ".":
			continue
		case "..":
			resolved = filepath.Dir("/" + resolved)
			if resolved == "/" {
				resolved = ""
			}
			continue
		}
		next := resolved + "/" + part
		fi, err := os.Lstat(filepath.Join(root, next))
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			resolved = next
			continue
		}
		links++
		if links > 255 {
			return "", fmt.Errorf("resolve %s in %s: %w", unsafe, root, unix.ELOOP)
		}
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return "", fmt.Errorf("resolve %s in %s: %w", unsafe, root, err)
		}
		if filepath.IsAbs(target) {
			resolved = ""
		}
		rest = target + "/" + rest
	}
	return filepath.Join(root, "/"+resolved), nil
}

func mount(source, target, fstype string, flags uintptr, data string) error {
	if err := unix.Mount(source, target, fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s on %s (type %q, flags %#x, data %q): %w", source, target, fstype, flags, data, err)
	}
	return nil
}

// rootfsSetup carries state between the passes over the mounts.
type rootfsSetup struct {
	spec     *specs.Spec
	rootfs   string
	bundle   string   // base of relative bind-mount sources
	devTmpfs bool     // /dev is a tmpfs we populate
	devpts   bool     // a devpts is mounted at /dev/pts
	roLater  []string // tmpfs mounts to remount read-only once populated
	// deferred are the mounts that wait for the cgroup: cgroup
	// filesystems (they show the cgroup namespace, made once the init is
	// in its cgroup) and any mount that overlaps one of those, in spec
	// order.
	deferred []specs.Mount
}

// startRootfs and completeRootfs run in the init, in its own mount
// namespace, and leave it chrooted (pivoted) into the container's rootfs.
//
// startRootfs is the part that does not need the init to be in its
// cgroup, so that it runs while the parent makes the cgroup (2-6 ms of
// cgroup v1 directories and writes here, which the init used to wait
// out): every mount but the deferred ones. The mount tree the two build
// is the one spec order would: a mount taken out of order never overlaps
// one it passes.
func startRootfs(spec *specs.Spec, rootfs, bundle string) (*rootfsSetup, error) {
	if bundle == "" {
		bundle = filepath.Dir(rootfs)
	}
	r := &rootfsSetup{spec: spec, rootfs: rootfs, bundle: bundle}
	// Slave, not private, so that host unmounts still propagate in and a
	// busy host mount is not pinned by the container.
	if err := mount("", "/", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return nil, err
	}
	if err := mount(rootfs, rootfs, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return nil, err
	}
	var now []specs.Mount
	now, r.deferred = splitForCgroup(spec.Mounts)
	for _, m := range now {
		if err := r.mountEntry(m); err != nil {
			return nil, err
		}
	}
	if !r.devDeferred() {
		if err := r.populateDev(); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// devDeferred: a deferred mount overlaps /dev, so /dev is populated once
// they are made.
func (r *rootfsSetup) devDeferred() bool { return overlapsAny("/dev", r.deferred) }

// completeRootfs mounts the deferred entries, in the cgroup (and cgroup
// namespace) by now, and pivots into the rootfs.
func (r *rootfsSetup) completeRootfs() error {
	for _, m := range r.deferred {
		if err := r.mountEntry(m); err != nil {
			return err
		}
	}
	if r.devDeferred() {
		if err := r.populateDev(); err != nil {
			return err
		}
	}
	if err := pivotRoot(r.rootfs); err != nil {
		return err
	}
	if p := r.spec.Linux.RootfsPropagation; p != "" {
		flag, ok := propagationFlags[p]
		if !ok {
			return fmt.Errorf("rootfsPropagation %q: %w", p, unix.EINVAL)
		}
		if err := mount("", "/", "", flag, ""); err != nil {
			return err
		}
	}
	return nil
}

// populateDev creates the device nodes and links in a /dev tmpfs.
func (r *rootfsSetup) populateDev() error {
	if r.devTmpfs {
		if err := r.createDevices(); err != nil {
			return err
		}
	}
	return r.devSymlinks()
}

// splitForCgroup splits the spec's mounts into those that can be made
// before the init is in its cgroup and those that wait (deferred), each in
// spec order.
func splitForCgroup(ms []specs.Mount) (now, deferred []specs.Mount) {
	for _, m := range ms {
		if needsCgroup(m) || overlapsAny(m.Destination, deferred) {
			deferred = append(deferred, m)
		} else {
			now = append(now, m)
		}
	}
	return now, deferred
}

// needsCgroup: a cgroup filesystem shows the cgroup namespace of the
// process that mounts it.
func needsCgroup(m specs.Mount) bool { return m.Type == "cgroup" || m.Type == "cgroup2" }

// overlapsAny says whether dest is, contains or is inside the destination
// of one of ms.
func overlapsAny(dest string, ms []specs.Mount) bool {
	d := filepath.Join("/", dest)
	for _, m := range ms {
		o := filepath.Join("/", m.Destination)
		if d == o || strings.HasPrefix(d, o+"/") || strings.HasPrefix(o, d+"/") || d == "/" || o == "/" {
			return true
		}
	}
	return false
}

// finishRootfs runs after pivot_root and after the console is set up
// (which still writes to /dev): read-only remounts, read-only paths, masks.
func (r *rootfsSetup) finish() error {
	for _, p := range r.roLater {
		if err := remountReadonly(p); err != nil {
			return err
		}
	}
	if r.spec.Root != nil && r.spec.Root.Readonly {
		if err := remountReadonly("/"); err != nil {
			return err
		}
	}
	for _, p := range r.spec.Linux.ReadonlyPaths {
		if err := readonlyPath(p); err != nil {
			return err
		}
	}
	for _, p := range r.spec.Linux.MaskedPaths {
		if err := maskPath(p, r.spec.Linux.MountLabel); err != nil {
			return err
		}
	}
	return nil
}

func (r *rootfsSetup) mountEntry(m specs.Mount) error {
	if !filepath.IsAbs(m.Destination) {
		// The spec allows relative destinations (relative to /); treat
		// them so.
		m.Destination = "/" + m.Destination
	}
	dest, err := secureJoin(r.rootfs, m.Destination)
	if err != nil {
		return err
	}
	flags, prop, data := parseMountOptions(m.Options)
	if m.Type == "bind" {
		flags |= unix.MS_BIND
	}
	switch {
	case flags&unix.MS_BIND != 0:
		if err := r.bindMount(m, dest, flags, data); err != nil {
			return err
		}
	case m.Type == "cgroup":
		if err := r.mountCgroupV1(dest, flags); err != nil {
			return err
		}
	default:
		if err := os.MkdirAll(dest, 0o755); err != nil {
			return fmt.Errorf("mount %s: %w", m.Destination, err)
		}
		if m.Type == "tmpfs" && flags&unix.MS_RDONLY != 0 {
			// Mounted writable so /dev can be populated; made
			// read-only in finish.
			flags &^= unix.MS_RDONLY
			r.roLater = append(r.roLater, m.Destination)
		}
		if m.Type == "mqueue" || m.Type == "sysfs" {
			// sysfs refuses a mount from a process that does not own its
			// network namespace, and mqueue one outside its own ipc
			// namespace; a read-only bind of the host's is runc's fallback.
			if err := mount(m.Source, dest, m.Type, flags, data); err != nil {
				host := "/sys"
				if m.Type == "mqueue" {
					host = "/dev/mqueue"
				}
				if berr := mount(host, dest, "", unix.MS_BIND|unix.MS_REC, ""); berr != nil {
					return err
				}
				if err := mount("", dest, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|flags, ""); err != nil {
					return err
				}
			}
		} else if err := mount(m.Source, dest, m.Type, flags, data); err != nil {
			return err
		}
		switch m.Destination {
		case "/dev":
			if m.Type == "tmpfs" {
				r.devTmpfs = true
			}
		case "/dev/pts":
			r.devpts = m.Type == "devpts"
		}
	}
	for _, p := range prop {
		if err := mount("", dest, "", p, ""); err != nil {
			return err
		}
	}
	return nil
}

func (r *rootfsSetup) bindMount(m specs.Mount, dest string, flags uintptr, data string) error {
	src := m.Source
	if !filepath.IsAbs(src) {
		// Relative sources are relative to the bundle, as runc, whose
		// cwd is the bundle, resolves them.
		src = filepath.Join(r.bundle, src)
	}
	fi, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("bind mount %s: %w", m.Destination, err)
	}
	if fi.IsDir() {
		err = os.MkdirAll(dest, 0o755)
	} else {
		err = os.MkdirAll(filepath.Dir(dest), 0o755)
		if err == nil {
			var f *os.File
			f, err = os.OpenFile(dest, os.O_CREATE|os.O_RDONLY, 0o644)
			if err == nil {
				f.Close()
			}
		}
	}
	if err != nil {
		return fmt.Errorf("bind mount %s: create mount point: %w", m.Destination, err)
	}
	if err := mount(src, dest, "", unix.MS_BIND|(flags&unix.MS_REC), data); err != nil {
		return err
	}
	// A bind mount ignores every flag but MS_REC on the first call: the
	// others (ro, nosuid…) take a remount.
	if rest := flags &^ (unix.MS_BIND | unix.MS_REC | unix.MS_REMOUNT); rest != 0 {
		if err := mount("", dest, "", rest|unix.MS_BIND|unix.MS_REMOUNT|lockedFlags(dest, rest), ""); err != nil {
			return err
		}
	}
	return nil
}

// lockedFlags returns the nosuid/nodev/noexec flags dest already has that
// want (the new flags) does not clear explicitly; a bind remount that
// dropped them would widen the mount, and fails in a user namespace.
func lockedFlags(dest string, want uintptr) uintptr {
	var st unix.Statfs_t
	if err := unix.Statfs(dest, &st); err != nil {
		return 0
	}
	var f uintptr
	for _, x := range []struct{ st, ms uintptr }{
		{unix.ST_NOSUID, unix.MS_NOSUID},
		{unix.ST_NODEV, unix.MS_NODEV},
		{unix.ST_NOEXEC, unix.MS_NOEXEC},
	} {
		if uintptr(st.Flags)&x.st != 0 {
			f |= x.ms
		}
	}
	return f
}

// mountCgroupV1 emulates runc's "cgroup" mount on a v1 host: a tmpfs at
// dest with each hierarchy's directory for this process bind-mounted
// read-only under its name, so the container sees its own cgroup as the
// root of each hierarchy. On a v2 host it mounts cgroup2 (inside a cgroup
// namespace that is the container's own group) or binds the group.
func (r *rootfsSetup) mountCgroupV1(dest string, flags uintptr) error {
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return fmt.Errorf("mount cgroup: %w", err)
	}
	own, err := ownCgroups()
	if err != nil {
		return err
	}
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	// In a cgroup namespace /proc/self/cgroup says "/" and a fresh mount
	// of each hierarchy shows exactly the container's subtree; outside one
	// the paths are the host's and a bind of our own directory does it.
	cgroupns := hasNamespace(r.spec.Linux.Namespaces, specs.CgroupNamespace)
	roFlags := uintptr(unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if p, ok := own[""]; ok && len(mounts) == 1 && mounts[0].fstype == "cgroup2" {
		if cgroupns {
			return mount("cgroup2", dest, "cgroup2", flags|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
		}
		src := filepath.Join(mounts[0].point, p)
		if err := mount(src, dest, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return err
		}
		return mount("", dest, "", flags|unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, "")
	}
	if err := mount("tmpfs", dest, "tmpfs", flags&^unix.MS_RDONLY, "mode=755"); err != nil {
		return err
	}
	for _, cm := range mounts {
		if cm.fstype != "cgroup" {
			continue
		}
		name := filepath.Base(cm.point)
		p, ok := own[cm.controllers]
		if !ok {
			continue
		}
		target := filepath.Join(dest, name)
		if err := os.MkdirAll(target, 0o755); err != nil {
			return fmt.Errorf("mount cgroup %s: %w", name, err)
		}
		if cgroupns {
			opts := cm.controllers
			if strings.HasPrefix(opts, "name=") {
				opts = "none," + opts
			}
			if err := mount("cgroup", target, "cgroup", roFlags, opts); err != nil {
				return err
			}
			continue
		}
		src := filepath.Join(cm.point, strings.TrimPrefix(p, cm.root))
		if err := mount(src, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return err
		}
		if err := mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|roFlags, ""); err != nil {
			return err
		}
	}
	if flags&unix.MS_RDONLY != 0 {
		r.roLater = append(r.roLater, strings.TrimPrefix(dest, r.rootfs))
	}
	return nil
}

type cgroupMount struct {
	point, root, fstype, controllers string
}

// cgroupMounts lists this mount namespace's cgroup hierarchies from
// mountinfo, with the controller list as /proc/self/cgroup spells it.
func cgroupMounts() ([]cgroupMount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []cgroupMount
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 || (qf[0] != "cgroup" && qf[0] != "cgroup2") {
			continue
		}
		cm := cgroupMount{point: pf[4], root: pf[3], fstype: qf[0]}
		if qf[0] == "cgroup" {
			var ctl []string
			for _, o := range strings.Split(qf[2], ",") {
				switch {
				case o == "rw" || o == "ro" || o == "relatime" || o == "xattr" || o == "clone_children" || o == "noprefix" || strings.HasPrefix(o, "release_agent="):
				default:
					ctl = append(ctl, o)
				}
			}
			cm.controllers = strings.Join(ctl, ",")
		}
		out = append(out, cm)
	}
	return out, sc.Err()
}

// ownCgroups maps a hierarchy's controller list ("" for v2) to this
// process's path in it.
func ownCgroups() (map[string]string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 {
			out[parts[1]] = parts[2]
		}
	}
	return out, nil
}

// defaultDevices are the nodes every container gets (runc's
// DefaultAutoCreatedDevices).
var defaultDevices = []specs.LinuxDevice{
	{Path: "/dev/null", Type: "c", Major: 1, Minor: 3},
	{Path: "/dev/zero", Type: "c", Major: 1, Minor: 5},
	{Path: "/dev/full", Type: "c", Major: 1, Minor: 7},
	{Path: "/dev/random", Type: "c", Major: 1, Minor: 8},
	{Path: "/dev/urandom", Type: "c", Major: 1, Minor: 9},
	{Path: "/dev/tty", Type: "c", Major: 5, Minor: 0},
}

func (r *rootfsSetup) createDevices() error {
	// The process umask would strip the nodes' modes.
	old := unix.Umask(0)
	defer unix.Umask(old)
	// The spec's own entry for a default device (Docker's list has them
	// all, with owners) replaces it rather than making it twice.
	inSpec := map[string]bool{}
	for _, d := range r.spec.Linux.Devices {
		inSpec[filepath.Clean(d.Path)] = true
	}
	var devs []specs.LinuxDevice
	for _, d := range defaultDevices {
		if !inSpec[filepath.Clean(d.Path)] {
			devs = append(devs, d)
		}
	}
	devs = append(devs, r.spec.Linux.Devices...)
	for _, d := range devs {
		if err := createDevice(r.rootfs, d); err != nil {
			return err
		}
	}
	return nil
}

func createDevice(rootfs string, d specs.LinuxDevice) error {
	dest, err := secureJoin(rootfs, d.Path)
	if err != nil {
		return err
	}
	var typ uint32
	switch d.Type {
	case "c", "u":
		typ = unix.S_IFCHR
	case "b":
		typ = unix.S_IFBLK
	case "p":
		typ = unix.S_IFIFO
	default:
		return fmt.Errorf("device %s: type %q: %w", d.Path, d.Type, unix.EINVAL)
	}
	mode := uint32(0o666)
	if d.FileMode != nil {
		mode = uint32(d.FileMode.Perm())
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return fmt.Errorf("device %s: %w", d.Path, err)
	}
	_ = os.Remove(dest)
	if err := unix.Mknod(dest, typ|mode, int(unix.Mkdev(uint32(d.Major), uint32(d.Minor)))); err != nil {
		return fmt.Errorf("mknod %s: %w", d.Path, err)
	}
	uid, gid := -1, -1
	if d.UID != nil {
		uid = int(*d.UID)
	}
	if d.GID != nil {
		gid = int(*d.GID)
	}
	if uid != -1 || gid != -1 {
		if err := os.Lchown(dest, uid, gid); err != nil {
			return fmt.Errorf("chown %s: %w", d.Path, err)
		}
	}
	return nil
}

func (r *rootfsSetup) devSymlinks() error {
	links := [][2]string{
		{"/proc/self/fd", "/dev/fd"},
		{"/proc/self/fd/0", "/dev/stdin"},
		{"/proc/self/fd/1", "/dev/stdout"},
		{"/proc/self/fd/2", "/dev/stderr"},
	}
	if _, err := os.Stat("/proc/kcore"); err == nil {
		links = append(links, [2]string{"/proc/kcore", "/dev/core"})
	}
	if r.devpts {
		// The devpts instance's own ptmx, so ptys opened in the
		// container are the container's.
		if p, err := secureJoin(r.rootfs, "/dev/ptmx"); err == nil {
			_ = os.Remove(p)
		}
		links = append(links, [2]string{"pts/ptmx", "/dev/ptmx"})
	}
	if !r.devTmpfs && !r.devpts {
		return nil
	}
	for _, l := range links {
		dest, err := secureJoin(r.rootfs, l[1])
		if err != nil {
			return err
		}
		if err := os.Symlink(l[0], dest); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("symlink %s: %w", l[1], err)
		}
	}
	return nil
}

// pivotRoot makes rootfs the root without a temporary directory for the
// old root: pivot_root(".", ".") stacks the old root on top of the new
// one, and unmounting "." after fchdir to the old root peels it off. The
// old root is made a slave first so the lazy unmount does not propagate
// to the host.
func pivotRoot(rootfs string) error {
	oldroot, err := unix.Open("/", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open old root: %w", err)
	}
	defer unix.Close(oldroot)
	newroot, err := unix.Open(rootfs, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open new root %s: %w", rootfs, err)
	}
	defer unix.Close(newroot)
	if err := unix.Fchdir(newroot); err != nil {
		return fmt.Errorf("chdir %s: %w", rootfs, err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root %s: %w", rootfs, err)
	}
	if err := unix.Fchdir(oldroot); err != nil {
		return fmt.Errorf("chdir old root: %w", err)
	}
	if err := mount("", ".", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return err
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("chdir /: %w", err)
	}
	return nil
}

func remountReadonly(p string) error {
	err := unix.Mount("", p, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|lockedFlags(p, 0), "")
	if err != nil {
		return fmt.Errorf("remount %s read-only: %w", p, err)
	}
	return nil
}

func readonlyPath(p string) error {
	if err := unix.Mount(p, p, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("bind %s for read-only: %w", p, err)
	}
	return remountReadonly(p)
}

func maskPath(p, label string) error {
	err := unix.Mount("/dev/null", p, "", unix.MS_BIND, "")
	if errors.Is(err, unix.ENOTDIR) {
		data := ""
		if label != "" {
			data = "context=" + label
		}
		err = unix.Mount("tmpfs", p, "tmpfs", unix.MS_RDONLY, data)
	}
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("mask %s: %w", p, err)
	}
	return nil
}
