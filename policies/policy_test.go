package policies

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/util"

	"github.com/teegate/teegate/attest/claims"
)

var update = flag.Bool("update", false, "rewrite golden decision files in testdata/golden")

// testNow is the evaluation time of every test: fixed so age rules and the
// golden files are deterministic.
var testNow = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

// goodTDX is a TDX claims set that the production policy admits under
// testdata/production_pinned.data.json. Each table case changes one field.
func goodTDX() *claims.Claims {
	return &claims.Claims{
		Version:   claims.Version,
		TEE:       claims.TEETDX,
		Simulated: false,
		Debug:     false,
		Measurements: map[string]string{
			"mrtd":   "aa00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000aa",
			"mrseam": "bb00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000bb",
			"rtmr0":  "cc00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000cc",
			"rtmr3":  "0000",
		},
		TCB: &claims.TCB{
			Status:    claims.TCBUpToDate,
			TEETCBSVN: "03000600000000000000000000000000",
			FMSPC:     "50806f000000",
		},
		ReportData: strings.Repeat("ab", 64),
		GPUs: []claims.GPU{{
			Index:               0,
			Arch:                "hopper",
			CCMode:              "on",
			DriverVersion:       "550.90.07",
			VBIOSVersion:        "96.00.9f.00.01",
			SignatureValid:      true,
			ChainValid:          true,
			NonceMatched:        true,
			MeasurementsMatched: "match",
		}},
		Binding: &claims.Binding{
			ReportDataMatched: true,
			GPUNoncesMatched:  true,
			SigningKey:        strings.Repeat("01", 32),
		},
		CreatedAt:  testNow.Add(-10 * time.Minute),
		AgeSeconds: 600,
		Sources:    map[string]string{"mrtd": "tdx.quote_signature"},
	}
}

func goodSNP() *claims.Claims {
	c := goodTDX()
	c.TEE = claims.TEESEVSNP
	c.Measurements = map[string]string{
		"measurement": "ee00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000ee",
		"host_data":   strings.Repeat("00", 32),
	}
	parts := claims.SNPTCBParts{BootLoader: 3, SNP: 24, Microcode: 219}
	c.TCB = &claims.TCB{Status: claims.TCBUnknown, TEETCBSVN: "03000000000018db",
		SNP: &claims.SNPTCB{ProductLine: "Milan", Signer: "vcek", Reported: parts, Committed: parts, Current: parts, Launch: parts}}
	return c
}

func simulated() *claims.Claims {
	c := goodTDX()
	c.TEE = claims.TEESimulated
	c.Simulated = true
	c.GPUs[0].Arch = "simulated"
	return c
}

