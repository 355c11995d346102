package nvidia

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

func TestParseNVIDIAEvidenceJSON(t *testing.T) {
	for _, tc := range []struct {
		file, arch string
	}{
		{"hopper_evidence.json", "HOPPER"},
		{"hopper_evidence_cert_hold.json", "HOPPER"},
		{"evidence_hopper_590_12.json", "HOPPER"},
		{"switch_evidence_ls10.json", "LS10"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			evs, err := ParseNVIDIAEvidenceJSON(readTestdata(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) != 1 || evs[0].Arch != tc.arch || evs[0].ExpectedNonce != nil || len(evs[0].ClaimedNonce) != NonceSize {
				t.Fatalf("evidence = %+v", evs)
			}
			r, err := ParseReport(evs[0].Report)
			if err != nil {
				t.Fatal(err)
			}
			if n := r.Nonce(); !bytes.Equal(n[:], evs[0].ClaimedNonce) {
				t.Errorf("report nonce %x, file nonce %x", n, evs[0].ClaimedNonce)
			}
			ev := evs[0]
			ev.ExpectedNonce = ev.ClaimedNonce
			if _, err := Verify(context.Background(), ev, Options{Roots: deviceRoots(t), Now: timeGPU}); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
}

func TestParseNVIDIAEvidenceJSONMalformed(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"empty", ""},
		{"not a list", `{"arch":"HOPPER"}`},
		{"empty list", `[]`},
		{"trailing", `[{"arch":"HOPPER","certificate":"YQ==","evidence":"YQ=="}] x`},
		{"evidence not base64", `[{"certificate":"YQ==","evidence":"!!"}]`},
		{"no evidence", `[{"certificate":"YQ=="}]`},
		{"no certificate", `[{"evidence":"YQ=="}]`},
		{"nonce not hex", `[{"certificate":"YQ==","evidence":"YQ==","nonce":"zz"}]`},
		{"nonce short", `[{"certificate":"YQ==","evidence":"YQ==","nonce":"abcd"}]`},
		{"wrong types", `[{"certificate":1,"evidence":"YQ=="}]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseNVIDIAEvidenceJSON([]byte(tc.in)); !errors.Is(err, ErrEvidenceFormat) {
				t.Errorf("ParseNVIDIAEvidenceJSON = %v, want ErrEvidenceFormat", err)
			}
		})
	}
}
