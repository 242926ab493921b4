package oci

import (
	"os"
	"path/filepath"
	"testing"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

const testPasswd = `root:x:0:0:root:/root:/bin/sh
# a comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
bob:x:1000:1000:Bob:/home/bob:/bin/bash
alice:x:1001:1001::/home/alice:/bin/sh
broken:x:notanumber:1::/:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
`

const testGroup = `root:x:0:
daemon:x:1:
sudo:x:27:bob,alice
users:x:100:bob
bob:x:1000:
alice:x:1001:
staff:x:50:alice
audio:x:29:
nogroup:x:65534:
`

func userRootfs(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/passwd"), testPasswd)
	writeFile(t, filepath.Join(root, "etc/group"), testGroup)
	return root
}

func TestUser(t *testing.T) {
	root := userRootfs(t)
	for _, tc := range []struct {
		name      string
		user      string
		imageUser string
		groupAdd  []string
		uid, gid  uint32
		gids      []uint32
	}{
		{name: "default is root", uid: 0, gid: 0, gids: []uint32{0}},
		{name: "root by name", user: "root", uid: 0, gid: 0, gids: []uint32{0}},
		{name: "name: passwd gid and member groups", user: "bob", uid: 1000, gid: 1000, gids: []uint32{1000, 27, 100}},
		{name: "uid found in passwd acts as the name", user: "1000", uid: 1000, gid: 1000, gids: []uint32{1000, 27, 100}},
		{name: "explicit group: no member groups", user: "bob:staff", uid: 1000, gid: 50, gids: []uint32{50}},
		{name: "explicit numeric group", user: "alice:4000", uid: 1001, gid: 4000, gids: []uint32{4000}},
		{name: "unknown uid is used as is", user: "2000", uid: 2000, gid: 0, gids: []uint32{0}},
		{name: "unknown uid:gid", user: "2000:3000", uid: 2000, gid: 3000, gids: []uint32{3000}},
		{name: "image user applies", imageUser: "nobody", uid: 65534, gid: 65534, gids: []uint32{65534}},
		{name: "--user overrides the image's", user: "daemon", imageUser: "nobody", uid: 1, gid: 1, gids: []uint32{1}},
		{name: "group_add by name and number, no duplicates", user: "bob", groupAdd: []string{"audio", "4242", "sudo"}, uid: 1000, gid: 1000, gids: []uint32{1000, 27, 100, 29, 4242}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := testInput(t, &berthv1.ContainerSpec{User: tc.user, GroupAdd: tc.groupAdd})
			in.Rootfs = root
			in.Image.User = tc.imageUser
			s := generate(t, in)
			u := s.Process.User
			if u.UID != tc.uid || u.GID != tc.gid {
				t.Errorf("uid:gid %d:%d, want %d:%d", u.UID, u.GID, tc.uid, tc.gid)
			}
			equal(t, "additional gids", u.AdditionalGids, tc.gids)
		})
	}
}

func TestUserErrors(t *testing.T) {
	root := userRootfs(t)
	for _, tc := range []struct {
		user     string
		groupAdd []string
		words    []string
	}{
		{user: "foo", words: []string{"unable to find user foo: no matching entries in passwd file"}},
		{user: "bob:nosuchgroup", words: []string{"unable to find group nosuchgroup: no matching entries in group file"}},
		{user: "bob", groupAdd: []string{"video"}, words: []string{"group_add", "video"}},
		{user: "bob:", words: []string{"user", "bob:"}},
		{user: ":staff", words: []string{"user", ":staff"}},
		{user: "-1", words: []string{"uid -1"}},
		{user: "4294967296", words: []string{"out of range"}},
	} {
		t.Run(tc.user, func(t *testing.T) {
			in := testInput(t, &berthv1.ContainerSpec{User: tc.user, GroupAdd: tc.groupAdd})
			in.Rootfs = root
			_, err := Generate(t.Context(), in)
			wantInvalid(t, err, tc.words...)
		})
	}
}