func readData(t testing.TB, path string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := util.UnmarshalJSON(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// pinnedProduction is the shipped production Rego with test reference values.
func pinnedProduction(t testing.TB) *Policy {
	t.Helper()
	src, _, err := BuiltinSource("production")
	if err != nil {
		t.Fatal(err)
	}
	p, err := LoadBytes("production", src, readData(t, "testdata/production_pinned.data.json"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustBuiltin(t testing.TB, name string) *Policy {
	t.Helper()
	p, err := Builtin(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestProductionAllowsGoodClaims(t *testing.T) {
	p := pinnedProduction(t)
	for name, c := range map[string]*claims.Claims{"tdx": goodTDX(), "sev-snp": goodSNP()} {
		t.Run(name, func(t *testing.T) {
			d, err := p.Eval(context.Background(), c, testNow)
			if err != nil {
				t.Fatal(err)
			}
			if !d.Allow || len(d.Reasons) != 0 {
				t.Fatalf("decision = %+v, want allow", d)
			}
			if d.PolicyHash != p.Hash() || d.PolicyName != "production" {
				t.Fatalf("decision identity = %q %q", d.PolicyName, d.PolicyHash)
			}
		})
	}
}

func TestSimulatedDeniedByProductionAllowedByDev(t *testing.T) {
	ctx := context.Background()
	for _, p := range []*Policy{mustBuiltin(t, "production"), pinnedProduction(t)} {
		d, err := p.Eval(ctx, simulated(), testNow)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allow {
			t.Fatalf("production allowed simulated claims")
		}
		if !slices.ContainsFunc(d.Reasons, func(r string) bool { return strings.Contains(r, "simulated") }) {
			t.Fatalf("no reason names simulated: %q", d.Reasons)
		}
	}
	d, err := mustBuiltin(t, "dev").Eval(ctx, simulated(), testNow)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Allow {
		t.Fatalf("dev denied simulated claims: %q", d.Reasons)
	}
}

func TestShippedProductionDeniesUnknownMeasurements(t *testing.T) {
	d, err := mustBuiltin(t, "production").Eval(context.Background(), goodTDX(), testNow)
	if err != nil {
		t.Fatal(err)
	}
	if d.Allow {
		t.Fatal("shipped production data (empty allow-lists) admitted claims")
	}
	for _, want := range []string{`measurement mrtd`, `driver version "550.90.07" is not allowed`} {
		if !slices.ContainsFunc(d.Reasons, func(r string) bool { return strings.Contains(r, want) }) {
			t.Errorf("no reason contains %q: %q", want, d.Reasons)
		}
	}
}

// TestProductionDenyRules triggers each deny rule of production.rego with
// a one-field change of an otherwise admitted claims set.
func TestProductionDenyRules(t *testing.T) {
	p := pinnedProduction(t)
	tests := []struct {
		name   string
		mutate func(c *claims.Claims)
		now    time.Time
		reason string
	}{
		{"schema version", func(c *claims.Claims) { c.Version = 2 }, testNow, "claims schema version is not 1"},
		{"simulated flag", func(c *claims.Claims) { c.Simulated = true }, testNow, "simulated evidence is not accepted"},
		{"simulated tee", func(c *claims.Claims) { c.TEE = claims.TEESimulated }, testNow, "simulated TEE is not accepted"},
		{"unknown tee", func(c *claims.Claims) { c.TEE = "sev" }, testNow, `unsupported TEE kind "sev"`},
		{"no tee", func(c *claims.Claims) { c.TEE = "" }, testNow, `unsupported TEE kind ""`},
		{"debug", func(c *claims.Claims) { c.Debug = true }, testNow, "debug mode is enabled"},
		{"no tcb", func(c *claims.Claims) { c.TCB = nil }, testNow, "TCB status is missing"},
		{"tcb out of date", func(c *claims.Claims) { c.TCB.Status = claims.TCBOutOfDate }, testNow, "TCB status OutOfDate is not UpToDate and not tolerated"},
		{"tcb tolerated status, untolerated advisory", func(c *claims.Claims) {
			c.TCB.Status = claims.TCBSWHardeningNeeded
			c.TCB.AdvisoryIDs = []string{"INTEL-SA-00615", "INTEL-SA-99999"}
		}, testNow, "TCB status SWHardeningNeeded is not UpToDate and not tolerated (advisories: INTEL-SA-00615,INTEL-SA-99999)"},
		{"tcb toleration expired", func(c *claims.Claims) {
			c.TCB.Status = claims.TCBSWHardeningNeeded
			c.TCB.AdvisoryIDs = []string{"INTEL-SA-00615"}
			c.CreatedAt = time.Date(2027, 6, 1, 0, 0, 0, 0, time.UTC)
			c.AgeSeconds = 0
		}, time.Date(2027, 6, 1, 0, 0, 0, 0, time.UTC), "TCB status SWHardeningNeeded is not UpToDate and not tolerated"},
		{"collateral expired", func(c *claims.Claims) { c.TCB.CollateralExpired = true }, testNow, "TCB collateral is expired"},
		{"tee tcb svn below minimum", func(c *claims.Claims) { c.TCB.TEETCBSVN = "03000400000000000000000000000000" }, testNow, "TEE TCB SVN"},
		{"tee tcb svn missing", func(c *claims.Claims) { c.TCB.TEETCBSVN = "" }, testNow, "TEE TCB SVN \"\" is below the minimum"},
		{"mrtd unknown", func(c *claims.Claims) { c.Measurements["mrtd"] = strings.Repeat("00", 48) }, testNow, "measurement mrtd"},
		{"mrseam missing", func(c *claims.Claims) { delete(c.Measurements, "mrseam") }, testNow, `measurement mrseam "" is not an allowed reference value`},
		{"rtmr0 unknown", func(c *claims.Claims) { c.Measurements["rtmr0"] = "01" }, testNow, `measurement rtmr0 "01"`},
		{"no measurements", func(c *claims.Claims) { c.Measurements = nil }, testNow, `measurement mrtd "" is not an allowed reference value`},
		{"sgx not pinned by mrenclave, unknown mrsigner", func(c *claims.Claims) {
			c.TEE = claims.TEESGX
		}, testNow, `measurement mrsigner "" is not an allowed reference value`},
		{"snp measurement unknown", func(c *claims.Claims) {
			c.TEE = claims.TEESEVSNP
		}, testNow, `measurement measurement "" is not an allowed reference value`},
		{"no gpu", func(c *claims.Claims) { c.GPUs = nil }, testNow, "fewer GPUs than required: 0 < 1"},
		{"gpu simulated", func(c *claims.Claims) { c.GPUs[0].Arch = "simulated" }, testNow, "GPU 0: simulated GPU evidence is not accepted"},
		{"gpu devtools", func(c *claims.Claims) { c.GPUs[0].CCMode = "devtools" }, testNow, "GPU 0: confidential computing mode is devtools (developer tools mode), not on"},
		{"gpu cc off", func(c *claims.Claims) { c.GPUs[0].CCMode = "off" }, testNow, `GPU 0: confidential computing mode is "off", not on`},
		{"gpu signature", func(c *claims.Claims) { c.GPUs[0].SignatureValid = false }, testNow, "GPU 0: report signature is not valid"},
		{"gpu chain", func(c *claims.Claims) { c.GPUs[0].ChainValid = false }, testNow, "GPU 0: certificate chain is not valid"},
		{"gpu nonce", func(c *claims.Claims) { c.GPUs[0].NonceMatched = false }, testNow, "GPU 0: report nonce does not match the binding"},
		{"gpu measurements mismatch", func(c *claims.Claims) { c.GPUs[0].MeasurementsMatched = "mismatch" }, testNow, `GPU 0: measurements are "mismatch", not match`},
		{"gpu measurements not checked", func(c *claims.Claims) { c.GPUs[0].MeasurementsMatched = "not_checked" }, testNow, `GPU 0: measurements are "not_checked", not match`},
		{"gpu driver", func(c *claims.Claims) { c.GPUs[0].DriverVersion = "535.86.09" }, testNow, `GPU 0: driver version "535.86.09" is not allowed`},
		{"gpu vbios", func(c *claims.Claims) { c.GPUs[0].VBIOSVersion = "96.00.5e.00.01" }, testNow, `GPU 0: VBIOS version "96.00.5e.00.01" is not allowed`},
		{"binding missing", func(c *claims.Claims) { c.Binding = nil }, testNow, "key binding is missing"},
		{"binding report data", func(c *claims.Claims) { c.Binding.ReportDataMatched = false }, testNow, "report data does not bind the keys and GPU evidence"},
		{"binding gpu nonces", func(c *claims.Claims) { c.Binding.GPUNoncesMatched = false }, testNow, "GPU nonces do not match the binding"},
		{"age_seconds too old", func(c *claims.Claims) { c.AgeSeconds = 3601 }, testNow, "evidence is 3601 s old, older than the maximum of 3600 s"},
		{"created_at too old", func(c *claims.Claims) { c.CreatedAt = testNow.Add(-2 * time.Hour) }, testNow, "evidence is 7200 s old"},
		{"cached claims age with now", func(c *claims.Claims) {}, testNow.Add(2 * time.Hour), "evidence is 7800 s old"},
		{"created in the future", func(c *claims.Claims) { c.CreatedAt = testNow.Add(time.Hour) }, testNow, "evidence creation time is in the future"},
		{"no now", func(c *claims.Claims) {}, time.Time{}, "evaluation time (input.now) is missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := goodTDX()
			tt.mutate(c)
			d, err := p.Eval(context.Background(), c, tt.now)
			if err != nil {
				t.Fatal(err)
			}
			if d.Allow {
				t.Fatalf("allowed, want deny with %q", tt.reason)
			}
			if !slices.ContainsFunc(d.Reasons, func(r string) bool { return strings.Contains(r, tt.reason) }) {
				t.Fatalf("reasons %q lack %q", d.Reasons, tt.reason)
			}
			if !slices.IsSorted(d.Reasons) {
				t.Fatalf("reasons not sorted: %q", d.Reasons)
			}
		})
	}
}

func TestToleratedTCBAllowed(t *testing.T) {
	c := goodTDX()
	c.TCB.Status = claims.TCBSWHardeningNeeded
	c.TCB.AdvisoryIDs = []string{"INTEL-SA-00657"}
	d, err := pinnedProduction(t).Eval(context.Background(), c, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Allow {
		t.Fatalf("tolerated TCB denied: %q", d.Reasons)
	}
}

func TestDevDenyRules(t *testing.T) {
	p := mustBuiltin(t, "dev")
	tests := []struct {
		name   string
		mutate func(c *claims.Claims)
		reason string
	}{
		{"binding missing", func(c *claims.Claims) { c.Binding = nil }, "key binding is missing"},
		{"binding report data", func(c *claims.Claims) { c.Binding.ReportDataMatched = false }, "report data does not bind"},
		{"binding gpu nonces", func(c *claims.Claims) { c.Binding.GPUNoncesMatched = false }, "GPU nonces do not match the binding"},
		{"gpu nonce", func(c *claims.Claims) { c.GPUs[0].NonceMatched = false }, "GPU 0: report nonce does not match the binding"},
		{"too old", func(c *claims.Claims) { c.AgeSeconds = 86401 }, "evidence is 86401 s old"},
		{"version", func(c *claims.Claims) { c.Version = 0 }, "claims schema version is not 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := simulated()
			c.Debug = true
			tt.mutate(c)
			d, err := p.Eval(context.Background(), c, testNow)
			if err != nil {
				t.Fatal(err)
			}
			if d.Allow || !slices.ContainsFunc(d.Reasons, func(r string) bool { return strings.Contains(r, tt.reason) }) {
				t.Fatalf("decision %+v, want deny with %q", d, tt.reason)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name string
		load func() error
		want error
	}{
		{"malformed rego", func() error {
			_, err := Load(write("broken.rego", "package teegate.policy\n\ndeny contains msg if {\n"))
			return err
		}, ErrPolicyFormat},
		{"rego v0 syntax", func() error {
			_, err := Load(write("v0.rego", "package teegate.policy\n\ndeny[msg] { msg := \"x\" }\n"))
			return err
		}, ErrPolicyFormat},
		{"unsafe variable", func() error {
			_, err := LoadBytes("unsafe", []byte("package teegate.policy\n\ndeny contains x if { y := 1 }\n"), nil)
			return err
		}, ErrPolicyFormat},
		{"malformed data", func() error {
			write("baddata.rego", "package teegate.policy\n")
			write("baddata.data.json", "{not json")
			_, err := Load(filepath.Join(dir, "baddata.rego"))
			return err
		}, ErrDataFormat},
		{"data not an object", func() error {
			write("arr.rego", "package teegate.policy\n")
			write("arr.data.json", "[1,2]")
			_, err := Load(filepath.Join(dir, "arr.rego"))
			return err
		}, ErrDataFormat},
		{"data key twice", func() error {
			write("dup.rego", "package teegate.policy\n")
			write("dup.data.json", `{"a":1}`)
			write("dup.data/x.json", `{"a":2}`)
			_, err := Load(filepath.Join(dir, "dup.rego"))
			return err
		}, ErrDataFormat},
		{"data shadows package", func() error {
			_, err := LoadBytes("shadow", []byte("package teegate.policy\n"), map[string]any{"teegate": 1})
			return err
		}, ErrDataFormat},
		{"missing file", func() error {
			_, err := Load(filepath.Join(dir, "nope.rego"))
			return err
		}, os.ErrNotExist},
		{"unknown builtin", func() error {
			_, err := Builtin("staging")
			return err
		}, ErrUnknownPolicy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.load(); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestLoadDataBeside(t *testing.T) {
	dir := t.TempDir()
	src, data, err := BuiltinSource("dev")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "dev.rego"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "dev.data.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := Load(filepath.Join(dir, "dev.rego"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Name() != "dev" || p.Hash() != mustBuiltin(t, "dev").Hash() {
		t.Fatalf("Load(dev) = %s %s, want the builtin's hash", p.Name(), p.Hash())
	}

	// The same data split over a NAME.data/ directory hashes the same.
	if err := os.Remove(filepath.Join(dir, "dev.data.json")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "dev.data"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "dev.data", "a.json"), []byte(`{"max_age_seconds": 86400}`), 0o644)
	os.WriteFile(filepath.Join(dir, "dev.data", "b.json"), []byte(`{"max_clock_skew_seconds": 300}`), 0o644)
	p2, err := Load(filepath.Join(dir, "dev.rego"))
	if err != nil {
		t.Fatal(err)
	}
	if p2.Hash() != p.Hash() {
		t.Fatalf("data dir hash %s != data file hash %s", p2.Hash(), p.Hash())
	}

	// Without data the dev policy still loads and fails closed.
	os.RemoveAll(filepath.Join(dir, "dev.data"))
	p3, err := Load(filepath.Join(dir, "dev.rego"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := p3.Eval(context.Background(), simulated(), testNow)
	if err != nil || d.Allow || !slices.Contains(d.Reasons, "max_age_seconds is not configured") {
		t.Fatalf("policy without data: %+v, %v", d, err)
	}
}

func TestPolicyHash(t *testing.T) {
	src, _, err := BuiltinSource("production")
	if err != nil {
		t.Fatal(err)
	}
	data := readData(t, "testdata/production_pinned.data.json")
	a, err := LoadBytes("a", src, data)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadBytes("b", src, readData(t, "testdata/production_pinned.data.json"))
	if err != nil {
		t.Fatal(err)
	}
	if a.Hash() != b.Hash() || len(a.Hash()) != 64 {
		t.Fatalf("same source and data: %s != %s", a.Hash(), b.Hash())
	}
	// The data map is copied: mutating it after LoadBytes changes nothing.
	data["max_age_seconds"] = 1
	if a2, _ := LoadBytes("a", src, readData(t, "testdata/production_pinned.data.json")); a2.Hash() != a.Hash() {
		t.Fatal("hash not stable across loads")
	}
	c, err := LoadBytes("a", src, data)
	if err != nil {
		t.Fatal(err)
	}
	if c.Hash() == a.Hash() {
		t.Fatal("hash did not change when data changed")
	}
	d, err := LoadBytes("a", append(src, []byte("\n# comment\n")...), readData(t, "testdata/production_pinned.data.json"))
	if err != nil {
		t.Fatal(err)
	}
	if d.Hash() == a.Hash() {
		t.Fatal("hash did not change when source changed")
	}
	// Pin the shipped policies' hashes so a change to them is deliberate.
	for _, name := range BuiltinNames() {
		h1, h2 := mustBuiltin(t, name).Hash(), mustBuiltin(t, name).Hash()
		if h1 != h2 {
			t.Fatalf("builtin %s hash unstable", name)
		}
	}
}

func TestFailClosed(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		src    string
		reason string
		err    error
	}{
		{"no rules", "package teegate.policy\n", "policy defines no allow rule", nil},
		{"wrong package", "package other\n\nallow := true\n\ndeny := set()\n", "policy defines no deny rule", nil},
		{"allow without deny", "package teegate.policy\n\nallow := true\n", "policy defines no deny rule", nil},
		{"allow not boolean", "package teegate.policy\n\nallow := \"yes\"\n\ndeny := set()\n", "policy allow rule is not a boolean", nil},
		{"allow false, no reason", "package teegate.policy\n\ndefault allow := false\n\ndeny := set()\n", "no deny reason given", nil},
		{"allow true with deny", "package teegate.policy\n\nallow := true\n\ndeny contains \"nope\"\n", "nope", nil},
		{"non-string reason", "package teegate.policy\n\ndefault allow := false\n\ndeny contains 42\n", "42", nil},
		{"runtime error", "package teegate.policy\n\ndefault allow := false\n\nallow if to_number(\"x\") > 1\n\ndeny := set()\n", "policy evaluation failed", ErrEvaluation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := LoadBytes(tt.name, []byte(tt.src), nil)
			if err != nil {
				t.Fatal(err)
			}
			d, err := p.Eval(ctx, goodTDX(), testNow)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if d.Allow {
				t.Fatalf("allowed: %+v", d)
			}
			if tt.reason != "" && !slices.ContainsFunc(d.Reasons, func(r string) bool { return strings.Contains(r, tt.reason) }) {
				t.Fatalf("reasons %q lack %q", d.Reasons, tt.reason)
			}
			if len(d.Reasons) == 0 {
				t.Fatal("deny without reason")
			}
		})
	}
	t.Run("nil claims", func(t *testing.T) {
		d, err := mustBuiltin(t, "dev").Eval(ctx, nil, testNow)
		if !errors.Is(err, ErrEvaluation) || d.Allow || len(d.Reasons) == 0 {
			t.Fatalf("nil claims: %+v, %v", d, err)
		}
	})
	t.Run("canceled context", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		d, err := pinnedProduction(t).Eval(cctx, goodTDX(), testNow)
		if !errors.Is(err, ErrEvaluation) || d.Allow {
			t.Fatalf("canceled: %+v, %v", d, err)
		}
	})
}

// TestConcurrentEval runs one Policy from many goroutines (run with -race).
func TestConcurrentEval(t *testing.T) {
	p := pinnedProduction(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				c := goodTDX()
				c.AgeSeconds = int64(i*20 + j) // distinct inputs defeat the cache
				d, err := p.Eval(context.Background(), c, testNow)
				if err != nil || !d.Allow {
					t.Errorf("eval %d/%d: %+v %v", i, j, d, err)
					return
				}
				if d2, _ := p.Eval(context.Background(), c, testNow); !d2.Allow {
					t.Errorf("cached eval %d/%d denied", i, j)
				}
			}
		}()
	}
	wg.Wait()
}

func TestCachedDecisionIsACopy(t *testing.T) {
	p := pinnedProduction(t)
	c := goodTDX()
	c.Debug = true
	d1, _ := p.Eval(context.Background(), c, testNow)
	d1.Reasons[0] = "tampered"
	d2, _ := p.Eval(context.Background(), c, testNow)
	if slices.Contains(d2.Reasons, "tampered") {
		t.Fatal("cache returned a shared Reasons slice")
	}
	// A time in the same second hits the same entry; the next second may not.
	d3, _ := p.Eval(context.Background(), c, testNow.Add(900*time.Millisecond))
	if !slices.Equal(d2.Reasons, d3.Reasons) {
		t.Fatalf("same second, different decision: %q vs %q", d2.Reasons, d3.Reasons)
	}
}

// TestGolden pins the full decisions of both shipped policies for the
// claims files in testdata/claims. Run with -update to rewrite.
func TestGolden(t *testing.T) {
	if *update {
		writeGoldenClaims(t)
	}
	files, err := filepath.Glob("testdata/claims/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden claims: %v", err)
	}
	policies := map[string]*Policy{
		"production":        mustBuiltin(t, "production"),
		"production_pinned": pinnedProduction(t),
		"dev":               mustBuiltin(t, "dev"),
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var c claims.Claims
		if err := json.Unmarshal(raw, &c); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		base := strings.TrimSuffix(filepath.Base(f), ".json")
		for pname, p := range policies {
			t.Run(base+"/"+pname, func(t *testing.T) {
				d, err := p.Eval(context.Background(), &c, testNow)
				if err != nil {
					t.Fatal(err)
				}
				d.PolicyHash = "" // pinned separately; keeps goldens readable across policy edits
				got, _ := json.MarshalIndent(d, "", "  ")
				got = append(got, '\n')
				golden := filepath.Join("testdata", "golden", base+"."+pname+".json")
				if *update {
					if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(golden, got, 0o644); err != nil {
						t.Fatal(err)
					}
					return
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run go test -update)", err)
				}
				if string(got) != string(want) {
					t.Fatalf("decision differs from %s:\n got %s\nwant %s", golden, got, want)
				}
			})
		}
	}
}

// writeGoldenClaims regenerates the golden inputs from the builders above.
func writeGoldenClaims(t *testing.T) {
	t.Helper()
	devtools := goodTDX()
	devtools.Debug = true
	devtools.GPUs[0].CCMode = "devtools"
	outdated := goodSNP()
	outdated.TCB.Status = claims.TCBOutOfDate
	outdated.AgeSeconds = 90000
	inputs := map[string]*claims.Claims{
		"tdx_good":           goodTDX(),
		"snp_good":           goodSNP(),
		"simulated":          simulated(),
		"tdx_debug_devtools": devtools,
		"snp_outdated_old":   outdated,
	}
	if err := os.MkdirAll("testdata/claims", 0o755); err != nil {
		t.Fatal(err)
	}
	for name, c := range inputs {
		raw, _ := json.MarshalIndent(c, "", "  ")
		if err := os.WriteFile(filepath.Join("testdata", "claims", name+".json"), append(raw, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
