package metadata

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/metadata/namespaces"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

func openTemp(t *testing.T) (*DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "meta.db")
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, path
}

func hexID(n int) string { return strings.Repeat(strconv.Itoa(n%10), 64) }

func TestNamespaceLifecycle(t *testing.T) {
	db, _ := openTemp(t)
	ctx := context.Background()
	ns := db.Namespaces()
	if _, err := ns.Create(ctx, "team-a", map[string]string{"owner": "a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ns.Create(ctx, "team-a", nil); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("duplicate create: %v, want AlreadyExists", err)
	}
	for _, bad := range []string{"", "a/b", "..", strings.Repeat("x", 200)} {
		if _, err := ns.Create(ctx, bad, nil); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "namespace") {
			t.Errorf("create %q: %v, want InvalidArgument naming the namespace", bad, err)
		}
	}
	got, err := ns.Get(ctx, "team-a")
	if err != nil || got.Labels["owner"] != "a" || got.CreatedAt == nil {
		t.Fatalf("get: %v %v", got, err)
	}
	if _, err := ns.Get(ctx, "nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("get unknown: %v", err)
	}
	// A namespace holding a container cannot be deleted.
	nctx := namespaces.WithNamespace(ctx, "team-a")
	if _, err := db.Containers().Create(nctx, &berthv1.Container{Id: hexID(1), Name: "web"}); err != nil {
		t.Fatal(err)
	}
	if err := ns.Delete(ctx, "team-a"); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "1 containers") {
		t.Fatalf("delete non-empty: %v", err)
	}
	if err := db.Containers().Delete(nctx, hexID(1)); err != nil {
		t.Fatal(err)
	}
	if err := ns.Delete(ctx, "team-a"); err != nil {
		t.Fatalf("delete empty: %v", err)
	}
	if _, err := ns.Get(ctx, "team-a"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
}

func TestUnknownNamespaceIsNotFoundButDefaultIsImplicit(t *testing.T) {
	db, _ := openTemp(t)
	ctx := context.Background()
	c := &berthv1.Container{Id: hexID(2), Name: "x"}
	if _, err := db.Containers().Create(namespaces.WithNamespace(ctx, "ghost"), c); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), `"ghost"`) {
		t.Fatalf("create in unknown namespace: %v", err)
	}
	if _, err := db.Containers().List(namespaces.WithNamespace(ctx, "ghost"), nil); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("list in unknown namespace: %v", err)
	}
	if list, err := db.Containers().List(ctx, nil); err != nil || len(list) != 0 {
		t.Fatalf("list default before use: %v %v", list, err)
	}
	if _, err := db.Containers().Create(ctx, c); err != nil {
		t.Fatalf("create in default: %v", err)
	}
	if _, err := db.Namespaces().Get(ctx, namespaces.Default); err != nil {
		t.Fatalf("default namespace not created on first use: %v", err)
	}
}

func TestContainerNamesAndPrefixes(t *testing.T) {
	db, _ := openTemp(t)
	ctx := context.Background()
	cs := db.Containers()
	a := &berthv1.Container{Id: "abc1" + strings.Repeat("0", 60), Name: "alpha", Labels: map[string]string{"k": "v"}}
	b := &berthv1.Container{Id: "abc2" + strings.Repeat("0", 60), Name: "beta"}
	for _, c := range []*berthv1.Container{a, b} {
		if _, err := cs.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	dup := &berthv1.Container{Id: hexID(3), Name: "alpha"}
	if _, err := cs.Create(ctx, dup); !errors.Is(err, errdefs.ErrAlreadyExists) || !strings.Contains(err.Error(), `"alpha" is already in use`) {
		t.Fatalf("duplicate name: %v", err)
	}
	if _, err := cs.Create(ctx, &berthv1.Container{Id: a.Id, Name: "other"}); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("duplicate id: %v", err)
	}
	for ref, want := range map[string]string{a.Id: a.Id, "alpha": a.Id, "abc2": b.Id, "beta": b.Id} {
		got, err := cs.Resolve(ctx, ref)
		if err != nil || got.Id != want {
			t.Errorf("resolve %q = %v, %v; want %s", ref, got, err, want)
		}
	}
	_, err := cs.Resolve(ctx, "abc")
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "abc100000000") || !strings.Contains(err.Error(), "abc200000000") {
		t.Fatalf("ambiguous prefix: %v", err)
	}
	if _, err := cs.Resolve(ctx, "zzz"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("unknown: %v", err)
	}
	// Rename frees the old name.
	if _, err := cs.Update(ctx, &berthv1.Container{Id: a.Id, Name: "gamma"}, "name"); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.Update(ctx, &berthv1.Container{Id: b.Id, Name: "gamma"}, "name"); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("rename onto a used name: %v", err)
	}
	if _, err := cs.Create(ctx, &berthv1.Container{Id: hexID(4), Name: "alpha"}); err != nil {
		t.Fatalf("old name not freed by rename: %v", err)
	}
	if _, err := cs.Update(ctx, &berthv1.Container{Id: a.Id}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("update without mask: %v", err)
	}
	if _, err := cs.Update(ctx, &berthv1.Container{Id: a.Id}, "created_at"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("update of a read-only field: %v", err)
	}
	// Deleting frees the name.
	if err := cs.Delete(ctx, b.Id); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.Create(ctx, &berthv1.Container{Id: hexID(5), Name: "beta"}); err != nil {
		t.Fatalf("name not freed by delete: %v", err)
	}
	if err := cs.Delete(ctx, b.Id); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

