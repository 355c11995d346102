package policies

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/teegate/teegate/attest/claims"
	"github.com/teegate/teegate/attest/snp"
)

// shippedSNPMinimums reads data.sev_snp.min_tcb of the shipped production
// data: the minimums a verifier is given are the policy's own.
func shippedSNPMinimums(t testing.TB) map[string]snp.TCBParts {
	t.Helper()
	raw, err := os.ReadFile("production.data.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		SEVSNP struct {
			MinTCB map[string]snp.TCBParts `json:"min_tcb"`
		} `json:"sev_snp"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	if len(d.SEVSNP.MinTCB) == 0 {
		t.Fatal("production data states no SEV-SNP minimum TCB")
	}
	return d.SEVSNP.MinTCB
}

// TestRealMilanReportOutOfDate: the real Milan report (go-sev-guest's
// fixture, TCB bl 2 / snp 5 / microcode 68) verifies, is OutOfDate against
// the minimums the production data states, and the production policy
// refuses it for its TCB (besides its debug policy and unpinned
// measurement); without minimums its status is Unknown, never UpToDate.
func TestRealMilanReportOutOfDate(t *testing.T) {
	report, err := os.ReadFile("../attest/snp/testdata/attestation_milan.bin")
	if err != nil {
		t.Fatal(err)
	}
	vcek, err := os.ReadFile("../attest/snp/testdata/vcek_milan.der")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	c, err := snp.Verify(context.Background(), report, snp.Options{VCEK: vcek, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if c.TCB.Status != claims.TCBUnknown {
		t.Fatalf("status without minimums %q, want Unknown", c.TCB.Status)
	}
	c, err = snp.Verify(context.Background(), report, snp.Options{VCEK: vcek, Now: now, MinimumTCB: shippedSNPMinimums(t)})
	if err != nil {
		t.Fatal(err)
	}
	if c.TCB.Status != claims.TCBOutOfDate {
		t.Fatalf("status %q, want OutOfDate", c.TCB.Status)
	}
	c.CreatedAt = now
	for name, p := range map[string]*Policy{"production": mustBuiltin(t, "production"), "production_pinned": pinnedProduction(t)} {
		t.Run(name, func(t *testing.T) {
			d, err := p.Eval(context.Background(), c, now)
			if err != nil {
				t.Fatal(err)
			}
			if d.Allow {
				t.Fatal("production policy admitted an out-of-date SEV-SNP report")
			}
			want := "SEV-SNP TCB is below the minimum stated for Milan: committed microcode SPL 68 < 219, committed snp SPL 5 < 24, reported microcode SPL 68 < 219, reported snp SPL 5 < 24"
			if !slices.Contains(d.Reasons, want) {
				t.Fatalf("reasons %q lack %q", d.Reasons, want)
			}
			if !slices.ContainsFunc(d.Reasons, func(r string) bool { return strings.HasPrefix(r, "TCB status OutOfDate") }) {
				t.Fatalf("reasons %q lack the OutOfDate status", d.Reasons)
			}
		})
	}
}
