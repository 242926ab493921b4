package oci

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// ConfigName is the file name of the spec in a bundle.
const ConfigName = "config.json"

// WriteSpec writes spec as bundleDir/config.json so that a crash at any
// moment leaves either the old file or the new one, never a torn one: the
// JSON goes to a temporary file in the same directory, is fsynced, renamed
// over config.json, and the directory is fsynced so the rename itself
// survives power loss. The file is 0600: the environment in it often
// carries secrets.
func WriteSpec(bundleDir string, spec *specs.Spec) (err error) {
	data, err := json.MarshalIndent(spec, "", "\t")
	if err != nil {
		return fmt.Errorf("encode %s: %w", ConfigName, err)
	}
	return writeFileAtomic(filepath.Join(bundleDir, ConfigName), append(data, '\n'), 0o600)
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

func writeFileAtomic(name string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(name)
	f, err := os.CreateTemp(dir, "."+filepath.Base(name)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync: %w", name, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err = os.Rename(tmp, name); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("write %s: open dir for fsync: %w", name, err)
	}
	defer d.Close()
	if err = d.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync dir: %w", name, err)
	}
	return nil
}
