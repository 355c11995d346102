package detect

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const nvidiaVersion = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.90.07  Fri May 31 09:35:42 UTC 2024\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"

func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for rel, content := range files {
		p := filepath.Join(root, filepath.FromSlash(rel))
		if strings.HasSuffix(rel, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func cpuinfo(flags string) string {
	return "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: " + flags + "\n\nprocessor\t: 1\nflags\t\t: fpu\n"
}

func TestDetect(t *testing.T) {
	yes := func() bool { return true }
	no := func() bool { return false }
	for _, c := range []struct {
		name      string
		files     map[string]string
		inEnclave func() bool
		kind      string
		found     []string
		nvidia    string // "" none, else driver version
		reason    string // a substring of some reason
	}{
		{"nothing", nil, no, KindNone, nil, "", "no hardware TEE found"},
		{"tdx device and configfs", map[string]string{PathTDXGuest: "", PathConfigfsTSM + "/": ""}, no, "tdx", []string{"tdx"}, "", "/dev/tdx_guest present, configfs-tsm available"},
		{"tdx cpu flag only", map[string]string{PathCPUInfo: cpuinfo("fpu tdx_guest x2apic")}, no, "tdx", []string{"tdx"}, "", "CPU flag tdx_guest"},
		{"sev-snp device", map[string]string{PathSEVGuest: ""}, no, "sev-snp", []string{"sev-snp"}, "", "/dev/sev-guest present"},
		{"sev-snp flag", map[string]string{PathCPUInfo: cpuinfo("fpu sev sev_es sev_snp")}, no, "sev-snp", []string{"sev-snp"}, "", "CPU flag sev_snp"},
		{"sev without snp", map[string]string{PathCPUInfo: cpuinfo("fpu sev sev_es")}, no, KindNone, nil, "", "no sev_snp CPU flag"},
		{"sgx device outside enclave", map[string]string{PathSGXEnclave: ""}, no, KindNone, nil, "", "not inside an enclave"},
		{"sgx old device outside enclave", map[string]string{PathSGXEnclaveOld: ""}, no, KindNone, nil, "", "/dev/sgx/enclave present"},
		{"inside EGo enclave", nil, yes, "sgx", []string{"sgx"}, "", "inside an SGX enclave"},
		{"tdx with GPU", map[string]string{PathTDXGuest: "", PathNVIDIAVersion: nvidiaVersion, PathNVIDIADevice: ""}, no, "tdx", []string{"tdx"}, "550.90.07", "kernel module 550.90.07, /dev/nvidia0 present"},
		{"nvml library only", map[string]string{"usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1": ""}, no, KindNone, nil, "version unknown", "libnvidia-ml.so.1"},
		{"several", map[string]string{PathTDXGuest: "", PathSEVGuest: ""}, no, "tdx", []string{"tdx", "sev-snp"}, "", "several TEEs found (tdx, sev-snp): using tdx"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := Detect(context.Background(), Options{Root: tree(t, c.files), InEnclave: c.inEnclave})
			if r.Kind != c.kind || !slices.Equal(r.Found, c.found) {
				t.Fatalf("kind %q found %v, want %q %v\n%s", r.Kind, r.Found, c.kind, c.found, strings.Join(r.Reasons, "\n"))
			}
			wantNV := c.nvidia != ""
			if r.NVIDIADriver != wantNV || (wantNV && c.nvidia != "version unknown" && r.NVIDIADriverVersion != c.nvidia) {
				t.Fatalf("nvidia %v %q, want %q", r.NVIDIADriver, r.NVIDIADriverVersion, c.nvidia)
			}
			if !strings.Contains(strings.Join(r.Reasons, "\n"), c.reason) {
				t.Fatalf("no reason with %q in:\n%s", c.reason, strings.Join(r.Reasons, "\n"))
			}
			// One line per check at least: configfs, sgx, tdx, sev-snp, nvidia.
			if len(r.Reasons) < 5 {
				t.Fatalf("reasons %v", r.Reasons)
			}
		})
	}
}

func TestDriverVersion(t *testing.T) {
	for in, want := range map[string]string{
		nvidiaVersion: "550.90.07",
		"NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.10  Release Build": "570.86.10",
		"garbage":       "",
		"Kernel Module": "",
		"":              "",
	} {
		if got := driverVersion([]byte(in)); got != want {
			t.Errorf("driverVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestDetectHere runs on the real machine: it must not fail, must name a
// kind and explain itself. On a machine without a TEE the kind is "none".
func TestDetectHere(t *testing.T) {
	r := Detect(context.Background(), Options{})
	if r.Kind == "" || len(r.Reasons) == 0 {
		t.Fatalf("result %+v", r)
	}
	t.Logf("kind %s, nvidia %v\n%s", r.Kind, r.NVIDIADriver, strings.Join(r.Reasons, "\n"))
}

func FuzzDriverVersion(f *testing.F) {
	f.Add([]byte(nvidiaVersion))
	f.Add([]byte("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.10  Release Build"))
	f.Fuzz(func(t *testing.T, b []byte) {
		v := driverVersion(b)
		if strings.Trim(v, "0123456789.") != "" {
			t.Fatalf("version %q", v)
		}
	})
}

func BenchmarkDetect(b *testing.B) {
	root := b.TempDir()
	opts := Options{Root: root, InEnclave: func() bool { return false }}
	b.ReportAllocs()
	for b.Loop() {
		Detect(context.Background(), opts)
	}
}
