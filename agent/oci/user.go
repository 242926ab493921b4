package oci

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
)

// maxID is the largest uid or gid a container may use: the kernel takes
// 32 bits, but -1 means "unchanged" to chown and setresuid, and the
// tools (shadow, moby/sys/user) stop at 2^31-1.
const maxID = math.MaxInt32

// maxUserFileSize bounds how much of a container's /etc/passwd or
// /etc/group is read: an image can put anything there, and a huge file
// must not make the agent allocate without end.
const maxUserFileSize = 16 << 20

type passwdEntry struct {
	name string
	uid  int
	gid  int
}

type groupEntry struct {
	name    string
	gid     int
	members []string
}

// resolvedUser is the identity the container's process runs as.
type resolvedUser struct {
	uid, gid uint32
	// additional holds the primary gid first, then the user's groups from
	// /etc/group, then group_add, without duplicates.
	additional []uint32
}

// resolveUser turns "uid", "uid:gid", "name", "name:group" (and the empty
// string, root) into ids the way Docker does (moby/sys/user
// GetExecUser): names are looked up in the container's /etc/passwd and
// /etc/group; a number is an id even when no entry has it; a user given
// without a group gets its passwd gid and, as supplementary groups, every
// group listing it as a member. groupAdd entries are names or numbers.
func resolveUser(rootfs, spec string, groupAdd []string) (resolvedUser, error) {
	userArg, groupArg, hasGroup := strings.Cut(spec, ":")
	if hasGroup && groupArg == "" {
		return resolvedUser{}, fmt.Errorf("user %q: empty group after ':' (use \"user\" or \"user:group\"): %w", spec, errdefs.ErrInvalidArgument)
	}
	if userArg == "" {
		if hasGroup {
			return resolvedUser{}, fmt.Errorf("user %q: empty user before ':' (use \"user\" or \"user:group\"): %w", spec, errdefs.ErrInvalidArgument)
		}
		userArg = "0"
	}

	var (
		passwd []passwdEntry
		groups []groupEntry
		err    error
	)
	// The rootfs is opened once; both files are resolved against it.
	var root *os.File
	if rootfs != "" {
		if root, err = os.OpenFile(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
			return resolvedUser{}, fmt.Errorf("open rootfs: %w", err)
		}
		defer root.Close()
	}
	if passwd, err = readPasswd(root); err != nil {
		return resolvedUser{}, err
	}
	needGroups := hasGroup || len(groupAdd) > 0
	uidNum, uidErr := strconv.Atoi(userArg)

	var (
		out         resolvedUser
		matchedName string
		found       bool
	)
	for _, p := range passwd {
		if (uidErr == nil && p.uid == uidNum) || (uidErr != nil && p.name == userArg) {
			out.uid, out.gid = uint32(p.uid), uint32(p.gid)
			matchedName, found = p.name, true
			needGroups = true
			break
		}
	}
	if !found {
		if uidErr != nil {
			return resolvedUser{}, fmt.Errorf("user: unable to find user %s: no matching entries in passwd file (add the user to the image's /etc/passwd or give a numeric uid): %w", userArg, errdefs.ErrInvalidArgument)
		}
		if uidNum < 0 || uidNum > maxID {
			return resolvedUser{}, fmt.Errorf("user: uid %d is out of range 0-%d: %w", uidNum, maxID, errdefs.ErrInvalidArgument)
		}
		out.uid = uint32(uidNum)
	}

	if needGroups {
		if groups, err = readGroup(root); err != nil {
			return resolvedUser{}, err
		}
	}
	var sgids []uint32
	if hasGroup {
		gid, err := lookupGroup(groups, groupArg, "user")
		if err != nil {
			return resolvedUser{}, err
		}
		out.gid = gid
	} else if matchedName != "" {
		// Supplementary groups come from /etc/group only when the group
		// is implicit, as in Docker: "user:group" means exactly that group.
		for _, g := range groups {
			if contains(g.members, matchedName) {
				sgids = append(sgids, uint32(g.gid))
			}
		}
	}
	for _, ga := range groupAdd {
		gid, err := lookupGroup(groups, ga, "group_add")
		if err != nil {
			return resolvedUser{}, err
		}
		sgids = append(sgids, gid)
	}

	out.additional = []uint32{out.gid}
	for _, g := range sgids {
		dup := false
		for _, have := range out.additional {
			if have == g {
				dup = true
				break
			}
		}
		if !dup {
			out.additional = append(out.additional, g)
		}
	}
	return out, nil
}

func lookupGroup(groups []groupEntry, arg, field string) (uint32, error) {
	gidNum, gidErr := strconv.Atoi(arg)
	for _, g := range groups {
		if (gidErr == nil && g.gid == gidNum) || (gidErr != nil && g.name == arg) {
			return uint32(g.gid), nil
		}
	}
	if gidErr != nil {
		return 0, fmt.Errorf("%s: unable to find group %s: no matching entries in group file (add it to the image's /etc/group or give a numeric gid): %w", field, arg, errdefs.ErrInvalidArgument)
	}
	if gidNum < 0 || gidNum > maxID {
		return 0, fmt.Errorf("%s: gid %d is out of range 0-%d: %w", field, gidNum, maxID, errdefs.ErrInvalidArgument)
	}
	return uint32(gidNum), nil
}

// resolveInRoot makes openat2 treat the rootfs as "/" for every symlink
// and ".." on the way, and refuses /proc magic links, which could point
// anywhere.
const resolveInRoot = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS

