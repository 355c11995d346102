package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/teegate/teegate/attest/claims"
	"github.com/teegate/teegate/policies"
)

// evalNow matches the claims' created_at (10 minutes before), so the age
// rules of both shipped policies pass.
const evalNow = "2026-11-27T12:00:00Z"

// simulatedClaims mirrors policies/testdata/claims/simulated.json: what a
// verifier makes of a simulated-TEE bundle with a simulated GPU.
func simulatedClaims() *claims.Claims {
	return &claims.Claims{
		Version:   claims.Version,
		TEE:       claims.TEESimulated,
		Simulated: true,
		Measurements: map[string]string{
			"mrtd":   strings.Repeat("aa", 48),
			"mrseam": strings.Repeat("bb", 48),
		},
		TCB:        &claims.TCB{Status: claims.TCBUpToDate, TEETCBSVN: "03000600000000000000000000000000"},
		ReportData: strings.Repeat("ab", 64),
		GPUs: []claims.GPU{{
			Arch: "simulated", CCMode: "on", DriverVersion: "550.90.07", VBIOSVersion: "96.00.9f.00.01",
			SignatureValid: true, ChainValid: true, NonceMatched: true, MeasurementsMatched: "match",
		}},
		Binding: &claims.Binding{
			ReportDataMatched: true, GPUNoncesMatched: true, SigningKey: strings.Repeat("01", 32),
		},
		CreatedAt:  time.Date(2026, 11, 27, 11, 50, 0, 0, time.UTC),
		AgeSeconds: 600,
	}
}

func writeFile(t *testing.T, dir, name string, content []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeClaims(t *testing.T, dir string, c *claims.Claims) string {
	t.Helper()
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, dir, "claims.json", b)
}

func builtinHash(t *testing.T, name string) string {
	t.Helper()
	p, err := policies.Builtin(name)
	if err != nil {
		t.Fatal(err)
	}
	return p.Hash()
}

func TestPolicyEval(t *testing.T) {
	dir := t.TempDir()
	simClaims := writeClaims(t, dir, simulatedClaims())
	// A policy file of the operator's with data beside it: denies evidence
	// older than data.max_age.
	own := writeFile(t, dir, "own.rego", []byte(`package teegate.policy
default allow := false
allow if count(deny) == 0
deny contains "evidence too old" if input.age_seconds > data.max_age
`))
	writeFile(t, dir, "own.data.json", []byte(`{"max_age": 60}`))
	ownPolicy, err := policies.Load(own)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name      string
		args      []string
		denied    string   // wanted error message ("" = allowed)
		stdout    []string // substrings of stdout
		notStdout string
	}{
		{
			name:   "production denies simulated",
			args:   []string{"--claims", simClaims, "--policy", "production", "--now", evalNow},
			denied: "denied: GPU 0: VBIOS version",
			stdout: []string{"deny\n", "reason: simulated TEE is not accepted\n", "reason: simulated evidence is not accepted\n",
				"policy: production\n", "hash: " + builtinHash(t, "production") + "\n"},
		},
		{
			name:      "dev allows simulated",
			args:      []string{"--claims", simClaims, "--policy", "dev", "--now", evalNow},
			stdout:    []string{"allow\n", "policy: dev\n", "hash: " + builtinHash(t, "dev") + "\n"},
			notStdout: "reason:",
		},
		{
			name:   "dev denies stale evidence",
			args:   []string{"--claims", simClaims, "--policy", "dev", "--now", "2026-12-27T12:00:00Z"},
			denied: "denied: evidence is 2592600 s old",
			stdout: []string{"deny\n", "policy: dev\n"},
		},
		{
			name:   "policy file with data beside it",
			args:   []string{"--claims", simClaims, "--policy", own, "--now", evalNow},
			denied: "denied: evidence too old",
			stdout: []string{"deny\n", "reason: evidence too old\n", "policy: own\n", "hash: " + ownPolicy.Hash() + "\n"},
		},
		{
			name:   "flags in any order",
			args:   []string{"--now", evalNow, "--policy", "dev", "--claims", simClaims},
			stdout: []string{"allow\n"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := runPolicy(context.Background(), append([]string{"eval"}, tt.args...), &stdout, &stderr)
			if tt.denied == "" {
				if err != nil {
					t.Fatalf("err = %v, want allowed; stdout:\n%s", err, &stdout)
				}
			} else {
				if !errors.Is(err, errDenied) || !strings.HasPrefix(err.Error(), tt.denied) {
					t.Fatalf("err = %v, want errDenied starting %q", err, tt.denied)
				}
			}
			for _, s := range tt.stdout {
				if !strings.Contains(stdout.String(), s) {
					t.Errorf("stdout lacks %q:\n%s", s, &stdout)
				}
			}
			if tt.notStdout != "" && strings.Contains(stdout.String(), tt.notStdout) {
				t.Errorf("stdout has %q:\n%s", tt.notStdout, &stdout)
			}
			if stderr.Len() != 0 {
				t.Errorf("stderr: %s", &stderr)
			}
		})
	}
}