// Without /etc/passwd only numeric ids work, as in Docker.
func TestUserNoPasswd(t *testing.T) {
	in := testInput(t, &berthv1.ContainerSpec{User: "123:456"})
	s := generate(t, in)
	if s.Process.User.UID != 123 || s.Process.User.GID != 456 {
		t.Errorf("user %+v", s.Process.User)
	}
	in.Spec.User = "bob"
	_, err := Generate(t.Context(), in)
	wantInvalid(t, err, "unable to find user bob")
}

// An image's /etc/passwd that links out of the rootfs must be resolved
// inside it: the host's file (here a planted one naming "evil") is never
// read, whether the link is absolute or climbs with "..".
func TestUserSymlinkEscape(t *testing.T) {
	host := t.TempDir()
	writeFile(t, filepath.Join(host, "passwd"), "evil:x:4242:4242::/:/bin/sh\n")
	writeFile(t, filepath.Join(host, "group"), "evilgroup:x:4343:\n")

	for _, target := range []string{
		filepath.Join(host, "passwd"),                 // absolute host path
		"../../../../../../../../" + host + "/passwd", // climbing out
	} {
		t.Run(target, func(t *testing.T) {
			root := t.TempDir()
			if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, filepath.Join(root, "etc/passwd")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Join(host, "group"), filepath.Join(root, "etc/group")); err != nil {
				t.Fatal(err)
			}
			in := testInput(t, &berthv1.ContainerSpec{User: "evil"})
			in.Rootfs = root
			_, err := Generate(t.Context(), in)
			wantInvalid(t, err, "unable to find user evil")

			in.Spec.User = "0:evilgroup"
			_, err = Generate(t.Context(), in)
			wantInvalid(t, err, "unable to find group evilgroup")
		})
	}
}

// A link that stays inside the rootfs is followed there, the way the
// container itself would see it.
func TestUserSymlinkInside(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "usr/lib/passwd"), testPasswd)
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Absolute, so it is only right when resolved against the rootfs.
	if err := os.Symlink("/usr/lib/passwd", filepath.Join(root, "etc/passwd")); err != nil {
		t.Fatal(err)
	}
	in := testInput(t, &berthv1.ContainerSpec{User: "alice"})
	in.Rootfs = root
	s := generate(t, in)
	if s.Process.User.UID != 1001 {
		t.Errorf("uid %d, want alice's 1001", s.Process.User.UID)
	}
}

// A FIFO as /etc/passwd would block the agent on open or read.
func TestUserPasswdNotRegular(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := mkfifo(filepath.Join(root, "etc/passwd")); err != nil {
		t.Skip(err)
	}
	in := testInput(t, &berthv1.ContainerSpec{User: "bob"})
	in.Rootfs = root
	_, err := Generate(t.Context(), in)
	wantInvalid(t, err, "not a regular file")
}

// The fallback for kernels without openat2 resolves the same way.
func TestReadInRootfsCompat(t *testing.T) {
	host := t.TempDir()
	writeFile(t, filepath.Join(host, "passwd"), "evil:x:4242:4242::/:/bin/sh\n")
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "usr/lib/passwd"), testPasswd)
	if err := os.Symlink("/usr/lib/passwd", filepath.Join(root, "inside")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(host, "passwd"), filepath.Join(root, "outside")); err != nil {
		t.Fatal(err)
	}
	if err := mkfifo(filepath.Join(root, "fifo")); err != nil {
		t.Fatal(err)
	}
	r, err := os.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if b, err := readInRootfsCompat(r, "/inside"); err != nil || string(b) != testPasswd {
		t.Errorf("inside: %q, %v", b, err)
	}
	if b, err := readInRootfsCompat(r, "/outside"); err != nil || b != nil {
		t.Errorf("outside: read %q, %v; want nothing", b, err)
	}
	_, err = readInRootfsCompat(r, "/fifo")
	wantInvalid(t, err, "not a regular file")
}
