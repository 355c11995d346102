package detect

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/teegate/teegate/enclave"
	"github.com/teegate/teegate/enclave/sgx"
)

// KindNone means no hardware TEE was found.
const KindNone = "none"

// Options configure Detect.
type Options struct {
	// Root is the filesystem root the paths are read under; empty means
	// "/". Tests point it at a fake tree.
	Root string
	// InEnclave reports whether the process runs inside an SGX enclave;
	// nil means sgx.InEnclave (false unless built with EGo).
	InEnclave func() bool
}

// Result is what Detect found.
type Result struct {
	// Kind is the chosen CPU TEE: "tdx", "sev-snp", "sgx" or KindNone.
	Kind string
	// Found lists every CPU TEE with evidence of being usable, in the
	// order of preference; Kind is its first element (or KindNone).
	Found []string
	// NVIDIADriver is true when the NVIDIA driver appears to be installed.
	NVIDIADriver bool
	// NVIDIADriverVersion is the kernel module version, when readable.
	NVIDIADriverVersion string
	// Reasons explains each check, one line each.
	Reasons []string
}

// Paths Detect reads, relative to Options.Root (Linux ABI).
const (
	PathConfigfsTSM   = "sys/kernel/config/tsm/report"
	PathTDXGuest      = "dev/tdx_guest"
	PathSEVGuest      = "dev/sev-guest"
	PathSGXEnclave    = "dev/sgx_enclave"
	PathSGXEnclaveOld = "dev/sgx/enclave" // out-of-tree DCAP driver
	PathCPUInfo       = "proc/cpuinfo"
	PathNVIDIAVersion = "proc/driver/nvidia/version"
	PathNVIDIADevice  = "dev/nvidia0"
)

// nvmlLibDirs are where distributions and the NVIDIA container toolkit put
// libnvidia-ml.so.1.
var nvmlLibDirs = []string{
	"usr/lib/x86_64-linux-gnu",
	"usr/lib/aarch64-linux-gnu",
	"usr/lib64",
	"usr/lib",
	"usr/local/nvidia/lib64",
}

// Detect inspects the machine. It does not fail: unreadable paths count as
// absent and say so in the reasons.
func Detect(ctx context.Context, opts Options) Result {
	root := opts.Root
	if root == "" {
		root = "/"
	}
	inEnclave := opts.InEnclave
	if inEnclave == nil {
		inEnclave = sgx.InEnclave
	}
	d := &detector{root: root}
	var r Result
	say := func(format string, args ...any) { r.Reasons = append(r.Reasons, fmt.Sprintf(format, args...)) }

	flags := d.cpuFlags()
	tsm := d.exists(PathConfigfsTSM)
	if tsm {
		say("configfs-tsm: /%s present (quote provider chosen by the TEE below)", PathConfigfsTSM)
	} else {
		say("configfs-tsm: /%s absent", PathConfigfsTSM)
	}

	// SGX first: a process inside an enclave is in SGX whatever the host
	// underneath offers.
	if ctx.Err() == nil && inEnclave() {
		r.Found = append(r.Found, enclave.KindSGX)
		say("sgx: running inside an SGX enclave (EGo)")
	} else {
		dev := d.firstExisting(PathSGXEnclave, PathSGXEnclaveOld)
		switch {
		case dev != "":
			say("sgx: /%s present but this process is not inside an enclave (build with ego-go -tags ego and start with ego run)", dev)
		default:
			say("sgx: no /%s and not inside an enclave", PathSGXEnclave)
		}
	}

	tdxDev := d.exists(PathTDXGuest)
	tdxFlag := slices.Contains(flags, "tdx_guest")
	switch {
	case tdxDev || tdxFlag:
		r.Found = append(r.Found, enclave.KindTDX)
		say("tdx: %s", evidence(tdxDev, "/"+PathTDXGuest, tdxFlag, "CPU flag tdx_guest", tsm))
	default:
		say("tdx: no /%s and no tdx_guest CPU flag", PathTDXGuest)
	}

	snpDev := d.exists(PathSEVGuest)
	snpFlag := slices.Contains(flags, "sev_snp")
	switch {
	case snpDev || snpFlag:
		r.Found = append(r.Found, enclave.KindSEVSNP)
		say("sev-snp: %s", evidence(snpDev, "/"+PathSEVGuest, snpFlag, "CPU flag sev_snp", tsm))
	default:
		say("sev-snp: no /%s and no sev_snp CPU flag", PathSEVGuest)
	}

	r.Kind = KindNone
	if len(r.Found) > 0 {
		r.Kind = r.Found[0]
	}
	if len(r.Found) > 1 {
		say("several TEEs found (%s): using %s", strings.Join(r.Found, ", "), r.Kind)
	}
	if r.Kind == KindNone {
		say("no hardware TEE found: a worker here can only run the simulated TEE")
	}

	d.nvidia(&r, say)
	return r
}

