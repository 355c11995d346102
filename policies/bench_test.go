package policies

import (
	"context"
	"testing"
)

// BenchmarkEvalProduction is the steady state of a gateway or verifier:
// the same claims evaluated again within the same second (decision cache hit).
func BenchmarkEvalProduction(b *testing.B) {
	p := pinnedProduction(b)
	c := goodTDX()
	ctx := context.Background()
	if d, err := p.Eval(ctx, c, testNow); err != nil || !d.Allow {
		b.Fatalf("%+v %v", d, err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if d, _ := p.Eval(ctx, c, testNow); !d.Allow {
			b.Fatal("denied")
		}
	}
}

// BenchmarkEvalProductionUncached measures a full Rego evaluation of an
// already converted input (no cache).
func BenchmarkEvalProductionUncached(b *testing.B) {
	p := pinnedProduction(b)
	raw, _, err := encodeInput(goodTDX(), testNow)
	if err != nil {
		b.Fatal(err)
	}
	in, err := parseInput(raw, testNow)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if d, _ := p.evalInput(ctx, in); !d.Allow {
			b.Fatal("denied")
		}
	}
}

// BenchmarkEvalProductionCold adds the claims-to-input conversion: the cost
// of a cache miss.
func BenchmarkEvalProductionCold(b *testing.B) {
	p := pinnedProduction(b)
	c := goodTDX()
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		raw, _, err := encodeInput(c, testNow)
		if err != nil {
			b.Fatal(err)
		}
		in, err := parseInput(raw, testNow)
		if err != nil {
			b.Fatal(err)
		}
		if d, _ := p.evalInput(ctx, in); !d.Allow {
			b.Fatal("denied")
		}
	}
}

// BenchmarkParseInput is the JSON-to-AST conversion a cache miss adds.
func BenchmarkParseInput(b *testing.B) {
	raw, _, err := encodeInput(goodTDX(), testNow)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseInput(raw, testNow); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLoadBuiltinProduction(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Builtin("production"); err != nil {
			b.Fatal(err)
		}
	}
}