func TestInvalidContainerIDs(t *testing.T) {
	db, _ := openTemp(t)
	ctx := context.Background()
	for _, id := range []string{"", "a/b", "..", "../../etc", strings.Repeat("a", 129)} {
		_, err := db.Containers().Create(ctx, &berthv1.Container{Id: id, Name: "n"})
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "container id") {
			t.Errorf("create id %q: %v", id, err)
		}
		if _, err := db.Containers().Get(ctx, id); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("get id %q: %v", id, err)
		}
	}
}

func TestImages(t *testing.T) {
	db, _ := openTemp(t)
	ctx := context.Background()
	is := db.Images()
	img := &berthv1.Image{Name: "docker.io/library/busybox:latest", Target: &berthv1.Descriptor{Digest: "sha256:" + hexID(1)}}
	if _, err := is.Create(ctx, img); err != nil {
		t.Fatal(err)
	}
	if _, err := is.Create(ctx, img); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("dup: %v", err)
	}
	for _, bad := range []string{"busybox", "docker.io/library/BusyBox:latest", "", "a/../b"} {
		if _, err := is.Create(ctx, &berthv1.Image{Name: bad, Target: img.Target}); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("create %q: %v", bad, err)
		}
	}
	img.Target.Digest = "sha256:" + hexID(2)
	up, err := is.Update(ctx, img)
	if err != nil || up.Target.Digest != img.Target.Digest || !up.CreatedAt.AsTime().Equal(up.CreatedAt.AsTime()) {
		t.Fatalf("update: %v %v", up, err)
	}
	list, err := is.List(ctx, nil)
	if err != nil || len(list) != 1 || list[0].Target.Digest != img.Target.Digest {
		t.Fatalf("list: %v %v", list, err)
	}
	if err := is.Delete(ctx, img.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := is.Get(ctx, img.Name); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
}

func TestRecordsSurviveReopen(t *testing.T) {
	db, path := openTemp(t)
	ctx := context.Background()
	if _, err := db.Namespaces().Create(ctx, "keep", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Containers().Create(namespaces.WithNamespace(ctx, "keep"), &berthv1.Container{Id: hexID(7), Name: "kept"}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	c, err := db2.Containers().Resolve(namespaces.WithNamespace(ctx, "keep"), "kept")
	if err != nil || c.Id != hexID(7) {
		t.Fatalf("after reopen: %v %v", c, err)
	}
}

func TestCorruptDatabaseIsRefusedAndLeftUntouched(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "meta.db")
	garbage := bytes.Repeat([]byte("not a bolt database\n"), 1000)
	if err := os.WriteFile(path, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(path)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
		t.Fatalf("open corrupt: %v, want ErrCorrupt naming %s", err, path)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(after, garbage) {
		t.Fatal("corrupt database was modified")
	}
	// A directory where the file should be is refused too.
	if _, err := Open(dir); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open a directory: %v", err)
	}
}

func TestLockedDatabaseIsReported(t *testing.T) {
	_, path := openTemp(t)
	if _, err := Open(path); !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("second open of a database in use: %v", err)
	}
}

func TestNewerSchemaIsRefusedAndMigrationsRun(t *testing.T) {
	fresh := func(t *testing.T) string {
		p := filepath.Join(t.TempDir(), "meta.db")
		d, err := Open(p)
		if err != nil {
			t.Fatal(err)
		}
		d.Close()
		return p
	}
	t.Run("newer", func(t *testing.T) {
		p := fresh(t)
		// Rewrite the version as a future berthd would.
		b, err := bolt.Open(p, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = b.Update(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Put(keySchemaVersion, []byte(strconv.Itoa(SchemaVersion+1)))
		})
		b.Close()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Open(p); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "newer") {
			t.Fatalf("open newer schema: %v", err)
		}
	})
	t.Run("migrate", func(t *testing.T) {
		p := fresh(t)
		ran := 0
		old := migrations
		migrations = []migration{{to: SchemaVersion + 1, fn: func(tx *bolt.Tx) error { ran++; return nil }}}
		defer func() { migrations = old }()
		d, err := Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		v, _ := d.SchemaVersion()
		if ran != 1 || v != SchemaVersion+1 {
			t.Fatalf("migration ran %d times, version %d", ran, v)
		}
	})
}
