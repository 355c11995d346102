package nvidia

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
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
		{"object without list", `{"arch":"HOPPER","nonce":""}`},
		{"object null list", `{"arch":"HOPPER","evidence_list":null}`},
		{"object empty list", `{"arch":"HOPPER","evidence_list":[]}`},
		{"object trailing", `{"evidence_list":[{"certificate":"YQ==","evidence":"YQ=="}]} {}`},
		{"item nonce differs", `{"nonce":"` + strings.Repeat("aa", 32) + `","evidence_list":[{"certificate":"YQ==","evidence":"YQ==","nonce":"` + strings.Repeat("bb", 32) + `"}]}`},
		{"item arch differs", `{"arch":"HOPPER","evidence_list":[{"certificate":"YQ==","evidence":"YQ==","arch":"BLACKWELL"}]}`},
		{"payload nonce short", `{"nonce":"abcd","evidence_list":[{"certificate":"YQ==","evidence":"YQ=="}]}`},
		{"string of string", `"\"[]\""`},
		{"string not JSON", `"hello"`},
		{"number", `42`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseNVIDIAEvidenceJSON([]byte(tc.in)); !errors.Is(err, ErrEvidenceFormat) {
				t.Errorf("ParseNVIDIAEvidenceJSON = %v, want ErrEvidenceFormat", err)
			}
		})
	}
}

// nearPayload rewrites NVIDIA's serialized list into the object NEAR AI and
// dstack serve: one top-level nonce and arch, items without them.
func nearPayload(tb testing.TB, list []byte) []byte {
	tb.Helper()
	var items []map[string]any
	if err := json.Unmarshal(list, &items); err != nil {
		tb.Fatal(err)
	}
	p := map[string]any{"nonce": items[0]["nonce"], "arch": items[0]["arch"]}
	for _, it := range items {
		delete(it, "nonce")
		delete(it, "arch")
	}
	p["evidence_list"] = items
	b, err := json.Marshal(p)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func jsonString(tb testing.TB, b []byte) []byte {
	tb.Helper()
	s, err := json.Marshal(string(b))
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// TestParseNEARPayload accepts the NEAR/dstack object and its string form,
// and the result verifies like the bare list it came from.
func TestParseNEARPayload(t *testing.T) {
	list := readTestdata(t, "hopper_evidence.json")
	want, err := ParseNVIDIAEvidenceJSON(list)
	if err != nil {
		t.Fatal(err)
	}
	near := nearPayload(t, list)
	for name, in := range map[string][]byte{"object": near, "string": jsonString(t, near)} {
		t.Run(name, func(t *testing.T) {
			got, err := ParseNVIDIAEvidenceJSON(in)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("%d items, want %d", len(got), len(want))
			}
			for i := range got {
				if !bytes.Equal(got[i].Report, want[i].Report) || !bytes.Equal(got[i].Chain, want[i].Chain) ||
					!bytes.Equal(got[i].ClaimedNonce, want[i].ClaimedNonce) || got[i].Arch != want[i].Arch {
					t.Fatalf("item %d differs", i)
				}
				ev := got[i]
				ev.ExpectedNonce = ev.ClaimedNonce
				if _, err := Verify(context.Background(), ev, Options{Roots: deviceRoots(t), Now: timeGPU}); err != nil {
					t.Fatalf("item %d: %v", i, err)
				}
			}
		})
	}
}
