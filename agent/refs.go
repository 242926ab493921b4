package agent

import (
	"fmt"

	"github.com/distribution/reference"

	"github.com/berth-dev/berth/errdefs"
)

// normalizeRef turns what a user types ("busybox", "127.0.0.1:5000/app:v1",
// "alpine@sha256:…") into the normalised name images are stored under
// ("docker.io/library/busybox:latest"), as Docker does.
func normalizeRef(field, s string) (string, error) {
	if s == "" {
		return "", fmt.Errorf("%s must not be empty: %w", field, errdefs.ErrInvalidArgument)
	}
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return "", fmt.Errorf("%s %q is not a valid image reference: %v: %w", field, s, err, errdefs.ErrInvalidArgument)
	}
	return reference.TagNameOnly(named).String(), nil
}

// familiarRef is the short form Docker shows: "busybox:latest".
func familiarRef(name string) string {
	named, err := reference.ParseNormalizedNamed(name)
	if err != nil {
		return name
	}
	return reference.FamiliarString(named)
}