func evidence(dev bool, devName string, flag bool, flagName string, tsm bool) string {
	var parts []string
	if dev {
		parts = append(parts, devName+" present")
	}
	if flag {
		parts = append(parts, flagName)
	}
	if tsm {
		parts = append(parts, "configfs-tsm available")
	}
	return strings.Join(parts, ", ")
}

type detector struct{ root string }

func (d *detector) path(rel string) string { return filepath.Join(d.root, filepath.FromSlash(rel)) }

func (d *detector) exists(rel string) bool {
	_, err := os.Stat(d.path(rel))
	return err == nil
}

func (d *detector) firstExisting(rels ...string) string {
	for _, rel := range rels {
		if d.exists(rel) {
			return rel
		}
	}
	return ""
}

// cpuFlags returns the flags of the first processor in /proc/cpuinfo;
// Linux lists the same flags for every CPU of a guest.
func (d *detector) cpuFlags() []string {
	f, err := os.Open(d.path(PathCPUInfo))
	if err != nil {
		return nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "flags" {
			return strings.Fields(v)
		}
	}
	return nil
}

func (d *detector) nvidia(r *Result, say func(string, ...any)) {
	var signs []string
	if b, err := os.ReadFile(d.path(PathNVIDIAVersion)); err == nil {
		r.NVIDIADriverVersion = driverVersion(b)
		signs = append(signs, "kernel module "+orUnknown(r.NVIDIADriverVersion))
	} else if !errors.Is(err, fs.ErrNotExist) {
		signs = append(signs, fmt.Sprintf("/%s unreadable (%v)", PathNVIDIAVersion, err))
	}
	if d.exists(PathNVIDIADevice) {
		signs = append(signs, "/"+PathNVIDIADevice+" present")
	}
	for _, dir := range nvmlLibDirs {
		rel := dir + "/libnvidia-ml.so.1"
		if d.exists(rel) {
			signs = append(signs, "/"+rel)
			break
		}
	}
	if len(signs) == 0 {
		say("nvidia: no driver (no /%s, /%s or libnvidia-ml.so.1)", PathNVIDIAVersion, PathNVIDIADevice)
		return
	}
	r.NVIDIADriver = true
	say("nvidia: driver present (%s); GPU CC state is read through NVML at start", strings.Join(signs, ", "))
}

// driverVersion picks the version out of /proc/driver/nvidia/version:
// "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.90.07  Fri May ..."
// or "... Open Kernel Module for x86_64  570.86.10  Release Build ...": the
// first dotted number after "Kernel Module".
func driverVersion(b []byte) string {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	_, rest, ok := bytes.Cut(line, []byte("Kernel Module"))
	if !ok {
		return ""
	}
	for _, f := range strings.Fields(string(rest)) {
		if strings.Contains(f, ".") && strings.Trim(f, "0123456789.") == "" {
			return f
		}
	}
	return ""
}

func orUnknown(s string) string {
	if s == "" {
		return "version unknown"
	}
	return s
}
