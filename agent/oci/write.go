package oci

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/shim/bundle"
)

// ConfigName is the file name of the spec in a bundle.
const ConfigName = "config.json"

// WriteSpec writes spec as bundleDir/config.json so that a crash at any
// moment leaves either the old file or the new one, never a torn one: the
// JSON goes to a temporary file in the same directory, renamed over
// config.json (not fsynced: a bundle is runtime state that a reboot ends;
// see bundle.WriteFileAtomic). The file is 0600: the environment in it
// often carries secrets.
func WriteSpec(bundleDir string, spec *specs.Spec) (err error) {
	data, err := json.MarshalIndent(spec, "", "\t")
	if err != nil {
		return fmt.Errorf("encode %s: %w", ConfigName, err)
	}
	// In the state dir: atomic, not fsynced (see bundle.WriteFileAtomic).
	return bundle.WriteFileAtomic(filepath.Join(bundleDir, ConfigName), append(data, '\n'), 0o600)
}

// ReadSpec reads bundleDir/config.json.
func ReadSpec(bundleDir string) (*specs.Spec, error) {
	data, err := os.ReadFile(filepath.Join(bundleDir, ConfigName))
	if err != nil {
		return nil, err
	}
	var s specs.Spec
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("decode %s: %w", filepath.Join(bundleDir, ConfigName), err)
	}
	return &s, nil
}
