package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
)

func richLayer(t testing.TB) []byte {
	withX := file("etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0o644)
	withX.hdr.Uid, withX.hdr.Gid = 3, 4
	withX.hdr.PAXRecords = map[string]string{
		"SCHILY.xattr.user.foo":     "bar",
		"SCHILY.xattr.trusted.test": "t",
	}
	etc := dirEnt("etc/", 0o750)
	etc.hdr.Uid, etc.hdr.Gid = 1, 2
	su := file("bin/su", "#!/bin/sh\n", 0o4755)
	sg := file("bin/sg", "sg", 0o2711)
	tmp := dirEnt("tmp/", 0o1777)
	link := symlink("etc/link", "passwd")
	link.hdr.Uid, link.hdr.Gid = 5, 6
	null := ent{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: t0}}
	loop := ent{hdr: tar.Header{Typeflag: tar.TypeBlock, Name: "dev/loop0", Mode: 0o660, Devmajor: 7, Devminor: 0, Gid: 6, ModTime: t0}}
	fifo := ent{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "run/fifo", Mode: 0o620, ModTime: t0}}
	big := file("usr/lib/big", strings.Repeat("0123456789abcdef", 1<<17), 0o600) // 2 MiB: the fallocate path
	return tarOf(t,
		dirEnt("./", 0o755),
		etc, withX, link, hardlink("etc/hard", "etc/passwd"),
		dirEnt("bin/", 0o755), su, sg, tmp,
		dirEnt("dev/", 0o755), null, loop,
		fifo, // no parent entry: made on the way
		big,
		symlink("abs", "/etc/passwd"), // absolute targets are kept as written
	)
}

func TestApplyKeepsEverything(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	layer := richLayer(t)
	res, err := Apply(context.Background(), dir, bytes.NewReader(layer))
	if err != nil {
		t.Fatal(err)
	}
	if res.DiffID != digest.FromBytes(layer) || res.Size != int64(len(layer)) {
		t.Errorf("result %+v, want %s size %d", res, digest.FromBytes(layer), len(layer))
	}

	check := func(rel string, mode uint32, uid, gid uint32) *unix.Stat_t {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, rel), &st); err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		if st.Mode != mode || st.Uid != uid || st.Gid != gid {
			t.Errorf("%s: mode %o uid %d gid %d, want %o %d %d", rel, st.Mode, st.Uid, st.Gid, mode, uid, gid)
		}
		if rel != "." && rel != "run" && rel != "usr" && rel != "usr/lib" && st.Mtim.Nano() != t0.UnixNano() {
			t.Errorf("%s: mtime %d, want %d", rel, st.Mtim.Nano(), t0.UnixNano())
		}
		return &st
	}
	check("etc", unix.S_IFDIR|0o750, 1, 2) // mtime survives the files written in it
	passwd := check("etc/passwd", unix.S_IFREG|0o644, 3, 4)
	check("etc/link", unix.S_IFLNK|0o777, 5, 6)
	hard := check("etc/hard", unix.S_IFREG|0o644, 3, 4)
	check("bin/su", unix.S_IFREG|0o4755, 0, 0)
	check("bin/sg", unix.S_IFREG|0o2711, 0, 0)
	check("tmp", unix.S_IFDIR|0o1777, 0, 0)
	null := check("dev/null", unix.S_IFCHR|0o666, 0, 0)
	loop := check("dev/loop0", unix.S_IFBLK|0o660, 0, 6)
	check("run/fifo", unix.S_IFIFO|0o620, 0, 0)
	check("run", unix.S_IFDIR|0o755, 0, 0)
	check("usr/lib/big", unix.S_IFREG|0o600, 0, 0)
	check(".", unix.S_IFDIR|0o755, 0, 0)

	if passwd.Ino != hard.Ino || passwd.Nlink != 2 {
		t.Errorf("hard link: inodes %d %d nlink %d", passwd.Ino, hard.Ino, passwd.Nlink)
	}
	if unix.Major(null.Rdev) != 1 || unix.Minor(null.Rdev) != 3 || unix.Major(loop.Rdev) != 7 {
		t.Errorf("devices: null %d:%d loop %d:%d", unix.Major(null.Rdev), unix.Minor(null.Rdev), unix.Major(loop.Rdev), unix.Minor(loop.Rdev))
	}
	if got := mustRead(t, filepath.Join(dir, "etc/passwd")); got != "root:x:0:0::/root:/bin/sh\n" {
		t.Errorf("content %q", got)
	}
	if got := mustRead(t, filepath.Join(dir, "usr/lib/big")); got != strings.Repeat("0123456789abcdef", 1<<17) {
		t.Errorf("big file content differs (len %d)", len(got))
	}
	if got := strings.Join(xattrs(t, filepath.Join(dir, "etc/passwd")), ","); got != "trusted.test=t,user.foo=bar" {
		t.Errorf("xattrs %q", got)
	}
	if l, _ := os.Readlink(filepath.Join(dir, "abs")); l != "/etc/passwd" {
		t.Errorf("abs symlink -> %q", l)
	}
}

