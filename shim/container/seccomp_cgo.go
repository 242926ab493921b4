//go:build cgo

package container

// Seccomp: the spec's profile is compiled to classic BPF with libseccomp
// by Create's caller (see seccomp.go), so a bad profile fails Create, and
// loaded by the init with a raw seccomp(2) after start, as late as
// possible, on its only relevant thread (no TSYNC: the Go runtime's other
// threads die at execve anyway). libseccomp's own no_new_privs default is
// turned off: no_new_privs is the spec's decision.

import (
	"fmt"
	"io"
	"os"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	libseccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"
)

// seccompCompilerID names the compiler for the cache key: another
// libseccomp version may compile the same profile differently.
func seccompCompilerID() string {
	major, minor, micro := libseccomp.GetLibraryVersion()
	api, _ := libseccomp.GetAPI()
	return fmt.Sprintf("libseccomp %d.%d.%d api %d", major, minor, micro, api)
}

func seccompAction(a specs.LinuxSeccompAction, errnoRet *uint) (libseccomp.ScmpAction, error) {
	errno := int16(unix.EPERM)
	if errnoRet != nil {
		errno = int16(*errnoRet)
	}
	switch a {
	case specs.ActKill, specs.ActKillThread:
		return libseccomp.ActKillThread, nil
	case specs.ActKillProcess:
		return libseccomp.ActKillProcess, nil
	case specs.ActTrap:
		return libseccomp.ActTrap, nil
	case specs.ActErrno:
		return libseccomp.ActErrno.SetReturnCode(errno), nil
	case specs.ActTrace:
		return libseccomp.ActTrace.SetReturnCode(errno), nil
	case specs.ActAllow:
		return libseccomp.ActAllow, nil
	case specs.ActLog:
		return libseccomp.ActLog, nil
	}
	return libseccomp.ActInvalid, fmt.Errorf("seccomp action %q: %w", a, unix.EINVAL)
}

var seccompOps = map[specs.LinuxSeccompOperator]libseccomp.ScmpCompareOp{
	specs.OpNotEqual:     libseccomp.CompareNotEqual,
	specs.OpLessThan:     libseccomp.CompareLess,
	specs.OpLessEqual:    libseccomp.CompareLessOrEqual,
	specs.OpEqualTo:      libseccomp.CompareEqual,
	specs.OpGreaterEqual: libseccomp.CompareGreaterEqual,
	specs.OpGreaterThan:  libseccomp.CompareGreater,
	specs.OpMaskedEqual:  libseccomp.CompareMaskedEqual,
}

// compileSeccomp turns the profile into BPF. Syscall names this libseccomp
// does not know are skipped, as runc does, so a profile written for a
// newer kernel still loads.
func compileSeccomp(s *specs.LinuxSeccomp) (*seccompProgram, error) {
	def, err := seccompAction(s.DefaultAction, s.DefaultErrnoRet)
	if err != nil {
		return nil, err
	}
	f, err := libseccomp.NewFilter(def)
	if err != nil {
		return nil, fmt.Errorf("new seccomp filter: %w", err)
	}
	defer f.Release()
	if err := f.SetNoNewPrivsBit(false); err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	for _, a := range s.Architectures {
		name := strings.ToLower(strings.TrimPrefix(string(a), "SCMP_ARCH_"))
		arch, err := libseccomp.GetArchFromString(name)
		if err != nil {
			return nil, fmt.Errorf("seccomp architecture %q: %w", a, unix.EINVAL)
		}
		if err := f.AddArch(arch); err != nil {
			return nil, fmt.Errorf("seccomp add architecture %s: %w", a, err)
		}
	}
	for _, sc := range s.Syscalls {
		act, err := seccompAction(sc.Action, sc.ErrnoRet)
		if err != nil {
			return nil, err
		}
		if act == def {
			continue // libseccomp refuses rules that repeat the default
		}
		for _, name := range sc.Names {
			call, err := libseccomp.GetSyscallFromName(name)
			if err != nil {
				continue
			}
			if err := addSeccompRule(f, call, act, sc.Args); err != nil {
				return nil, fmt.Errorf("seccomp rule for %s: %w", name, err)
			}
		}
	}
	var flags uintptr
	for _, fl := range s.Flags {
		switch fl {
		case specs.LinuxSeccompFlagLog:
			flags |= unix.SECCOMP_FILTER_FLAG_LOG
		case specs.LinuxSeccompFlagSpecAllow:
			flags |= unix.SECCOMP_FILTER_FLAG_SPEC_ALLOW
		default:
			return nil, fmt.Errorf("seccomp flag %q: %w", fl, unix.EINVAL)
		}
	}
	raw, err := exportBPF(f)
	if err != nil {
		return nil, err
	}
	p := &seccompProgram{Filter: raw, Flags: flags}
	if err := p.validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// addSeccompRule follows the OCI meaning of args: conditions on different
// arguments must all hold (one rule), several conditions on the same
// argument are alternatives (one rule each), since libseccomp cannot
// AND two comparisons of one argument.
func addSeccompRule(f *libseccomp.ScmpFilter, call libseccomp.ScmpSyscall, act libseccomp.ScmpAction, args []specs.LinuxSeccompArg) error {
	if len(args) == 0 {
		return f.AddRule(call, act)
	}
	conds := make([]libseccomp.ScmpCondition, 0, len(args))
	seen := map[uint]bool{}
	sameArg := false
	for _, a := range args {
		op, ok := seccompOps[a.Op]
		if !ok {
			return fmt.Errorf("operator %q: %w", a.Op, unix.EINVAL)
		}
		vals := []uint64{a.Value}
		if a.Op == specs.OpMaskedEqual {
			vals = []uint64{a.Value, a.ValueTwo}
		}
		c, err := libseccomp.MakeCondition(a.Index, op, vals...)
		if err != nil {
			return err
		}
		if seen[a.Index] {
			sameArg = true
		}
		seen[a.Index] = true
		conds = append(conds, c)
	}
	if !sameArg {
		return f.AddRuleConditional(call, act, conds)
	}
	for _, c := range conds {
		if err := f.AddRuleConditional(call, act, []libseccomp.ScmpCondition{c}); err != nil {
			return err
		}
	}
	return nil
}

// exportBPF reads the compiled program through a memfd: ExportBPFMem needs
// libseccomp 2.6, newer than Debian 12's 2.5.
func exportBPF(f *libseccomp.ScmpFilter) ([]byte, error) {
	fd, err := unix.MemfdCreate("berth-seccomp", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("export seccomp filter: memfd: %w", err)
	}
	mf := os.NewFile(uintptr(fd), "berth-seccomp")
	defer mf.Close()
	if err := f.ExportBPF(mf); err != nil {
		return nil, fmt.Errorf("export seccomp filter: %w", err)
	}
	if _, err := mf.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("export seccomp filter: %w", err)
	}
	raw, err := io.ReadAll(mf)
	if err != nil {
		return nil, fmt.Errorf("export seccomp filter: %w", err)
	}
	return raw, nil
}