func TestPolicyEvalJSON(t *testing.T) {
	simClaims := writeClaims(t, t.TempDir(), simulatedClaims())
	for _, tt := range []struct {
		policy string
		allow  bool
	}{{"dev", true}, {"production", false}} {
		t.Run(tt.policy, func(t *testing.T) {
			var stdout bytes.Buffer
			err := runPolicy(context.Background(),
				[]string{"eval", "--json", "--claims", simClaims, "--policy", tt.policy, "--now", evalNow}, &stdout, &bytes.Buffer{})
			if (err == nil) != tt.allow || (err != nil && !errors.Is(err, errDenied)) {
				t.Fatalf("err = %v, want allow=%v", err, tt.allow)
			}
			var d policies.Decision
			dec := json.NewDecoder(&stdout)
			dec.DisallowUnknownFields()
			if err := dec.Decode(&d); err != nil {
				t.Fatalf("stdout is not a Decision: %v", err)
			}
			if d.Allow != tt.allow || d.PolicyName != tt.policy || d.PolicyHash != builtinHash(t, tt.policy) {
				t.Fatalf("decision = %+v", d)
			}
			if !tt.allow && (len(d.Reasons) == 0 || err.Error() != "denied: "+d.Reasons[0]) {
				t.Fatalf("error %q does not carry the first reason of %q", err, d.Reasons)
			}
		})
	}
}

func TestPolicyEvalErrors(t *testing.T) {
	dir := t.TempDir()
	simClaims := writeClaims(t, dir, simulatedClaims())
	good, err := json.Marshal(simulatedClaims())
	if err != nil {
		t.Fatal(err)
	}
	typo := writeFile(t, dir, "typo.json", bytes.Replace(good, []byte(`"simulated":true`), []byte(`"simulted":true`), 1))
	trailing := writeFile(t, dir, "trailing.json", append(bytes.Clone(good), []byte(` {}`)...))
	notJSON := writeFile(t, dir, "notjson.json", good[:len(good)-1])
	broken := writeFile(t, dir, "broken.rego", []byte("package teegate.policy\nallow if {"))

	tests := []struct {
		name string
		args []string
		err  error  // errors.Is target; nil with msg set: any error
		msg  string // substring of the error
	}{
		{"no arguments", nil, errUsage, ""},
		{"unknown subcommand", []string{"apply"}, errUsage, ""},
		{"help", []string{"eval", "-h"}, flag.ErrHelp, ""},
		{"missing claims flag", []string{"eval", "--policy", "dev"}, errUsage, ""},
		{"missing policy flag", []string{"eval", "--claims", simClaims}, errUsage, ""},
		{"bad now", []string{"eval", "--claims", simClaims, "--policy", "dev", "--now", "yesterday"}, errUsage, ""},
		{"positional argument", []string{"eval", "--claims", simClaims, "--policy", "dev", "extra"}, errUsage, ""},
		{"claims file missing", []string{"eval", "--claims", filepath.Join(dir, "none.json"), "--policy", "dev"}, fs.ErrNotExist, "reading claims"},
		{"claims unknown field", []string{"eval", "--claims", typo, "--policy", "dev"}, nil, `unknown field "simulted"`},
		{"claims trailing data", []string{"eval", "--claims", trailing, "--policy", "dev"}, nil, "trailing data"},
		{"claims not JSON", []string{"eval", "--claims", notJSON, "--policy", "dev"}, nil, "decoding claims"},
		{"policy file missing", []string{"eval", "--claims", simClaims, "--policy", filepath.Join(dir, "none.rego")}, fs.ErrNotExist, "loading policy"},
		{"policy broken", []string{"eval", "--claims", simClaims, "--policy", broken}, policies.ErrPolicyFormat, "loading policy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := runPolicy(context.Background(), tt.args, &stdout, &stderr)
			if err == nil {
				t.Fatalf("no error; stdout:\n%s", &stdout)
			}
			if tt.err != nil && !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.msg)
			}
			if errors.Is(err, errDenied) {
				t.Fatalf("err = %v: a failure to evaluate must not read as a denial", err)
			}
			if stdout.Len() != 0 {
				t.Fatalf("stdout written on error: %s", &stdout)
			}
		})
	}
}

