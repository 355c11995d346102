package nvidia

import (
	"context"
	"testing"
)

func benchVerify(b *testing.B, v vector, opts Options) {
	b.Helper()
	ev := Evidence{Report: v.report, Chain: v.chain, ExpectedNonce: v.nonce}
	if _, err := Verify(context.Background(), ev, opts); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := Verify(context.Background(), ev, opts); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyReportAndChain: a real H100 report with its 5-certificate
// chain, nothing cached.
func BenchmarkVerifyReportAndChain(b *testing.B) {
	benchVerify(b, realVectors(b)[0], Options{Roots: deviceRoots(b), Now: timeGPU})
}

// BenchmarkVerifyReportChainCached: the same with the chain cached, as for
// a GPU that attests again.
func BenchmarkVerifyReportChainCached(b *testing.B) {
	benchVerify(b, realVectors(b)[0], Options{Roots: deviceRoots(b), Now: timeGPU, ChainCache: NewChainCache(16)})
}

// BenchmarkVerifyWithRIM: an NVSwitch report compared with its (already
// verified) BIOS RIM, chain cached.
func BenchmarkVerifyWithRIM(b *testing.B) {
	benchVerify(b, realVectors(b)[2], Options{Roots: deviceRoots(b), RIMRoots: rimRoots(b), Now: timeSwitchRIM, ChainCache: NewChainCache(16),
		RIMs: []*RIM{mustRIM(b, "switchVBIOSRim_NV_SWITCH_BIOS_5612_0002_890_9610550001.xml")}})
}

func BenchmarkParseReport(b *testing.B) {
	rep := realVectors(b)[0].report
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseReport(rep); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRIMVerify: C14N 1.1 of a 21 KB driver RIM, its signature and
// its 4-certificate chain.
func BenchmarkRIMVerify(b *testing.B) {
	r := mustRIM(b, "NV_GPU_DRIVER_GH100_550.144.03.xml")
	roots := rimRoots(b)
	b.ReportAllocs()
	for b.Loop() {
		if err := r.Verify(roots, timeGPU); err != nil {
			b.Fatal(err)
		}
	}
}
