package container

// Seccomp programs are compiled by the caller of Create (the shim), not by
// the init: compiling Docker's default profile with libseccomp takes about
// 20 ms here, and it used to sit on every container start and every exec.
// The caller compiles while the freshly forked init starts its runtime,
// keeps the result for the container's execs, and caches it on disk under
// Config.SeccompCacheDir, keyed by the profile's digest and the compiler,
// so the next container with the same profile (nearly all of them) loads
// a few KiB instead of compiling. The init receives raw BPF and only loads
// it: it no longer needs libseccomp at all.
//
// A cache file is "berth-seccomp v1\n", the hex SHA-256 of the rest, "\n",
// the filter flags as 8 bytes little endian, then the struct sock_filter
// array. A file that fails any check is ignored and rewritten; the cache
// lives in berthd's state directory (root only), so whoever could write
// it could already run anything.

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unsafe"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// seccompProgram is a compiled filter, ready for seccomp(2).
type seccompProgram struct {
	// Filter is the struct sock_filter array in native byte order.
	Filter []byte  `json:"filter"`
	Flags  uintptr `json:"flags"`
}

const sockFilterSize = int(unsafe.Sizeof(unix.SockFilter{}))

func (p *seccompProgram) validate() error {
	n := len(p.Filter) / sockFilterSize
	if len(p.Filter)%sockFilterSize != 0 || n == 0 || n > 0xffff {
		return fmt.Errorf("seccomp filter of %d bytes: %w", len(p.Filter), unix.EINVAL)
	}
	return nil
}

// load installs the filter on the calling thread.
func (p *seccompProgram) load() error {
	if err := p.validate(); err != nil {
		return err
	}
	prog := make([]unix.SockFilter, len(p.Filter)/sockFilterSize)
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&prog[0])), len(p.Filter)), p.Filter)
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, p.Flags, uintptr(unsafe.Pointer(&fprog)))
	if errno != 0 {
		return fmt.Errorf("load seccomp filter: %w", errno)
	}
	return nil
}

// seccompMemo keeps this process's compiled programs by cache key: a shim
// compiles its container's profile once for the init and all its execs.
var seccompMemo struct {
	sync.Mutex
	m map[string]*seccompProgram
}

const seccompCacheMagic = "berth-seccomp v1\n"

// prepareSeccomp returns the compiled program for the profile raw (the
// seccomp section of a config.json, nil or null for none), from memory,
// from cacheDir (if set) or by compiling it (and then storing it there).
// The cache key is the digest of the compacted bytes: the profile is
// decoded only to be compiled. Compile errors are the profile's fault and
// come back as an *InitError of stage seccomp, as if the init had found
// them.
func prepareSeccomp(raw json.RawMessage, cacheDir string) (*seccompProgram, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	key := ""
	if id := seccompCompilerID(); id != "" {
		var b bytes.Buffer
		b.WriteString(id + "\n")
		if err := json.Compact(&b, raw); err != nil {
			return nil, newInitError(StageSeccomp, err)
		}
		sum := sha256.Sum256(b.Bytes())
		key = hex.EncodeToString(sum[:])
	}
	if key != "" {
		seccompMemo.Lock()
		p := seccompMemo.m[key]
		seccompMemo.Unlock()
		if p != nil {
			return p, nil
		}
		if cacheDir != "" {
			if p, err := readSeccompCache(filepath.Join(cacheDir, key+".bpf")); err == nil {
				rememberSeccomp(key, p)
				return p, nil
			}
		}
	}
	sc := new(specs.LinuxSeccomp)
	if err := json.Unmarshal(raw, sc); err != nil {
		return nil, newInitError(StageSeccomp, err)
	}
	p, err := compileSeccomp(sc)
	if err != nil {
		var ierr *InitError
		if errors.As(err, &ierr) {
			return nil, err
		}
		return nil, newInitError(StageSeccomp, err)
	}
	if key != "" {
		rememberSeccomp(key, p)
		if cacheDir != "" {
			// Best effort: a cache that cannot be written only costs the
			// next container a compile.
			_ = writeSeccompCache(cacheDir, key+".bpf", p)
		}
	}
	return p, nil
}

func rememberSeccomp(key string, p *seccompProgram) {
	seccompMemo.Lock()
	defer seccompMemo.Unlock()
	if seccompMemo.m == nil {
		seccompMemo.m = map[string]*seccompProgram{}
	}
	seccompMemo.m[key] = p
}

func encodeSeccompCache(p *seccompProgram) []byte {
	body := make([]byte, 8, 8+len(p.Filter))
	binary.LittleEndian.PutUint64(body, uint64(p.Flags))
	body = append(body, p.Filter...)
	sum := sha256.Sum256(body)
	out := make([]byte, 0, len(seccompCacheMagic)+65+len(body))
	out = append(out, seccompCacheMagic...)
	out = append(out, hex.EncodeToString(sum[:])...)
	out = append(out, '\n')
	return append(out, body...)
}

func decodeSeccompCache(data []byte) (*seccompProgram, error) {
	rest, ok := bytes.CutPrefix(data, []byte(seccompCacheMagic))
	if !ok || len(rest) < 65+8 || rest[64] != '\n' {
		return nil, errors.New("not a seccomp cache file")
	}
	body := rest[65:]
	sum := sha256.Sum256(body)
	if hex.EncodeToString(sum[:]) != string(rest[:64]) {
		return nil, errors.New("seccomp cache file corrupt")
	}
	p := &seccompProgram{Flags: uintptr(binary.LittleEndian.Uint64(body)), Filter: append([]byte(nil), body[8:]...)}
	if err := p.validate(); err != nil {
		return nil, err
	}
	return p, nil
}

func readSeccompCache(path string) (*seccompProgram, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return decodeSeccompCache(data)
}

// writeSeccompCache writes through a temp file and a rename, so a reader
// sees a whole file or none. No fsync: a cache entry lost or torn by a
// crash fails its checksum and is compiled again.
func writeSeccompCache(dir, name string, p *seccompProgram) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".tmp-"+name+"-")
	if err != nil {
		return err
	}
	_, err = f.Write(encodeSeccompCache(p))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// PreloadSeccomp reads every cached program under cacheDir into memory: a
// warm shim does it while it waits, so its container's Create finds the
// profile's program without touching the disk.
func PreloadSeccomp(cacheDir string) {
	if cacheDir == "" || seccompCompilerID() == "" {
		return
	}
	ents, err := os.ReadDir(cacheDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		key, ok := strings.CutSuffix(e.Name(), ".bpf")
		if !ok || len(key) != 64 {
			continue
		}
		if p, err := readSeccompCache(filepath.Join(cacheDir, e.Name())); err == nil {
			rememberSeccomp(key, p)
		}
	}
}
