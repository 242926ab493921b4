package identifiers

import (
	"errors"
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