// readInRootfs reads path inside rootfs, resolving every symlink as if
// rootfs were "/", so an image whose /etc/passwd links to
// /../../etc/shadow reads its own file, or nothing, never the host's. A
// missing file is (nil, nil): images without /etc/passwd are common and
// then only numeric ids work. At most maxUserFileSize bytes are read.
//
// It uses openat2(RESOLVE_IN_ROOT) directly: the path is first opened
// O_PATH and checked to be a regular file (a FIFO or a device planted by
// an image could block the agent or wake a driver on open), then opened
// for reading and checked to be the same inode. On kernels before 5.6,
// without openat2, filepath-securejoin's checked walk does the same job
// at several times the cost.
func readInRootfs(root *os.File, path string) ([]byte, error) {
	pfd, err := unix.Openat2(int(root.Fd()), path, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: resolveInRoot})
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.E2BIG) {
		return readInRootfsCompat(root, path)
	}
	if err != nil {
		return nil, notExistIsNil(root, path, err)
	}
	want, err := regularFile(pfd, root, path)
	unix.Close(pfd)
	if err != nil {
		return nil, err
	}
	// O_NONBLOCK: if the file were swapped for a FIFO after the check,
	// open must not hang; the inode check below then refuses it.
	fd, err := unix.Openat2(int(root.Fd()), path, &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOCTTY | unix.O_NONBLOCK, Resolve: resolveInRoot})
	if err != nil {
		return nil, notExistIsNil(root, path, err)
	}
	defer unix.Close(fd)
	var got unix.Stat_t
	if err := unix.Fstat(fd, &got); err != nil || got.Dev != want.Dev || got.Ino != want.Ino {
		return nil, fmt.Errorf("%s in rootfs %s changed while being opened: %w", path, root.Name(), errdefs.ErrAborted)
	}
	// Plain read(2) on the raw fd: wrapping it in an *os.File would
	// register the non-blocking fd with the netpoller for nothing.
	size := min(got.Size+1, maxUserFileSize)
	buf := make([]byte, 0, max(size, 512))
	for len(buf) < maxUserFileSize {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s in rootfs %s: %w", path, root.Name(), err)
		}
		if n == 0 {
			break
		}
		buf = buf[:len(buf)+n]
	}
	return buf[:min(len(buf), maxUserFileSize)], nil
}

func readInRootfsCompat(root *os.File, path string) ([]byte, error) {
	h, err := pathrs.OpenatInRoot(root, path)
	if err != nil {
		return nil, notExistIsNil(root, path, err)
	}
	defer h.Close()
	if _, err := regularFile(int(h.Fd()), root, path); err != nil {
		return nil, err
	}
	f, err := pathrs.Reopen(h, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY)
	if err != nil {
		return nil, fmt.Errorf("open %s in rootfs %s: %w", path, root.Name(), err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxUserFileSize))
	if err != nil {
		return nil, fmt.Errorf("read %s in rootfs %s: %w", path, root.Name(), err)
	}
	return b, nil
}

func notExistIsNil(root *os.File, path string, err error) error {
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
		return nil
	}
	return fmt.Errorf("open %s in rootfs %s: %w", path, root.Name(), err)
}

func regularFile(fd int, root *os.File, path string) (unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return st, fmt.Errorf("stat %s in rootfs %s: %w", path, root.Name(), err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return st, fmt.Errorf("user: %s in rootfs %s is not a regular file: %w", path, root.Name(), errdefs.ErrInvalidArgument)
	}
	return st, nil
}

// readColonFile calls fn with the fields of each non-comment line of a
// passwd-style file inside the rootfs.
func readColonFile(root *os.File, path string, fn func(fields []string)) error {
	if root == nil {
		return nil
	}
	data, err := readInRootfs(root, path)
	if err != nil {
		return err
	}
	for len(data) > 0 {
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		l := strings.TrimSpace(string(line))
		if l == "" || l[0] == '#' {
			continue
		}
		fn(strings.Split(l, ":"))
	}
	return nil
}

func readPasswd(root *os.File) ([]passwdEntry, error) {
	var out []passwdEntry
	err := readColonFile(root, "/etc/passwd", func(f []string) {
		// name:password:uid:gid:gecos:home:shell; lines with bad ids are
		// skipped, as libc and moby/sys/user do.
		if len(f) < 4 {
			return
		}
		uid, err1 := strconv.Atoi(f[2])
		gid, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil || uid < 0 || gid < 0 || uid > maxID || gid > maxID {
			return
		}
		out = append(out, passwdEntry{name: f[0], uid: uid, gid: gid})
	})
	return out, err
}

func readGroup(root *os.File) ([]groupEntry, error) {
	var out []groupEntry
	err := readColonFile(root, "/etc/group", func(f []string) {
		// name:password:gid:member,member
		if len(f) < 3 {
			return
		}
		gid, err := strconv.Atoi(f[2])
		if err != nil || gid < 0 || gid > maxID {
			return
		}
		g := groupEntry{name: f[0], gid: gid}
		if len(f) > 3 && f[3] != "" {
			for _, m := range strings.Split(f[3], ",") {
				if m = strings.TrimSpace(m); m != "" {
					g.members = append(g.members, m)
				}
			}
		}
		out = append(out, g)
	})
	return out, err
}

// ResolveUser resolves a user spec ("uid", "uid:gid", "name",
// "name:group") against the container's /etc/passwd and /etc/group under
// rootfs, as resolveUser does for the init; exec uses it, with the
// container's files as they are now.
func ResolveUser(rootfs, spec string) (specs.User, error) {
	u, err := resolveUser(rootfs, spec, nil)
	if err != nil {
		return specs.User{}, err
	}
	return specs.User{UID: u.uid, GID: u.gid, AdditionalGids: u.additional}, nil
}
