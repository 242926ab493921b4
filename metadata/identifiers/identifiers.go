// Package identifiers validates the names and IDs that become bbolt keys
// or path components: container IDs and names, namespace names, exec IDs,
// snapshot keys of containers.
//
// The rule is deliberately narrow, so that an identifier is safe as a path
// component without further escaping: 1 to MaxLength characters, letters
// and digits, with single '.', '_' or '-' between them. That excludes "",
// ".", "..", anything with "/", NUL or white space, and leading or trailing
// separators.
package identifiers

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/berth-dev/berth/errdefs"
)

// MaxLength bounds an identifier; a 64-hex ID fits with room to spare.
const MaxLength = 128

// valid reports whether id matches ^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$.
// A loop rather than a regexp: every berthctl, shim and container init
// links this package, and compiling the regexp at start-up cost them
// about half a millisecond each (identifiers_test checks the two agree).
func valid(id string) bool {
	sep := true // at the start, as after a separator: a letter or digit must come
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
			sep = false
		case c == '.' || c == '_' || c == '-':
			if sep {
				return false
			}
			sep = true
		default:
			return false
		}
	}
	return !sep
}

// Validate checks id and returns an error wrapping errdefs.ErrInvalidArgument
// that names the field (e.g. "container id") and says what is allowed.
func Validate(field, id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%s must not be empty: %w", field, errdefs.ErrInvalidArgument)
	case len(id) > MaxLength:
		return fmt.Errorf("%s %.20q... is %d characters long, more than the %d allowed: %w",
			field, id, len(id), MaxLength, errdefs.ErrInvalidArgument)
	case !valid(id):
		return fmt.Errorf("%s %q is invalid: use letters, digits and single '.', '_' or '-' between them (no '/', no '..'): %w",
			field, id, errdefs.ErrInvalidArgument)
	}
	return nil
}

// ContainerDirs lists the <namespace>/<container id> directories under
// dir (bundles, log dirs), skipping names that are not a valid namespace
// or ID: whatever else is there is not berthd's to act on.
func ContainerDirs(dir string) (nsIDs [][2]string) {
	nsDirs, _ := os.ReadDir(dir)
	for _, nd := range nsDirs {
		if Validate("namespace", nd.Name()) != nil {
			continue
		}
		ids, _ := os.ReadDir(filepath.Join(dir, nd.Name()))
		for _, d := range ids {
			if Validate("container id", d.Name()) == nil {
				nsIDs = append(nsIDs, [2]string{nd.Name(), d.Name()})
			}
		}
	}
	return nsIDs
}