func TestPolicyEvalCanceled(t *testing.T) {
	simClaims := writeClaims(t, t.TempDir(), simulatedClaims())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stdout bytes.Buffer
	err := runPolicy(ctx, []string{"eval", "--claims", simClaims, "--policy", "dev", "--now", evalNow}, &stdout, &bytes.Buffer{})
	if !errors.Is(err, policies.ErrEvaluation) {
		t.Fatalf("err = %v, want ErrEvaluation", err)
	}
	if !strings.HasPrefix(stdout.String(), "deny\n") {
		t.Fatalf("stdout = %q, want a deny decision", &stdout)
	}
}

func TestPolicyShow(t *testing.T) {
	for _, name := range policies.BuiltinNames() {
		src, data, err := policies.BuiltinSource(name)
		if err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			args []string
			want func(out string) bool
		}{
			{[]string{"show", name}, func(out string) bool {
				return strings.Contains(out, string(src)) && strings.Contains(out, string(data)) &&
					strings.Contains(out, builtinHash(t, name))
			}},
			{[]string{"show", name, "--rego"}, func(out string) bool { return out == string(src) }},
			{[]string{"show", "--data", name}, func(out string) bool { return out == string(data) }},
		}
		for _, tt := range tests {
			t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
				var stdout bytes.Buffer
				if err := runPolicy(context.Background(), tt.args, &stdout, &bytes.Buffer{}); err != nil {
					t.Fatal(err)
				}
				if !tt.want(stdout.String()) {
					t.Fatalf("unexpected output:\n%s", &stdout)
				}
			})
		}
	}
	// The data printed by --data loads as the policy's data: an operator can
	// start from it.
	var data bytes.Buffer
	if err := runPolicy(context.Background(), []string{"show", "production", "--data"}, &data, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if !json.Valid(data.Bytes()) {
		t.Fatal("--data output is not JSON")
	}

	for _, tt := range []struct {
		name string
		args []string
		err  error
	}{
		{"no name", []string{"show"}, errUsage},
		{"unknown name", []string{"show", "prod"}, policies.ErrUnknownPolicy},
		{"both parts", []string{"show", "dev", "--rego", "--data"}, errUsage},
		{"two names", []string{"show", "dev", "production"}, errUsage},
		{"unknown flag", []string{"show", "dev", "--yaml"}, errUsage},
		{"help", []string{"show", "-h"}, flag.ErrHelp},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stdout bytes.Buffer
			err := runPolicy(context.Background(), tt.args, &stdout, &bytes.Buffer{})
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if stdout.Len() != 0 {
				t.Fatalf("stdout written on error: %s", &stdout)
			}
		})
	}
}

// FuzzDecodeClaims: decodeClaims never panics, and what it accepts
// re-encodes to claims it decodes to the same JSON.
func FuzzDecodeClaims(f *testing.F) {
	good, err := json.Marshal(simulatedClaims())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"version":1,"tee":"tdx","gpus":[{"index":0}]} `))
	f.Add([]byte(`{"simulted":true}`))
	f.Add([]byte(`{} {}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := decodeClaims(raw)
		if err != nil {
			return
		}
		once, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := decodeClaims(once)
		if err != nil {
			t.Fatalf("re-decoding %s: %v", once, err)
		}
		twice, err := json.Marshal(c2)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(once, twice) {
			t.Fatalf("round trip changed the claims:\n%s\n%s", once, twice)
		}
	})
}

func BenchmarkPolicyEvalCLI(b *testing.B) {
	dir := b.TempDir()
	raw, err := json.Marshal(simulatedClaims())
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(dir, "claims.json")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		b.Fatal(err)
	}
	args := []string{"eval", "--claims", path, "--policy", "dev", "--now", evalNow}
	b.ReportAllocs()
	for b.Loop() {
		if err := runPolicy(context.Background(), args, &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
			b.Fatal(err)
		}
	}
}