func TestApplyCompressed(t *testing.T) {
	requireRoot(t)
	layer := richLayer(t)
	var gz, zs bytes.Buffer
	gw := gzip.NewWriter(&gz)
	gw.Write(layer)
	gw.Close()
	zw, _ := zstd.NewWriter(&zs)
	zw.Write(layer)
	zw.Close()

	var want string
	for _, tc := range []struct {
		name, mediaType string
		blob            []byte
	}{
		{"plain", "", layer},
		{"gzip", "", gz.Bytes()},
		{"zstd", "", zs.Bytes()},
		{"gzip-mediatype", MediaTypeOCILayerGzip, gz.Bytes()},
		{"zstd-mediatype", MediaTypeOCILayerZstd, zs.Bytes()},
		{"docker-mediatype", MediaTypeDockerLayer, layer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var opts []Option
			if tc.mediaType != "" {
				opts = append(opts, WithMediaType(tc.mediaType))
			}
			opts = append(opts, WithExpectedDiffID(digest.FromBytes(layer)))
			res, err := Apply(context.Background(), dir, bytes.NewReader(tc.blob), opts...)
			if err != nil {
				t.Fatal(err)
			}
			if res.Size != int64(len(layer)) {
				t.Errorf("size %d, want %d", res.Size, len(layer))
			}
			got := describe(t, dir)
			if want == "" {
				want = got
			} else if got != want {
				t.Errorf("tree differs from plain apply:\n%s\nwant\n%s", got, want)
			}
		})
	}

	t.Run("mediatype-mismatch", func(t *testing.T) {
		_, err := Apply(context.Background(), t.TempDir(), bytes.NewReader(zs.Bytes()), WithMediaType(MediaTypeOCILayerGzip))
		if !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Fatalf("zstd blob as gzip media type: %v", err)
		}
	})
	t.Run("unsupported", func(t *testing.T) {
		_, err := Decompress(bytes.NewReader([]byte("BZh91AY&SY")))
		if !errors.Is(err, errdefs.ErrNotImplemented) {
			t.Fatalf("bzip2: %v", err)
		}
	})
}

func TestApplyDiffID(t *testing.T) {
	requireRoot(t)
	layer := tarOf(t, file("a", "hello", 0o644))
	// Trailing bytes after the end-of-archive blocks belong to the blob,
	// and so to the diff ID.
	padded := append(append([]byte{}, layer...), make([]byte, 10240)...)

	res, err := Apply(context.Background(), t.TempDir(), bytes.NewReader(padded), WithExpectedDiffID(digest.FromBytes(padded)))
	if err != nil {
		t.Fatal(err)
	}
	if res.Size != int64(len(padded)) {
		t.Errorf("size %d, want %d", res.Size, len(padded))
	}

	wrong := digest.FromString("not this layer")
	_, err = Apply(context.Background(), t.TempDir(), bytes.NewReader(layer), WithExpectedDiffID(wrong))
	if !errors.Is(err, errdefs.ErrDataLoss) {
		t.Fatalf("mismatch: %v, want ErrDataLoss", err)
	}
	if !strings.Contains(err.Error(), wrong.String()) || !strings.Contains(err.Error(), digest.FromBytes(layer).String()) {
		t.Errorf("error does not name both digests: %v", err)
	}

	_, err = Apply(context.Background(), t.TempDir(), bytes.NewReader(layer), WithExpectedDiffID("sha256:nothex"))
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("malformed expected digest: %v", err)
	}
	_, err = Apply(context.Background(), t.TempDir(), bytes.NewReader(layer[:1100]))
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("truncated tar: %v", err)
	}
}

