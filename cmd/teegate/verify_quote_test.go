package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const quotes = "testdata/quotes/"

// Times inside each vector's validity (collateral windows, PCK and VCEK
// certificates); see testdata/quotes/README.md.
const (
	nowTDXv4 = "2025-06-20T00:00:00Z" // tdx_quote_v4_collateral.json: 2025-06-19..2025-07-19
	nowTDXv5 = "2026-02-20T00:00:00Z" // tdx_quote_v5_outdated_collateral.json: 2026-02-18..2026-03-20
	nowSGX   = "2025-06-20T00:00:00Z" // sgx_quote_v3_collateral.json: 2025-06-19..2025-07-19
	nowOE    = "2026-01-01T00:00:00Z"
	nowSNP   = "2026-11-27T00:00:00Z" // VCEK valid 2022-09-24..2029-09-24
)

var lowerHex = regexp.MustCompile(`^[0-9a-f]+$`)

// flipped writes a copy of a vector with one byte changed at off.
func flipped(t *testing.T, name string, off int) string {
	t.Helper()
	b, err := os.ReadFile(quotes + name)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x01
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// oeWrapped writes the Open Enclave quote inside the 16-byte OE remote
// report header, as EGo's GetRemoteReport returns it.
func oeWrapped(t *testing.T) string {
	t.Helper()
	q, err := os.ReadFile(quotes + "oe_sgx_quote_v3.bin")
	if err != nil {
		t.Fatal(err)
	}
	b := binary.LittleEndian.AppendUint32(nil, 1)
	b = binary.LittleEndian.AppendUint32(b, 2)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(q)))
	p := filepath.Join(t.TempDir(), "oe_report.bin")
	if err := os.WriteFile(p, append(b, q...), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(append([]string{"verify", "quote"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func TestVerifyQuoteOK(t *testing.T) {
	for _, c := range []struct {
		name    string
		args    []string
		hex     []string // fields that must be lowercase hex
		want    map[string]any
		noField []string
	}{
		{
			name: "tdx v4 with collateral",
			args: []string{"--tdx", quotes + "tdx_quote_v4.bin", "--collateral", quotes + "tdx_quote_v4_collateral.json", "--now", nowTDXv4},
			hex:  []string{"mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrseam", "td_attributes", "tee_tcb_svn", "report_data"},
			want: map[string]any{"tee": "tdx", "quote_version": 4.0, "debug": false, "td_attributes": "0000001000000000", "fmspc": "b0c06f000000"},
		},
		{
			name:    "tdx v4 production quote without collateral",
			args:    []string{"--tdx", quotes + "tdx_prod_quote_SPR_E4.dat", "--now", nowTDXv4},
			hex:     []string{"mrtd", "rtmr0", "rtmr3", "mrseam", "td_attributes", "tee_tcb_svn", "report_data"},
			want:    map[string]any{"tee": "tdx", "quote_version": 4.0},
			noField: []string{"tcb_status"},
		},
		{
			name:    "tdx v5 without collateral",
			args:    []string{"--tdx", quotes + "tdx_quote_v5_outdated.bin", "--now", nowTDXv5},
			hex:     []string{"mrtd", "rtmr0", "mrseam", "mrservicetd", "tee_tcb_svn", "report_data"},
			want:    map[string]any{"tee": "tdx", "quote_version": 5.0},
			noField: []string{"tcb_status"},
		},
		{
			name: "sgx with collateral",
			args: []string{"--sgx", quotes + "sgx_quote_v3.bin", "--collateral", quotes + "sgx_quote_v3_collateral.json", "--now", nowSGX},
			hex:  []string{"mrenclave", "mrsigner", "report_data"},
			want: map[string]any{"tee": "sgx", "quote_version": 3.0, "debug": false, "tcb_status": "ConfigurationAndSWHardeningNeeded"},
		},
		{
			name:    "sgx in an Open Enclave remote report",
			args:    []string{"--sgx", "OE", "--now", nowOE},
			hex:     []string{"mrenclave", "mrsigner", "report_data"},
			want:    map[string]any{"tee": "sgx", "debug": true, "isvprodid": "1"},
			noField: []string{"tcb_status"},
		},
		{
			name: "sev-snp with vcek",
			args: []string{"--snp", quotes + "attestation_milan.bin", "--vcek", quotes + "vcek_milan.der", "--now", nowSNP},
			hex:  []string{"measurement", "host_data", "report_data", "reported_tcb"},
			want: map[string]any{"tee": "sev-snp", "debug": true, "tcb_status": "Unknown", "product_line": "Milan", "signer": "vcek"},
		},
		{
			name: "sev-snp under the KDS chain given with --snp-chain",
			args: []string{"--snp", quotes + "attestation_milan.bin", "--vcek", quotes + "vcek_milan.der", "--snp-chain", "../../attest/snp/testdata/ask_ark_milan_vcek_kds.pem", "--now", nowSNP},
			hex:  []string{"measurement", "host_data", "report_data", "reported_tcb"},
			want: map[string]any{"tee": "sev-snp", "product_line": "Milan"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := c.args
			if args[1] == "OE" {
				args = append([]string{args[0], oeWrapped(t)}, args[2:]...)
			}
			code, out, errs := runCLI(append(args, "--json")...)
			if code != 0 {
				t.Fatalf("exit %d, stderr %q", code, errs)
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("output is not JSON: %v\n%s", err, out)
			}
			if got["verified"] != true {
				t.Fatalf("verified %v", got["verified"])
			}
			for _, k := range c.hex {
				s, _ := got[k].(string)
				if !lowerHex.MatchString(s) {
					t.Errorf("%s = %q, want lowercase hex", k, got[k])
				}
			}
			if rd, _ := got["report_data"].(string); len(rd) != 128 {
				t.Errorf("report_data has %d hex digits, want 128", len(rd))
			}
			for k, v := range c.want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
			if _, ok := got["tcb_status"]; !ok && c.noField == nil {
				t.Errorf("no tcb_status")
			}
			for _, k := range c.noField {
				if _, ok := got[k]; ok {
					t.Errorf("unexpected %s = %v", k, got[k])
				}
			}
			cl, ok := got["claims"].(map[string]any)
			if !ok || cl["tee"] != got["tee"] || cl["report_data"] != got["report_data"] {
				t.Errorf("claims %v", got["claims"])
			}
			if strings.HasPrefix(got["tee"].(string), "tdx") {
				ms := cl["measurements"].(map[string]any)
				if ms["mrtd"] != got["mrtd"] || ms["rtmr3"] != got["rtmr3"] {
					t.Errorf("flat mrtd/rtmr3 differ from the claims")
				}
			}

			// The same without --json: a text summary, exit 0.
			code, out, _ = runCLI(args...)
			if code != 0 || !strings.HasPrefix(out, "OK ") || !strings.Contains(out, "report_data:") {
				t.Fatalf("text output (exit %d):\n%s", code, out)
			}
		})
	}
}

func TestVerifyQuoteFailures(t *testing.T) {
	// TDX v4: header 48 bytes, body 584 (report data at body offset 520),
	// then the signature data length (4) and the quote signature (64).
	const (
		tdxReportData = 48 + 520
		tdxSignature  = 48 + 584 + 4
		tdxQEReport   = 48 + 584 + 4 + 64 + 64 + 6 // after sig, AK, cert type+size
		sgxReportData = 48 + 320                   // SGX v3: report data at report offset 320
		snpReportData = 0x50
	)
	for _, c := range []struct {
		name string
		args func(t *testing.T) []string
		want string
	}{
		{"tdx report data flipped", func(t *testing.T) []string {
			return []string{"--tdx", flipped(t, "tdx_quote_v4.bin", tdxReportData), "--now", nowTDXv4}
		}, "verify quote: quote signature: "},
		{"tdx signature flipped", func(t *testing.T) []string {
			return []string{"--tdx", flipped(t, "tdx_quote_v4.bin", tdxSignature+5), "--now", nowTDXv4}
		}, "verify quote: quote signature: "},
		{"tdx QE report flipped", func(t *testing.T) []string {
			return []string{"--tdx", flipped(t, "tdx_quote_v4.bin", tdxQEReport+20), "--now", nowTDXv4}
		}, "verify quote: QE report signature: "},
		{"tdx version byte flipped", func(t *testing.T) []string {
			return []string{"--tdx", flipped(t, "tdx_quote_v4.bin", 0), "--now", nowTDXv4}
		}, "verify quote: quote version: "},
		{"tdx collateral expired", func(t *testing.T) []string {
			return []string{"--tdx", quotes + "tdx_quote_v4.bin", "--collateral", quotes + "tdx_quote_v4_collateral.json", "--now", "2025-09-01T00:00:00Z"}
		}, "verify quote: collateral expired: "},
		{"tdx v5 older than every TCB level", func(t *testing.T) []string {
			return []string{"--tdx", quotes + "tdx_quote_v5_outdated.bin", "--collateral", quotes + "tdx_quote_v5_outdated_collateral.json", "--now", nowTDXv5}
		}, "verify quote: TCB level: "},
		{"tdx PCK chain not yet valid", func(t *testing.T) []string {
			return []string{"--tdx", quotes + "tdx_quote_v4.bin", "--now", "2010-01-01T00:00:00Z"}
		}, "verify quote: PCK certificate chain: "},
		{"sgx report data flipped", func(t *testing.T) []string {
			return []string{"--sgx", flipped(t, "sgx_quote_v3.bin", sgxReportData), "--now", nowSGX}
		}, "verify quote: quote signature: "},
		{"snp report data flipped", func(t *testing.T) []string {
			return []string{"--snp", flipped(t, "attestation_milan.bin", snpReportData), "--vcek", quotes + "vcek_milan.der", "--now", nowSNP}
		}, "verify quote: report signature: "},
		{"snp under another product line's chain", func(t *testing.T) []string {
			return []string{"--snp", quotes + "attestation_milan.bin", "--vcek", quotes + "vcek_milan.der", "--snp-chain", "../../attest/snp/testdata/ask_ark_genoa.pem", "--now", nowSNP}
		}, "verify quote: VCEK certificate chain: "},
		{"snp without vcek", func(t *testing.T) []string {
			return []string{"--snp", quotes + "attestation_milan.bin", "--now", nowSNP}
		}, "verify quote: VCEK missing"},
		{"missing file", func(t *testing.T) []string {
			return []string{"--tdx", filepath.Join(t.TempDir(), "nope.bin")}
		}, "verify quote: reading "},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out, errs := runCLI(append(c.args(t), "--json")...)
			if code != 1 {
				t.Fatalf("exit %d, want 1; stdout %q stderr %q", code, out, errs)
			}
			if out != "" {
				t.Errorf("stdout on failure: %q", out)
			}
			if strings.Count(errs, "\n") != 1 || !strings.Contains(errs, c.want) {
				t.Fatalf("stderr %q, want one line with %q", errs, c.want)
			}
		})
	}
}

func TestVerifyQuoteUsage(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"--tdx", quotes + "tdx_quote_v4.bin", "--sgx", quotes + "sgx_quote_v3.bin"},
		{"--tdx", quotes + "tdx_quote_v4.bin", "--vcek", quotes + "vcek_milan.der"},
		{"--snp", quotes + "attestation_milan.bin", "--collateral", quotes + "tdx_quote_v4_collateral.json"},
		{"--tdx", quotes + "tdx_quote_v4.bin", "--now", "yesterday"},
		{"--tdx", quotes + "tdx_quote_v4.bin", "extra"},
	} {
		if code, _, errs := runCLI(args...); code != 2 || errs == "" {
			t.Errorf("%v: exit %d stderr %q, want 2 with usage", args, code, errs)
		}
	}
}
