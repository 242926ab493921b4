package oci

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
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
	// Reading passwd only matters for names and for a uid's home group;
	// the files are small and reading both keeps the logic in one place.
	if passwd, err = readPasswd(rootfs); err != nil {
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
		if groups, err = readGroup(rootfs); err != nil {
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

// openInRootfs opens path read-only inside rootfs, resolving every
// symlink as if rootfs were "/" (openat2 RESOLVE_IN_ROOT, or a checked
// walk on older kernels), so an image whose /etc/passwd links to
// /../../etc/shadow reads its own file, or nothing, never the host's. A
// missing file is (nil, nil): images without /etc/passwd are common and
// then only numeric ids work.
func openInRootfs(rootfs, path string) (*os.File, error) {
	h, err := pathrs.OpenInRoot(rootfs, path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
			return nil, nil
		}
		return nil, fmt.Errorf("open %s in rootfs %s: %w", path, rootfs, err)
	}
	defer h.Close()
	// Only a regular file is read: a FIFO or a device planted by an image
	// could block or feed the agent forever.
	var st unix.Stat_t
	if err := unix.Fstat(int(h.Fd()), &st); err != nil {
		return nil, fmt.Errorf("stat %s in rootfs %s: %w", path, rootfs, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%s in rootfs %s is not a regular file: %w", path, rootfs, errdefs.ErrInvalidArgument)
	}
	f, err := pathrs.Reopen(h, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("open %s in rootfs %s: %w", path, rootfs, err)
	}
	return f, nil
}

// readColonFile calls fn with the fields of each non-comment line of a
// passwd-style file inside rootfs.
func readColonFile(rootfs, path string, fn func(fields []string)) error {
	if rootfs == "" {
		return nil
	}
	f, err := openInRootfs(rootfs, path)
	if err != nil || f == nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, maxUserFileSize))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		fn(strings.Split(line, ":"))
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s in rootfs %s: %w", path, rootfs, err)
	}
	return nil
}

func readPasswd(rootfs string) ([]passwdEntry, error) {
	var out []passwdEntry
	err := readColonFile(rootfs, "/etc/passwd", func(f []string) {
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

func readGroup(rootfs string) ([]groupEntry, error) {
	var out []groupEntry
	err := readColonFile(rootfs, "/etc/group", func(f []string) {
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