func TestApplyReplaces(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	ctx := context.Background()
	first := tarOf(t,
		dirEnt("d2f/", 0o755), file("d2f/child", "x", 0o644),
		file("f2d", "x", 0o644),
		file("f2l", "x", 0o644),
		dirEnt("merge/", 0o755), file("merge/old", "old", 0o644),
		symlink("l2d", "merge"),
	)
	second := tarOf(t,
		file("d2f", "now a file", 0o600),
		dirEnt("f2d/", 0o711),
		symlink("f2l", "elsewhere"),
		dirEnt("merge/", 0o700), file("merge/new", "new", 0o644),
		dirEnt("l2d/", 0o755),
	)
	for _, l := range [][]byte{first, second} {
		if _, err := Apply(ctx, dir, bytes.NewReader(l)); err != nil {
			t.Fatal(err)
		}
	}
	if got := mustRead(t, filepath.Join(dir, "d2f")); got != "now a file" {
		t.Errorf("d2f = %q", got)
	}
	if fi, err := os.Lstat(filepath.Join(dir, "f2d")); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o711 {
		t.Errorf("f2d: %v %v", fi, err)
	}
	if l, _ := os.Readlink(filepath.Join(dir, "f2l")); l != "elsewhere" {
		t.Errorf("f2l -> %q", l)
	}
	if got := names(t, filepath.Join(dir, "merge")); strings.Join(got, ",") != "new,old" {
		t.Errorf("merge has %v, want new,old", got)
	}
	if fi, err := os.Lstat(filepath.Join(dir, "merge")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("merge dir mode: %v %v", fi, err)
	}
	// A directory over a symlink replaces the symlink, it does not write
	// into the symlink's target.
	if fi, err := os.Lstat(filepath.Join(dir, "l2d")); err != nil || !fi.IsDir() {
		t.Errorf("l2d: %v %v", fi, err)
	}
}

func TestApplyCancelled(t *testing.T) {
	requireRoot(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Apply(ctx, t.TempDir(), bytes.NewReader(tarOf(t, file("a", "x", 0o644))))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
}

func TestApplyCorruptGzip(t *testing.T) {
	requireRoot(t)
	layer := tarOf(t, file("a", strings.Repeat("x", 100000), 0o644), file("b", "y", 0o644))
	var gz bytes.Buffer
	gw := gzip.NewWriter(&gz)
	gw.Write(layer)
	gw.Close()
	blob := gz.Bytes()
	blob[len(blob)/2] ^= 0xff
	if _, err := Apply(context.Background(), t.TempDir(), bytes.NewReader(blob)); err == nil {
		t.Fatal("corrupt gzip applied without error")
	}
}

// TestApplyImplicitDirsIgnoreUmask: directories made on the way are 0755
// whatever the daemon's umask.
func TestApplyImplicitDirsIgnoreUmask(t *testing.T) {
	requireRoot(t)
	old := unix.Umask(0o077)
	defer unix.Umask(old)
	dir := t.TempDir()
	if _, err := Apply(context.Background(), dir, bytes.NewReader(tarOf(t, file("x/y/z", "z", 0o644)))); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"x", "x/y"} {
		if fi, err := os.Stat(filepath.Join(dir, d)); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: %v %v", d, fi.Mode(), err)
		}
	}
}

// TestApplyStopsItsGoroutine: a failed apply leaves no readahead goroutine
// behind, even when it stops early in a long stream.
func TestApplyStopsItsGoroutine(t *testing.T) {
	requireRoot(t)
	ents := []ent{file("..", "refused at once", 0o644)}
	for i := range 200 {
		ents = append(ents, file("f"+strings.Repeat("x", i%50), strings.Repeat("y", 64<<10), 0o644))
	}
	layer := tarOf(t, ents...)
	before := runtime.NumGoroutine()
	for range 20 {
		if _, err := Apply(context.Background(), t.TempDir(), bytes.NewReader(layer)); err == nil {
			t.Fatal("want an error")
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines after, %d before", n, before)
	}
}
