package identifiers

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/berth-dev/berth/errdefs"
)

func TestValidate(t *testing.T) {
	good := []string{"a", "default", "busy-box_1.2", strings.Repeat("f", 64), strings.Repeat("a", MaxLength)}
	for _, id := range good {
		if err := Validate("container id", id); err != nil {
			t.Errorf("Validate(%q) = %v, want nil", id, err)
		}
	}
	bad := []string{"", ".", "..", "../x", "a/b", "/abs", "a..b", ".hidden", "trail-", "sp ace", "nul\x00", "tab\t", strings.Repeat("a", MaxLength+1), "ünïcode"}
	for _, id := range bad {
		err := Validate("container id", id)
		if !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Validate(%q) = %v, want ErrInvalidArgument", id, err)
			continue
		}
		if !strings.Contains(err.Error(), "container id") {
			t.Errorf("Validate(%q) error %q does not name the field", id, err)
		}
	}
}

// The hand-written check is the regexp it replaced, on every string of up
// to four characters over an alphabet that covers each class, and on
// random longer ones.
func TestValidMatchesThePattern(t *testing.T) {
	pattern := regexp.MustCompile(`^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$`)
	alphabet := []byte("aZ9._-/ \x00é")
	var walk func(prefix []byte)
	walk = func(prefix []byte) {
		if got, want := valid(string(prefix)), pattern.MatchString(string(prefix)); got != want {
			t.Fatalf("valid(%q) = %v, the pattern says %v", prefix, got, want)
		}
		if len(prefix) == 4 {
			return
		}
		for _, c := range alphabet {
			walk(append(prefix, c))
		}
	}
	walk(nil)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		b := make([]byte, 5+rng.IntN(40))
		for j := range b {
			b[j] = alphabet[rng.IntN(len(alphabet))]
		}
		if got, want := valid(string(b)), pattern.MatchString(string(b)); got != want {
			t.Fatalf("valid(%q) = %v, the pattern says %v", b, got, want)
		}
	}
}

func TestContainerDirs(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{"default/abc123", "default/def.456", "other-ns/x1", "default/.tmp-x", "bad ns/abc", "default/a..b"} {
		if err := os.MkdirAll(filepath.Join(dir, p), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	got := ContainerDirs(dir)
	want := [][2]string{{"default", "abc123"}, {"default", "def.456"}, {"other-ns", "x1"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ContainerDirs = %v, want %v (invalid names skipped, in directory order)", got, want)
	}
	if got := ContainerDirs(filepath.Join(dir, "missing")); len(got) != 0 {
		t.Errorf("a missing dir: %v, want nothing", got)
	}
}
