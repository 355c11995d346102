package nvidia

import (
	"crypto/x509"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Verification times inside the validity of the vectors' chains.
var (
	// The GPU device chains run 2020..9999; the older RIM signers
	// (HCC RIM L4 Signer 2023-09..2025-09, 2024-12..2026-12) overlap here.
	timeGPU = time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	// The NVSwitch BIOS RIM's signer starts 2026-05-20.
	timeSwitchRIM = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
)

func readTestdata(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func readHex(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(strings.TrimSpace(string(readTestdata(tb, name))))
	if err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	return b
}

func pool(tb testing.TB, names ...string) *x509.CertPool {
	tb.Helper()
	p := x509.NewCertPool()
	for _, n := range names {
		if !p.AppendCertsFromPEM(readTestdata(tb, n)) {
			tb.Fatalf("%s: no certificate", n)
		}
	}
	return p
}

func deviceRoots(tb testing.TB) *x509.CertPool {
	return pool(tb, "nvidia_device_identity_ca.pem")
}

func rimRoots(tb testing.TB) *x509.CertPool {
	return pool(tb, "nvidia_corim_signing_root_ca.pem")
}

func mustRIM(tb testing.TB, name string) *RIM {
	tb.Helper()
	r, err := ParseRIM(readTestdata(tb, name))
	if err != nil {
		tb.Fatalf("ParseRIM(%s): %v", name, err)
	}
	return r
}

func mustHex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(strings.TrimPrefix(s, "0x"))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// vector is one real report with its chain and the nonce it was asked for.
type vector struct {
	name          string
	report, chain []byte
	nonce         []byte
	arch          string
	driver, vbios string
}

func realVectors(tb testing.TB) []vector {
	tb.Helper()
	vs := []vector{
		{name: "nvtrust hopper", report: readHex(tb, "nvtrust_hopper_report.hex"), chain: readTestdata(tb, "nvtrust_hopper_chain.pem"),
			nonce: mustHex(tb, "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"), arch: ArchHopper, driver: "550.90.07", vbios: "96.00.9F.00.01"},
		{name: "sdk hopper", report: readHex(tb, "sdk_hopper_report.hex"), chain: readTestdata(tb, "sdk_hopper_chain.pem"),
			nonce: mustHex(tb, "5bb22e377702d4e1e8215a903ba094826b9ac7f731dee1fe8102958bf2840aca"), arch: ArchHopper, driver: "580.159.03", vbios: "96.00.74.00.20"},
		{name: "sdk switch", report: readHex(tb, "sdk_switch_report.hex"), chain: readTestdata(tb, "sdk_switch_chain.pem"),
			nonce: mustHex(tb, "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"), arch: ArchNVSwitch, driver: "", vbios: "96.10.55.00.01"},
		{name: "sdk blackwell", report: readHex(tb, "sdk_blackwell_report.hex"), chain: readTestdata(tb, "sdk_blackwell_chain.pem"),
			nonce: mustHex(tb, "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"), arch: ArchBlackwell, driver: "575.32", vbios: "97.00.88.00.0F"},
	}
	for _, j := range []struct{ file, arch, driver, vbios string }{
		{"hopper_evidence.json", ArchHopper, "590.12", "96.00.A5.00.01"},
		{"hopper_evidence_cert_hold.json", ArchHopper, "570.86.10", "96.00.AF.00.01"},
		{"evidence_hopper_590_12.json", ArchHopper, "590.12", "96.00.A5.00.01"},
		{"switch_evidence_ls10.json", ArchNVSwitch, "", "96.10.55.00.01"},
	} {
		evs, err := ParseNVIDIAEvidenceJSON(readTestdata(tb, j.file))
		if err != nil {
			tb.Fatalf("%s: %v", j.file, err)
		}
		for _, e := range evs {
			vs = append(vs, vector{name: j.file, report: e.Report, chain: e.Chain, nonce: e.ClaimedNonce, arch: j.arch, driver: j.driver, vbios: j.vbios})
		}
	}
	return vs
}
