// Package bundle is the on-disk contract between berthd and a berth-shim:
// where a task's bundle and the shim's socket live, and the records the two
// leave there for each other.
//
// A task's bundle is <state>/tasks/<namespace>/<id>/ and holds:
//
//	config.json     the OCI runtime spec (written by berthd, oci.WriteSpec)
//	rootfs/         the container's root, mounted by berthd from its snapshot
//	bootstrap.json  the shim's Bootstrap (protojson, version 1), written by
//	                berthd from what `berth-shim start` printed
//	exit.json       the init's exit (ExitRecord), written by the shim before
//	                it publishes the exit, so an agent that was away still
//	                learns the real exit code after the shim is gone
//	shim.log        the shim's own stderr (diagnostics)
//
// The shim's socket is <state>/s/<first 16 hex of sha256(ns/id)>.sock:
// hashed because sun_path holds only 108 bytes.
//
// Every record is written to a temporary file and renamed into place, so
// a reader sees the old record or the new one, never half. Not fsynced:
// see WriteFileAtomic.
package bundle

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Names of the files in a bundle.
const (
	ConfigFile    = "config.json"
	RootfsDir     = "rootfs"
	BootstrapFile = "bootstrap.json"
	ExitFile      = "exit.json"
	ShimLogFile   = "shim.log"
)

// Dir is the bundle of task (ns, id) under the state dir. ns and id must
// have been validated (metadata/identifiers) by the caller.
func Dir(state, ns, id string) string {
	return filepath.Join(state, "tasks", ns, id)
}

// SocketPath is where the shim of (ns, id) listens.
func SocketPath(state, ns, id string) string {
	sum := sha256.Sum256([]byte(ns + "/" + id))
	return filepath.Join(state, "s", hex.EncodeToString(sum[:8])+".sock")
}

// ExitRecord is exit.json: how the init ended.
type ExitRecord struct {
	Pid        uint32    `json:"pid"`
	ExitStatus uint32    `json:"exit_status"`
	ExitedAt   time.Time `json:"exited_at"`
	OOMKilled  bool      `json:"oom_killed"`
}

// WriteExit records the init's exit in dir (see WriteFileAtomic for how
// durably).
func WriteExit(dir string, r ExitRecord) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(dir, ExitFile), data, 0o600)
}

// ReadExit reads exit.json from dir; an fs.ErrNotExist error means the
// init has not exited (or exited with the shim before it could write).
func ReadExit(dir string) (ExitRecord, error) {
	var r ExitRecord
	data, err := os.ReadFile(filepath.Join(dir, ExitFile))
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("read %s: %w", filepath.Join(dir, ExitFile), err)
	}
	return r, nil
}

// WriteFileAtomic writes data to name through a temporary file renamed
// over name, so a reader, or a process that crashed while writing, never
// sees half a file.
//
// There is no fsync, on purpose: everything here lives in berthd's state
// directory, runtime state that a reboot ends (tmpfs, /run, by default).
// What a process wrote is in the page cache, where the next berthd or
// shim reads it even if the writer was killed; only a machine crash could
// lose it, and then the shims and containers it describes are gone too,
// and berthd treats a bundle whose records are missing or unreadable as
// a dead task. The fsyncs (file and directory) cost a few milliseconds on
// a disk, at each of the three records of every container start.
func WriteFileAtomic(name string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(name)
	f, err := os.CreateTemp(dir, "."+filepath.Base(name)+".tmp-")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err = os.Rename(f.Name(), name); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}
