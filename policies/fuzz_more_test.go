package policies

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/util"

	"github.com/teegate/teegate/attest/claims"
)

var fuzzNow = time.Date(2025, 6, 20, 12, 0, 0, 0, time.UTC)

func claimsSeeds(f *testing.F) [][]byte {
	f.Helper()
	files, err := filepath.Glob("testdata/claims/*.json")
	if err != nil || len(files) == 0 {
		f.Fatalf("no claims seeds: %v", err)
	}
	var out [][]byte
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// checkDecision holds for every Eval outcome: an error is ErrEvaluation
// and comes with a denying Decision that says why; every Decision names
// the policy it came from; an allow carries no reasons.
func checkDecision(t *testing.T, p *Policy, d Decision, err error) {
	t.Helper()
	if d.PolicyHash != p.Hash() || d.PolicyName != p.Name() {
		t.Fatalf("decision names policy %q %s, want %q %s", d.PolicyName, d.PolicyHash, p.Name(), p.Hash())
	}
	if err != nil {
		if !errors.Is(err, ErrEvaluation) {
			t.Fatalf("untyped evaluation error %v", err)
		}
		if d.Allow || len(d.Reasons) == 0 {
			t.Fatalf("failed evaluation did not deny with a reason: %+v", d)
		}
		return
	}
	if d.Allow && len(d.Reasons) != 0 {
		t.Fatalf("allow with reasons %q", d.Reasons)
	}
	if !d.Allow && len(d.Reasons) == 0 {
		t.Fatal("deny without a reason")
	}
}

// FuzzClaimsInput: whatever claims JSON decodes to, turning it into the
// policy input never panics and fails only with ErrEvaluation, and the
// shipped policies decide on it the same way twice (cached or not), always
// failing closed.
func FuzzClaimsInput(f *testing.F) {
	for _, b := range claimsSeeds(f) {
		f.Add(b)
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"tee":"tdx","measurements":{"mrtd":1e400}}`))
	policies := []*Policy{pinnedProduction(f), mustBuiltin(f, "dev")}
	f.Fuzz(func(t *testing.T, raw []byte) {
		// The input decoder on raw bytes, before any claims typing.
		if v, err := parseInput(raw, fuzzNow); err != nil {
			if !errors.Is(err, ErrEvaluation) {
				t.Fatalf("untyped input error %v", err)
			}
		} else if v == nil {
			t.Fatal("nil input without an error")
		}
		var c claims.Claims
		if json.Unmarshal(raw, &c) != nil {
			return
		}
		for _, p := range policies {
			d, err := p.Eval(context.Background(), &c, fuzzNow)
			checkDecision(t, p, d, err)
			d2, err2 := p.Eval(context.Background(), &c, fuzzNow)
			if (err == nil) != (err2 == nil) || !reflect.DeepEqual(d, d2) {
				t.Fatalf("%s decided twice differently: %+v (%v), then %+v (%v)", p.Name(), d, err, d2, err2)
			}
		}
	})
}

// FuzzLoadBytes: any Rego source and data document either compiles or
// fails with ErrPolicyFormat or ErrDataFormat, never panicking; a policy
// that compiles keeps its exact source, and evaluating it fails closed.
func FuzzLoadBytes(f *testing.F) {
	for _, name := range BuiltinNames() {
		src, data, err := BuiltinSource(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(src, data)
	}
	src, _, err := BuiltinSource("production")
	if err != nil {
		f.Fatal(err)
	}
	pinned, err := os.ReadFile("testdata/production_pinned.data.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(src, pinned)
	f.Add([]byte("package teegate.policy\n\ndefault allow := false\n\ndeny contains \"x\" if input.debug\n"), []byte(`{}`))
	f.Add([]byte("package teegate.policy\nallow := true\n"), []byte(`{"teegate":{}}`))
	f.Add([]byte("package other\nallow := true\n"), []byte(`null`))
	f.Add([]byte("package teegate.policy\nallow if {"), []byte(`{"a":[1,2,{"b":null}]}`))
	c := goodTDX()
	f.Fuzz(func(t *testing.T, regoSrc, dataJSON []byte) {
		var data map[string]any
		if util.UnmarshalJSON(dataJSON, &data) != nil {
			data = nil
		}
		p, err := LoadBytes("fuzz", regoSrc, data)
		if err != nil {
			if !errors.Is(err, ErrPolicyFormat) && !errors.Is(err, ErrDataFormat) {
				t.Fatalf("untyped load error %v", err)
			}
			return
		}
		if !bytes.Equal(p.Source(), regoSrc) || len(p.Hash()) != 64 {
			t.Fatalf("policy keeps source %q hash %q", p.Source(), p.Hash())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d, err := p.Eval(ctx, c, fuzzNow)
		checkDecision(t, p, d, err)
	})
}
