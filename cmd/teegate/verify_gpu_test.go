package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/teegate/teegate/attest/nvidia"
	"github.com/teegate/teegate/enclave/sim/simgpu"
)

const gpuData = "testdata/gpu/"

// Times inside the vectors' validity; see testdata/gpu/README.md.
const (
	nowGPU       = "2025-06-01T00:00:00Z" // device chains 2020..9999, GH100 RIM signers
	nowSwitchRIM = "2026-06-01T00:00:00Z" // the LS10 BIOS RIM signer starts 2026-05-20
)

const (
	nvtrustNonce = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"
	sdkNonce     = "5bb22e377702d4e1e8215a903ba094826b9ac7f731dee1fe8102958bf2840aca"
	// hopperEvidenceNonce is the nonce of hopper_evidence.json.
	hopperEvidenceNonce = "e97b23a1718095a0e9e35edca810768c70a6a5a389b705e753b197912bc11576"
	switchRIM           = gpuData + "switchVBIOSRim_NV_SWITCH_BIOS_5612_0002_890_9610550001.xml"
)

func runGPU(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(append([]string{"verify", "gpu"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

// gpuJSON mirrors what --json prints.
type gpuJSON struct {
	Verified bool   `json:"verified"`
	Roots    string `json:"roots"`
	Devices  []struct {
		Index               int               `json:"index"`
		Arch                string            `json:"arch"`
		DriverVersion       string            `json:"driver_version"`
		VBIOSVersion        string            `json:"vbios_version"`
		SignatureValid      bool              `json:"signature_valid"`
		ChainValid          bool              `json:"chain_valid"`
		NonceMatched        *bool             `json:"nonce_matched"`
		Nonce               string            `json:"nonce"`
		MeasurementsMatched string            `json:"measurements_matched"`
		RIMVersions         []string          `json:"rim_versions"`
		Measurements        map[string]string `json:"measurements"`
		FWID                string            `json:"fwid"`
		Verified            bool              `json:"verified"`
	} `json:"devices"`
}

// reportBytes reads a hex report vector the way the attest/nvidia tests do,
// independently of the command's decoder.
func reportBytes(t testing.TB, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(gpuData + name)
	if err != nil {
		t.Fatal(err)
	}
	b, err := hex.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeTemp(t testing.TB, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// wrapped writes a hex report as NVIDIA's tools sometimes print it: lines
// of 64 digits, CRLF line ends, surrounding blank lines, upper case.
func wrapped(t testing.TB, name string) string {
	t.Helper()
	h := strings.ToUpper(hex.EncodeToString(reportBytes(t, name)))
	var b strings.Builder
	b.WriteString("\n  ")
	for len(h) > 64 {
		b.WriteString(h[:64] + "\r\n")
		h = h[64:]
	}
	b.WriteString(h + "\n\n")
	return writeTemp(t, name, []byte(b.String()))
}

// evidenceJSON merges NVIDIA evidence lists into one file.
func evidenceJSON(t testing.TB, names ...string) string {
	t.Helper()
	var all []json.RawMessage
	for _, n := range names {
		raw, err := os.ReadFile(gpuData + n)
		if err != nil {
			t.Fatal(err)
		}
		var l []json.RawMessage
		if err := json.Unmarshal(raw, &l); err != nil {
			t.Fatal(err)
		}
		all = append(all, l...)
	}
	b, err := json.Marshal(all)
	if err != nil {
		t.Fatal(err)
	}
	return writeTemp(t, "evidence.json", b)
}

// simulatedGPU writes a simulated GPU's report (hex), chain and root, and
// returns the report's bytes too.
// nearEvidence rewrites an NVIDIA evidence list into the object NEAR AI and
// dstack serve ({arch, nonce, evidence_list}), optionally as the JSON
// string NEAR's "nvidia_payload" holds, and returns its path.
func nearEvidence(t testing.TB, name string, asString bool) string {
	t.Helper()
	raw, err := os.ReadFile(gpuData + name)
	if err != nil {
		t.Fatal(err)
	}
	var items []map[string]any
	if err := json.Unmarshal(raw, &items); err != nil {
		t.Fatal(err)
	}
	p := map[string]any{"arch": items[0]["arch"], "nonce": items[0]["nonce"]}
	for _, it := range items {
		delete(it, "arch")
		delete(it, "nonce")
	}
	p["evidence_list"] = items
	b, _ := json.Marshal(p)
	if asString {
		b, _ = json.Marshal(string(b))
	}
	return writeTemp(t, "near.json", b)
}

func simulatedGPU(t testing.TB, nonce [32]byte) (rep []byte, report, chain, root string) {
	t.Helper()
	rc, key, err := simgpu.NewRoot(nil)
	if err != nil {
		t.Fatal(err)
	}
	g, err := simgpu.NewGPU(rc, key)
	if err != nil {
		t.Fatal(err)
	}
	rep, ch, err := g.Report(nonce)
	if err != nil {
		t.Fatal(err)
	}
	return rep, writeTemp(t, "sim.hex", []byte(hex.EncodeToString(rep))),
		writeTemp(t, "sim_chain.pem", ch),
		writeTemp(t, "sim_root.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rc.Raw}))
}

type wantDevice struct {
	arch, driver, vbios string
	report              []byte // the report bytes the fields must match
	nonce               string // expected --nonce; "" means not given
	matched             string
	rims                int
}

func TestVerifyGPUOK(t *testing.T) {
	nvReport, sdkReport, swReport := reportBytes(t, "nvtrust_hopper_report.hex"), reportBytes(t, "sdk_hopper_report.hex"), reportBytes(t, "sdk_switch_report.hex")
	evReport := func(name string) []byte {
		raw, err := os.ReadFile(gpuData + name)
		if err != nil {
			t.Fatal(err)
		}
		evs, err := nvidia.ParseNVIDIAEvidenceJSON(raw)
		if err != nil {
			t.Fatal(err)
		}
		return evs[0].Report
	}
	simNonce := [32]byte{7, 7, 7}
	simBytes, simReport, simChain, simRoot := simulatedGPU(t, simNonce)
	binReport := writeTemp(t, "report.bin", nvReport)

	hop := func(nonce, matched string) wantDevice {
		return wantDevice{arch: "hopper", driver: "550.90.07", vbios: "96.00.9F.00.01", report: nvReport, nonce: nonce, matched: matched}
	}
	sw := wantDevice{arch: "nvswitch", driver: "", vbios: "96.10.55.00.01", report: swReport, matched: nvidia.MeasurementsMatch, rims: 1}
	for _, c := range []struct {
		name  string
		args  func(t *testing.T) []string
		roots string
		want  []wantDevice
	}{
		{"nvtrust H100 report with its nonce", func(*testing.T) []string {
			return []string{"--report", gpuData + "nvtrust_hopper_report.hex", "--chain", gpuData + "nvtrust_hopper_chain.pem", "--nonce", nvtrustNonce, "--now", nowGPU}
		}, "nvidia", []wantDevice{hop(nvtrustNonce, nvidia.MeasurementsNotChecked)}},
		{"nvtrust H100 report wrapped and upper case", func(t *testing.T) []string {
			return []string{"--report", wrapped(t, "nvtrust_hopper_report.hex"), "--chain", gpuData + "nvtrust_hopper_chain.pem", "--now", nowGPU}
		}, "nvidia", []wantDevice{hop("", nvidia.MeasurementsNotChecked)}},
		{"nvtrust H100 report as raw bytes", func(*testing.T) []string {
			return []string{"--report", binReport, "--chain", gpuData + "nvtrust_hopper_chain.pem", "--now", nowGPU}
		}, "nvidia", []wantDevice{hop("", nvidia.MeasurementsNotChecked)}},
		{"SDK H100 report", func(*testing.T) []string {
			return []string{"--report", gpuData + "sdk_hopper_report.hex", "--chain", gpuData + "sdk_hopper_chain.pem", "--nonce", sdkNonce, "--now", nowGPU}
		}, "nvidia", []wantDevice{{arch: "hopper", driver: "580.159.03", vbios: "96.00.74.00.20", report: sdkReport, nonce: sdkNonce, matched: nvidia.MeasurementsNotChecked}}},
		{"NVSwitch report with its BIOS RIM", func(*testing.T) []string {
			return []string{"--report", gpuData + "sdk_switch_report.hex", "--chain", gpuData + "sdk_switch_chain.pem", "--rim", switchRIM, "--now", nowSwitchRIM}
		}, "nvidia", []wantDevice{sw}},
		{"evidence hopper_evidence.json", func(*testing.T) []string {
			return []string{"--nvidia-evidence", gpuData + "hopper_evidence.json", "--nonce", hopperEvidenceNonce, "--now", nowGPU}
		}, "nvidia", []wantDevice{{arch: "hopper", driver: "590.12", vbios: "96.00.A5.00.01", report: evReport("hopper_evidence.json"), nonce: hopperEvidenceNonce, matched: nvidia.MeasurementsNotChecked}}},
		{"evidence hopper_evidence_cert_hold.json", func(*testing.T) []string {
			return []string{"--nvidia-evidence", gpuData + "hopper_evidence_cert_hold.json", "--nonce", nvtrustNonce, "--now", nowGPU}
		}, "nvidia", []wantDevice{{arch: "hopper", driver: "570.86.10", vbios: "96.00.AF.00.01", report: evReport("hopper_evidence_cert_hold.json"), nonce: nvtrustNonce, matched: nvidia.MeasurementsNotChecked}}},
		{"evidence evidence_hopper_590_12.json", func(*testing.T) []string {
			return []string{"--nvidia-evidence", gpuData + "evidence_hopper_590_12.json", "--now", nowGPU}
		}, "nvidia", []wantDevice{{arch: "hopper", driver: "590.12", vbios: "96.00.A5.00.01", report: evReport("evidence_hopper_590_12.json"), matched: nvidia.MeasurementsNotChecked}}},
		{"evidence switch_evidence_ls10.json with its BIOS RIM", func(*testing.T) []string {
			return []string{"--nvidia-evidence", gpuData + "switch_evidence_ls10.json", "--rim", switchRIM, "--now", nowSwitchRIM}
		}, "nvidia", []wantDevice{{arch: "nvswitch", vbios: "96.10.55.00.01", report: evReport("switch_evidence_ls10.json"), matched: nvidia.MeasurementsMatch, rims: 1}}},
		{"evidence list of a GPU and an NVSwitch: the RIM goes to the switch", func(t *testing.T) []string {
			return []string{"--nvidia-evidence", evidenceJSON(t, "hopper_evidence_cert_hold.json", "switch_evidence_ls10.json"), "--rim", switchRIM, "--now", nowSwitchRIM}
		}, "nvidia", []wantDevice{
			{arch: "hopper", driver: "570.86.10", vbios: "96.00.AF.00.01", report: evReport("hopper_evidence_cert_hold.json"), matched: nvidia.MeasurementsNotChecked},
			{arch: "nvswitch", vbios: "96.10.55.00.01", report: evReport("switch_evidence_ls10.json"), matched: nvidia.MeasurementsMatch, rims: 1},
		}},
		{"SDK Blackwell report: FWID from the Blackwell DICE extension", func(*testing.T) []string {
			return []string{"--report", gpuData + "sdk_blackwell_report.hex", "--chain", gpuData + "sdk_blackwell_chain.pem", "--nonce", nvtrustNonce, "--now", nowGPU}
		}, "nvidia", []wantDevice{{arch: "blackwell", driver: "575.32", vbios: "97.00.88.00.0F", report: reportBytes(t, "sdk_blackwell_report.hex"), nonce: nvtrustNonce, matched: nvidia.MeasurementsNotChecked}}},
		{"evidence in NEAR AI / dstack shape {arch, nonce, evidence_list}", func(t *testing.T) []string {
			return []string{"--nvidia-evidence", nearEvidence(t, "hopper_evidence.json", false), "--nonce", hopperEvidenceNonce, "--now", nowGPU}
		}, "nvidia", []wantDevice{{arch: "hopper", driver: "590.12", vbios: "96.00.A5.00.01", report: evReport("hopper_evidence.json"), nonce: hopperEvidenceNonce, matched: nvidia.MeasurementsNotChecked}}},
		{"evidence as NEAR's nvidia_payload string", func(t *testing.T) []string {
			return []string{"--nvidia-evidence", nearEvidence(t, "hopper_evidence.json", true), "--nonce", hopperEvidenceNonce, "--now", nowGPU}
		}, "nvidia", []wantDevice{{arch: "hopper", driver: "590.12", vbios: "96.00.A5.00.01", report: evReport("hopper_evidence.json"), nonce: hopperEvidenceNonce, matched: nvidia.MeasurementsNotChecked}}},
		{"simulated GPU under --roots", func(*testing.T) []string {
			return []string{"--report", simReport, "--chain", simChain, "--roots", simRoot, "--nonce", hex.EncodeToString(simNonce[:]), "--now", nowSwitchRIM}
		}, "custom", []wantDevice{{arch: "simulated", driver: simgpu.DefaultDriverVersion, vbios: simgpu.DefaultVBIOSVersion, report: simBytes, nonce: hex.EncodeToString(simNonce[:]), matched: nvidia.MeasurementsNotChecked}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := c.args(t)
			code, out, errs := runGPU(append(args, "--json")...)
			if code != 0 {
				t.Fatalf("exit %d, stderr %q", code, errs)
			}
			var got gpuJSON
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("output is not JSON: %v\n%s", err, out)
			}
			if !got.Verified || got.Roots != c.roots || len(got.Devices) != len(c.want) {
				t.Fatalf("verified %v roots %q, %d devices; want true %q %d", got.Verified, got.Roots, len(got.Devices), c.roots, len(c.want))
			}
			for i, w := range c.want {
				d := got.Devices[i]
				if d.Index != i || !d.Verified || !d.SignatureValid || !d.ChainValid {
					t.Errorf("device %d: index %d verified %v signature %v chain %v", i, d.Index, d.Verified, d.SignatureValid, d.ChainValid)
				}
				if d.Arch != w.arch || d.DriverVersion != w.driver || d.VBIOSVersion != w.vbios {
					t.Errorf("device %d: arch/driver/vbios %q %q %q, want %q %q %q", i, d.Arch, d.DriverVersion, d.VBIOSVersion, w.arch, w.driver, w.vbios)
				}
				if d.MeasurementsMatched != w.matched || len(d.RIMVersions) != w.rims {
					t.Errorf("device %d: measurements_matched %q with RIMs %v, want %q with %d", i, d.MeasurementsMatched, d.RIMVersions, w.matched, w.rims)
				}
				switch {
				case w.nonce == "" && d.NonceMatched != nil:
					t.Errorf("device %d: nonce_matched %v without --nonce", i, *d.NonceMatched)
				case w.nonce != "" && (d.NonceMatched == nil || !*d.NonceMatched || d.Nonce != w.nonce):
					t.Errorf("device %d: nonce %q matched %v, want %q true", i, d.Nonce, d.NonceMatched, w.nonce)
				}
				checkFieldsMatchReport(t, i, d.Measurements, d.FWID, d.Nonce, w.report)
			}

			// The same without --json: a text summary, exit 0.
			code, out, errs = runGPU(args...)
			if code != 0 || !strings.HasPrefix(out, "OK ") || !strings.Contains(out, "vbios_version:") || !strings.Contains(out, "device 0: "+c.want[0].arch) {
				t.Fatalf("text output (exit %d, stderr %q):\n%s", code, errs, out)
			}
		})
	}
}

// checkFieldsMatchReport compares the printed measurements, FWID and nonce
// with the report's bytes, parsed here with attest/nvidia directly.
func checkFieldsMatchReport(t *testing.T, i int, ms map[string]string, fwid, nonce string, report []byte) {
	t.Helper()
	r, err := nvidia.ParseReport(report)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != len(r.Blocks) {
		t.Errorf("device %d: %d measurements, report has %d", i, len(ms), len(r.Blocks))
	}
	for _, b := range r.Blocks {
		got := ms[strconv.Itoa(int(b.Index))]
		if got != hex.EncodeToString(b.Value) || !lowerHex.MatchString(got) {
			t.Errorf("device %d: measurement %d = %q, report %x", i, b.Index, got, b.Value)
		}
	}
	if fwid != hex.EncodeToString(r.FWID()) || (fwid != "" && !lowerHex.MatchString(fwid)) {
		t.Errorf("device %d: fwid %q, report %x", i, fwid, r.FWID())
	}
	if n := r.Nonce(); nonce != hex.EncodeToString(n[:]) {
		t.Errorf("device %d: nonce %q, report %x", i, nonce, n)
	}
}

func TestVerifyGPUFailures(t *testing.T) {
	hopper := func(extra ...string) func(*testing.T) []string {
		return func(*testing.T) []string {
			return append([]string{"--report", gpuData + "nvtrust_hopper_report.hex", "--chain", gpuData + "nvtrust_hopper_chain.pem", "--now", nowGPU}, extra...)
		}
	}
	sdkHopper := func(extra ...string) func(*testing.T) []string {
		return func(*testing.T) []string {
			return append([]string{"--report", gpuData + "sdk_hopper_report.hex", "--chain", gpuData + "sdk_hopper_chain.pem", "--now", nowGPU}, extra...)
		}
	}
	wrongNonce := []byte(nvtrustNonce)
	wrongNonce[63] = '0'
	for _, c := range []struct {
		name string
		args func(t *testing.T) []string
		want []string // substrings of the one error line
	}{
		{"NVSwitch sample with an invalid signature", func(*testing.T) []string {
			return []string{"--report", gpuData + "sdk_switch_report_invalid_signature.hex", "--chain", gpuData + "sdk_switch_chain.pem", "--now", nowGPU}
		}, []string{"verify gpu: report signature: "}},
		{"another GPU's chain", func(*testing.T) []string {
			return []string{"--report", gpuData + "nvtrust_hopper_report.hex", "--chain", gpuData + "sdk_hopper_chain.pem", "--now", nowGPU}
		}, []string{"verify gpu: report signature: "}},
		{"chain under an untrusted root", hopper("--roots", gpuData+"nvidia_corim_signing_root_ca.pem"), []string{"verify gpu: certificate chain: ", "unknown authority"}},
		{"chain before its validity", func(*testing.T) []string {
			return []string{"--report", gpuData + "nvtrust_hopper_report.hex", "--chain", gpuData + "nvtrust_hopper_chain.pem", "--now", "2019-01-01T00:00:00Z"}
		}, []string{"verify gpu: certificate chain: ", "validity"}},
		{"simulated GPU without --roots", func(t *testing.T) []string {
			_, rep, chain, _ := simulatedGPU(t, [32]byte{1})
			return []string{"--report", rep, "--chain", chain, "--now", nowGPU}
		}, []string{"verify gpu: certificate chain: "}},
		{"wrong nonce", hopper("--nonce", string(wrongNonce)), []string{"verify gpu: nonce: ", "the report carries " + nvtrustNonce}},
		{"expired RIM", hopper("--rim", gpuData+"NV_GPU_DRIVER_GH100_570.124.03_expired.xml"), []string{"verify gpu: RIM certificate chain: ", "NV_GPU_DRIVER_GH100_570.124.03_expired.xml: ", "validity"}},
		{"RIM with an incorrect signature", hopper("--rim", gpuData+"incorrect_signature_driver_rim.xml"), []string{"verify gpu: RIM signature: ", "incorrect_signature_driver_rim.xml: "}},
		{"RIM with an incorrect chain", hopper("--rim", gpuData+"incorrect_cert_chain_driver_rim.xml"), []string{"verify gpu: RIM certificate chain: ", "incorrect_cert_chain_driver_rim.xml: "}},
		{"RIM under an untrusted RIM root", func(*testing.T) []string {
			return []string{"--report", gpuData + "sdk_switch_report.hex", "--chain", gpuData + "sdk_switch_chain.pem", "--rim", switchRIM, "--rim-roots", gpuData + "incorrect_rim_root.crt", "--now", nowSwitchRIM}
		}, []string{"verify gpu: RIM certificate chain: "}},
		{"RIM signer not yet valid", func(*testing.T) []string {
			return []string{"--report", gpuData + "sdk_switch_report.hex", "--chain", gpuData + "sdk_switch_chain.pem", "--rim", switchRIM, "--now", nowGPU}
		}, []string{"verify gpu: RIM certificate chain: "}},
		{"RIM for another driver", hopper("--rim", gpuData+"NV_GPU_DRIVER_GH100_550.144.03.xml"), []string{"verify gpu: RIM version: ", `"550.144.03"`}},
		{"RIM for no device in the list", func(t *testing.T) []string {
			return []string{"--nvidia-evidence", gpuData + "hopper_evidence.json", "--rim", switchRIM, "--now", nowSwitchRIM}
		}, []string{"verify gpu: RIM version: "}},
		{"VBIOS measurements differ from the signed RIM", sdkHopper("--rim", gpuData+"1010_0205_862_9600740020_PROD.swidtag"), []string{"verify gpu: measurements: ", "[10]"}},
		{"RIM not XML", hopper("--rim", gpuData+"nvtrust_hopper_chain.pem"), []string{"verify gpu: RIM format: "}},
		{"evidence JSON not a list", func(t *testing.T) []string {
			return []string{"--nvidia-evidence", writeTemp(t, "ev.json", []byte(`{"arch":"HOPPER"}`)), "--now", nowGPU}
		}, []string{"verify gpu: evidence format: "}},
		{"evidence JSON arch disagrees with the certificate", func(t *testing.T) []string {
			raw, err := os.ReadFile(gpuData + "hopper_evidence.json")
			if err != nil {
				t.Fatal(err)
			}
			return []string{"--nvidia-evidence", writeTemp(t, "ev.json", bytes.Replace(raw, []byte(`"HOPPER"`), []byte(`"LS10"`), 1)), "--now", nowGPU}
		}, []string{"verify gpu: architecture: device 0 (LS10): "}},
		{"second device of a list fails", func(t *testing.T) []string {
			// The GPU carries this nonce; the NVSwitch another.
			return []string{"--nvidia-evidence", evidenceJSON(t, "hopper_evidence.json", "switch_evidence_ls10.json"), "--nonce", hopperEvidenceNonce, "--now", nowGPU}
		}, []string{"verify gpu: nonce: device 1 (LS10): ", "the report carries " + nvtrustNonce}},
		{"report not hex", func(t *testing.T) []string {
			return []string{"--report", writeTemp(t, "r.hex", []byte("11e001ff9z")), "--chain", gpuData + "nvtrust_hopper_chain.pem"}
		}, []string{"verify gpu: report format: "}},
		{"report with no hex digits", func(t *testing.T) []string {
			return []string{"--report", writeTemp(t, "r.hex", []byte("0x\n")), "--chain", gpuData + "nvtrust_hopper_chain.pem"}
		}, []string{"verify gpu: report format: "}},
		{"report truncated", func(t *testing.T) []string {
			return []string{"--report", writeTemp(t, "r.hex", []byte("11e001ff")), "--chain", gpuData + "nvtrust_hopper_chain.pem", "--now", nowGPU}
		}, []string{"verify gpu: report format: "}},
		{"roots file without a certificate", hopper("--roots", gpuData+"nvtrust_hopper_report.hex"), []string{"verify gpu: roots: "}},
		{"missing report", func(t *testing.T) []string {
			return []string{"--report", filepath.Join(t.TempDir(), "nope.hex"), "--chain", gpuData + "nvtrust_hopper_chain.pem"}
		}, []string{"verify gpu: reading "}},
		{"missing RIM", hopper("--rim", "nope.xml"), []string{"verify gpu: reading nope.xml"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			expectGPUFailure(t, c.args(t), c.want...)
		})
	}
}

func expectGPUFailure(t *testing.T, args []string, want ...string) {
	t.Helper()
	code, out, errs := runGPU(append(args, "--json")...)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stdout %q stderr %q", code, out, errs)
	}
	if out != "" {
		t.Errorf("stdout on failure: %q", out)
	}
	if strings.Count(errs, "\n") != 1 {
		t.Fatalf("stderr %q, want one line", errs)
	}
	for _, w := range want {
		if !strings.Contains(errs, w) {
			t.Errorf("stderr %q, want %q", errs, w)
		}
	}
}

// TestVerifyGPUReportFlips flips one byte of the real H100 report at
// offsets the structure does not depend on (the request nonce, a
// measurement value, the responder nonce region, the signature): each must
// fail naming the report signature. A stride over every byte of the
// NVSwitch report must fail naming the report (signature or format).
func TestVerifyGPUReportFlips(t *testing.T) {
	rep := reportBytes(t, "nvtrust_hopper_report.hex")
	// Request: 37 bytes (nonce at 4); response header 8 bytes; the first
	// block's value after its 4-byte block and 3-byte DMTF headers.
	firstValue := nvidia.RequestLength + 8 + 4 + 3
	for _, off := range []int{4, 4 + 31, firstValue, firstValue + 47, len(rep) - nvidia.SignatureSize, len(rep) - 1} {
		t.Run(strconv.Itoa(off), func(t *testing.T) {
			b := bytes.Clone(rep)
			b[off] ^= 0x01
			p := writeTemp(t, "flipped.hex", []byte(hex.EncodeToString(b)))
			expectGPUFailure(t, []string{"--report", p, "--chain", gpuData + "nvtrust_hopper_chain.pem", "--now", nowGPU}, "verify gpu: report signature: ")
		})
	}

	sw := reportBytes(t, "sdk_switch_report.hex")
	step := 11
	if testing.Short() {
		step = 97
	}
	dir := t.TempDir()
	sig, format := 0, 0
	for off := 0; off < len(sw); off += step {
		b := bytes.Clone(sw)
		b[off] ^= 0x01
		p := filepath.Join(dir, "flipped.hex")
		if err := os.WriteFile(p, []byte(hex.EncodeToString(b)), 0o644); err != nil {
			t.Fatal(err)
		}
		code, _, errs := runGPU("--report", p, "--chain", gpuData+"sdk_switch_chain.pem", "--now", nowGPU)
		switch {
		case code != 1:
			t.Fatalf("flip at %d: exit %d, stderr %q", off, code, errs)
		case strings.Contains(errs, "verify gpu: report signature: "):
			sig++
		case strings.Contains(errs, "verify gpu: report format: "):
			format++
		default:
			t.Fatalf("flip at %d: stderr %q, want the report named", off, errs)
		}
	}
	t.Logf("NVSwitch flips: %d report signature, %d report format", sig, format)
}

func TestVerifyGPUUsage(t *testing.T) {
	rep, chain := gpuData+"nvtrust_hopper_report.hex", gpuData+"nvtrust_hopper_chain.pem"
	for _, args := range [][]string{
		nil,
		{"--chain", chain},
		{"--report", rep},
		{"--report", rep, "--chain", chain, "--nvidia-evidence", gpuData + "hopper_evidence.json"},
		{"--nvidia-evidence", gpuData + "hopper_evidence.json", "--chain", chain},
		{"--report", rep, "--chain", chain, "--nonce", "931d8dd0"},
		{"--report", rep, "--chain", chain, "--nonce", strings.Repeat("zz", 32)},
		{"--report", rep, "--chain", chain, "--now", "yesterday"},
		{"--report", rep, "--chain", chain, "--rim", ""},
		{"--report", rep, "--chain", chain, "--bogus"},
		{"--report", rep, "--chain", chain, "extra"},
	} {
		code, out, errs := runGPU(args...)
		if code != 2 || !strings.Contains(errs, "usage: teegate verify gpu") || out != "" {
			t.Errorf("%v: exit %d stdout %q stderr %q, want 2 with usage", args, code, out, errs)
		}
	}
	if code, _, errs := runGPU("-h"); code != 0 || !strings.Contains(errs, "--nvidia-evidence JSONFILE") {
		t.Errorf("-h: exit %d stderr %q", code, errs)
	}
	// `teegate verify` lists gpu among its subcommands.
	var out, errb bytes.Buffer
	if code := run([]string{"verify"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "gpu") {
		t.Errorf("verify: exit %d stderr %q", code, errb.String())
	}
}

func FuzzDecodeReportFile(f *testing.F) {
	for _, n := range []string{"nvtrust_hopper_report.hex", "sdk_switch_report.hex", "sdk_switch_report_invalid_signature.hex"} {
		raw, err := os.ReadFile(gpuData + n)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
		b, _ := hex.DecodeString(strings.TrimSpace(string(raw)))
		f.Add(b)
	}
	f.Add([]byte(" \n0x11E0\r\n01ff \n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		b, err := decodeReportFile(raw)
		if err != nil {
			return
		}
		// Whatever decodes must be something attest/nvidia can be handed
		// without panicking, and hex text must round-trip.
		_, _ = nvidia.ParseReport(b)
		if t0 := bytes.TrimSpace(raw); len(t0) > 0 && isHexDigit(t0[0]) {
			again, err := decodeReportFile([]byte(hex.EncodeToString(b)))
			if err != nil || !bytes.Equal(again, b) {
				t.Fatalf("hex round trip: %x vs %x (%v)", again, b, err)
			}
		}
	})
}

func BenchmarkVerifyGPUCLI(b *testing.B) {
	args := []string{"verify", "gpu", "--report", gpuData + "sdk_switch_report.hex", "--chain", gpuData + "sdk_switch_chain.pem",
		"--rim", switchRIM, "--now", nowSwitchRIM, "--json"}
	b.ReportAllocs()
	for b.Loop() {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 0 {
			b.Fatalf("exit %d: %s", code, errb.String())
		}
	}
}
