package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/attest/client"
	"github.com/teegate/teegate/enclave"
	"github.com/teegate/teegate/enclave/sim"
)

// streamAttacks are the stream manipulations of issue 11 (findings 1 and
// 2), applied to a genuine recorded stream, with the error each must get.
var streamAttacks = []struct {
	name   string
	mutate func(sse []byte) []byte
	want   error
	msg    string
}{
	{"chunk injected after the receipt", func(sse []byte) []byte {
		return bytes.Replace(sse, []byte("data: [DONE]"), []byte(`data: {"choices":[{"index":0,"delta":{"content":"injected"}}]}`+"\n\ndata: [DONE]"), 1)
	}, attest.ErrDataAfterReceipt, "stream"},
	{"chunk after [DONE]", func(sse []byte) []byte {
		return append(bytes.Clone(sse), `data: {"choices":[{"index":0,"delta":{"content":"injected"}}]}`+"\n\n"...)
	}, attest.ErrDataAfterReceipt, "stream"},
	{"event: line inserted", func(sse []byte) []byte {
		return append([]byte("event: error\n"), sse...)
	}, attest.ErrResponseHash, "response hash"},
	{"blank lines removed", func(sse []byte) []byte {
		i := bytes.Index(sse, []byte(`"teegate_receipt"`))
		j := bytes.LastIndex(sse[:i], []byte("\n\n"))
		return append(bytes.ReplaceAll(sse[:j], []byte("\n\n"), []byte("\n")), sse[j:]...)
	}, attest.ErrResponseHash, "response hash"},
}

func TestVerifyResponseStreamAttacks(t *testing.T) {
	for _, a := range streamAttacks {
		t.Run(a.name, func(t *testing.T) {
			tr := loadTestTranscript(t, "stream")
			f := writeResponseFiles(t, tr, "")
			b, err := os.ReadFile(f.response)
			if err != nil {
				t.Fatal(err)
			}
			// The recorded stream ends at its receipt line: complete it
			// as the gateway sends it, then attack.
			b = append(b, "\ndata: [DONE]\n\n"...)
			if err := os.WriteFile(f.response, a.mutate(b), 0o600); err != nil {
				t.Fatal(err)
			}
			var out, errOut bytes.Buffer
			err = runVerifyResponse(context.Background(), f.args("--allow-simulated", "--stream"), &out, &errOut)
			if !errors.Is(err, a.want) || !strings.Contains(err.Error(), a.msg) {
				t.Fatalf("got %v, want %v naming %q", err, a.want, a.msg)
			}
		})
	}
}

func TestVerifyTranscriptStreamAttacks(t *testing.T) {
	for _, a := range streamAttacks {
		t.Run(a.name, func(t *testing.T) {
			tr := loadTestTranscript(t, "stream")
			// The client keeps the stream through its receipt line: put
			// the rest back as the gateway sends it, then attack.
			sse := append(bytes.Clone(tr.Response), "\ndata: [DONE]\n\n"...)
			if _, err := attest.DigestSSE(bytes.NewReader(sse)); err != nil {
				t.Fatalf("completed transcript stream: %v", err)
			}
			tr.Response = a.mutate(sse)
			p := filepath.Join(t.TempDir(), "t.json")
			if err := client.SaveTranscript(p, tr); err != nil {
				t.Fatal(err)
			}
			var out, errOut bytes.Buffer
			err := runVerifyTranscript(context.Background(), []string{p, "--allow-simulated", "--now=" + tr.Saved.UTC().Format(time.RFC3339)}, &out, &errOut)
			if !errors.Is(err, a.want) {
				t.Fatalf("got %v, want %v", err, a.want)
			}
		})
	}
}

// TestVerifySimRootPinning: with the dev box's simulated root pinned, a
// wholly forged simulated bundle (chaining to the forger's own simulated
// root) fails by name; the genuine one verifies (issue 11, finding 5).
func TestVerifySimRootPinning(t *testing.T) {
	tr := loadTestTranscript(t, "chat")
	b, err := attest.DecodeBundle(tr.Evidence)
	if err != nil || len(b.SimulatedRoots) == 0 {
		t.Fatalf("transcript bundle: %v", err)
	}
	pemFile := func(der []byte) string {
		p := filepath.Join(t.TempDir(), "sim-root.pem")
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	f := writeResponseFiles(t, tr, "header")
	var out, errOut bytes.Buffer
	// Pinning the root the bundle chains to: verifies (--sim-root implies
	// --allow-simulated).
	if err := runVerifyResponse(context.Background(), f.args("--sim-root", pemFile(b.SimulatedRoots[0])), &out, &errOut); err != nil {
		t.Fatalf("genuine bundle against its pinned root: %v", err)
	}
	// The dev box's root is another one: the transcript's bundle is, for
	// this verifier, a forgery made with a simulated root of its own.
	other, err := sim.NewRoot()
	if err != nil {
		t.Fatal(err)
	}
	err = runVerifyResponse(context.Background(), f.args("--allow-simulated", "--sim-root", pemFile(other.Cert.Raw)), &out, &errOut)
	if !errors.Is(err, attest.ErrSimulatedRootUntrusted) || !strings.Contains(err.Error(), "evidence") {
		t.Fatalf("forged simulated bundle against a pinned root: %v", err)
	}
	p := filepath.Join(transcriptDir, "stream.transcript.json")
	err = runVerifyTranscript(context.Background(), []string{p, "--sim-root", pemFile(other.Cert.Raw), "--now=" + tr.Saved.UTC().Format(time.RFC3339)}, &out, &errOut)
	if !errors.Is(err, attest.ErrSimulatedRootUntrusted) {
		t.Fatalf("verify transcript against a pinned root: %v", err)
	}
	// A file without a certificate is refused before anything is verified.
	bad := filepath.Join(t.TempDir(), "empty.pem")
	_ = os.WriteFile(bad, []byte("nothing"), 0o600)
	if err := runVerifyResponse(context.Background(), f.args("--sim-root", bad), &out, &errOut); !errors.Is(err, attest.ErrMalformed) {
		t.Fatalf("empty --sim-root: %v", err)
	}
}

// bentSign signs a receipt with the epoch's key the way a bent keeper
// would: around Epoch.SignReceipt's check that its date lies in the epoch.
func bentSign(t *testing.T, ep *enclave.Epoch, r attest.Receipt) *attest.SignedReceipt {
	t.Helper()
	r.EvidenceID, r.Version = ep.ID, attest.ReceiptVersion
	sig, err := ep.Sign(r.AppendSigningInput(nil))
	if err != nil {
		t.Fatal(err)
	}
	return &attest.SignedReceipt{Receipt: r, Signature: sig}
}

func simKeeper(t *testing.T) *enclave.Keeper {
	t.Helper()
	root, err := sim.NewRoot()
	if err != nil {
		t.Fatal(err)
	}
	a, err := sim.NewAttester(sim.Config{Root: root, QuoteDelay: sim.NoDelay})
	if err != nil {
		t.Fatal(err)
	}
	k, err := enclave.NewKeeper(context.Background(), enclave.KeeperConfig{Attester: a, Identity: attest.WorkerIdentity{ID: "w"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	return k
}

// TestVerifyReceiptTimeBounds: receipts genuinely signed by a simulated
// TEE's key but dated before its epoch, after its epoch's keys were to be
// erased, or in the future fail by name; so does evidence from the future;
// --ignore-epoch lifts the epoch bound alone and --clock-skew widens the
// allowance (issue 11, finding 3).
func TestVerifyReceiptTimeBounds(t *testing.T) {
	ep := simKeeper(t).Current()
	win := ep.Bundle.Epoch
	req := []byte(`{"model":"builtin","messages":[]}`)
	resp := []byte(`{"id":"x"}`)
	at := func(tm time.Time) string { return "--now=" + tm.UTC().Format(time.RFC3339) }
	for _, tc := range []struct {
		name    string
		created time.Time
		flags   []string
		want    error
		cause   string
	}{
		{"genuine", ep.Bundle.Created, nil, nil, ""},
		{"in the grace period", win.NotAfter.Add(time.Minute), []string{at(win.NotAfter.Add(time.Minute))}, nil, ""},
		{"dated before its epoch", win.NotBefore.Add(-time.Hour), nil, attest.ErrReceiptEpoch, "receipt epoch: "},
		{"dated 2001", time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC), nil, attest.ErrReceiptEpoch, "receipt epoch: "},
		{"dated after its keys were erased", win.ErasedAt().Add(time.Hour), []string{at(win.ErasedAt().Add(time.Hour))}, attest.ErrReceiptEpoch, "receipt epoch: "},
		{"after the erasure, --ignore-epoch", win.ErasedAt().Add(time.Hour), []string{at(win.ErasedAt().Add(time.Hour)), "--ignore-epoch"}, nil, ""},
		{"after the erasure within --clock-skew", win.ErasedAt().Add(9 * time.Minute), []string{at(win.ErasedAt().Add(9 * time.Minute)), "--clock-skew=10m"}, nil, ""},
		{"in the future", time.Now().Add(time.Hour), nil, attest.ErrReceiptTime, "receipt time: "},
		{"in the future, --ignore-epoch", time.Now().Add(time.Hour), []string{"--ignore-epoch"}, attest.ErrReceiptTime, "receipt time: "},
		{"evidence from the future", ep.Bundle.Created, []string{at(ep.Bundle.Created.Add(-time.Hour))}, attest.ErrEvidenceExpired, "evidence: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := attest.Receipt{RequestID: "r", Model: "builtin", RequestSHA256: sha256.Sum256(req), ResponseSHA256: sha256.Sum256(resp), Created: tc.created.UTC().Truncate(time.Second)}
			sr := bentSign(t, ep, r)
			p := filepath.Join(t.TempDir(), "t.json")
			tr := &client.Transcript{Version: client.TranscriptVersion, Request: req, Response: resp, Receipt: sr, Evidence: ep.Raw, Saved: time.Now().UTC()}
			if err := client.SaveTranscript(p, tr); err != nil {
				t.Fatal(err)
			}
			var out, errOut bytes.Buffer
			err := runVerifyTranscript(context.Background(), append([]string{p, "--allow-simulated"}, tc.flags...), &out, &errOut)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) || (tc.want != nil && !strings.HasPrefix(err.Error(), tc.cause)) {
				t.Fatalf("got %v, want %v naming %q", err, tc.want, tc.cause)
			}
			if tc.want == nil {
				return
			}
			// verify response, from the separate files, says the same.
			f := writeResponseFiles(t, tr, "header")
			err = runVerifyResponse(context.Background(), f.args(append([]string{"--allow-simulated"}, tc.flags...)...), &out, &errOut)
			if !errors.Is(err, tc.want) || !strings.HasPrefix(err.Error(), tc.cause) {
				t.Fatalf("verify response: got %v, want %v naming %q", err, tc.want, tc.cause)
			}
		})
	}
	var out, errOut bytes.Buffer
	if err := runVerifyTranscript(context.Background(), []string{filepath.Join(transcriptDir, "chat.transcript.json"), "--clock-skew=0"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "--clock-skew") {
		t.Fatalf("--clock-skew=0: %v", err)
	}
}

// TestVerifyEpochWindowBinding: a bundle whose stated epoch window was
// widened fails — unsigned, on the bundle signature; re-signed with the
// epoch's own key, on the report data the hardware evidence carries.
func TestVerifyEpochWindowBinding(t *testing.T) {
	ep := simKeeper(t).Current()
	req := []byte(`{"model":"builtin","messages":[]}`)
	resp := []byte(`{"id":"x"}`)
	r := attest.Receipt{Version: attest.ReceiptVersion, RequestID: "r", Model: "builtin", RequestSHA256: sha256.Sum256(req), ResponseSHA256: sha256.Sum256(resp), Created: ep.Bundle.Created}
	for _, resign := range []bool{false, true} {
		b := *ep.Bundle
		b.Epoch.NotAfter = b.Epoch.NotAfter.AddDate(10, 0, 0)
		if resign {
			sig, err := ep.Sign(b.SigningInput())
			if err != nil {
				t.Fatal(err)
			}
			b.Signature = sig
		}
		raw, err := b.Encode()
		if err != nil {
			t.Fatal(err)
		}
		id := attest.BundleID(raw)
		// The receipt names the edited bundle, as an attacker would.
		rr := r
		rr.EvidenceID = id
		sig, err := ep.Sign(rr.AppendSigningInput(nil))
		if err != nil {
			t.Fatal(err)
		}
		tr := &client.Transcript{Version: client.TranscriptVersion, Request: req, Response: resp, Receipt: &attest.SignedReceipt{Receipt: rr, Signature: sig}, Evidence: raw, Saved: time.Now().UTC()}
		f := writeResponseFiles(t, tr, "header")
		var out, errOut bytes.Buffer
		err = runVerifyResponse(context.Background(), f.args("--allow-simulated"), &out, &errOut)
		want, cause := attest.ErrBundleSignature, "evidence: "
		if resign {
			want, cause = attest.ErrBindingReportData, "binding: "
		}
		if !errors.Is(err, want) || !strings.HasPrefix(err.Error(), cause) {
			t.Fatalf("re-signed %t: got %v, want %v", resign, err, want)
		}
	}
}

// TestVerifyBatchTreeHead: a changed tree_size or leaf_index in a fresh
// receipt's batch proof fails by name (issue 11, finding 4).
func TestVerifyBatchTreeHead(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(b *attest.BatchProof)
	}{
		{"tree size", func(b *attest.BatchProof) { b.TreeSize++ }},
		{"leaf index", func(b *attest.BatchProof) { b.LeafIndex++ }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := loadTestTranscript(t, "fresh")
			bp := *tr.Receipt.Batch
			tc.mutate(&bp)
			tr.Receipt.Batch = &bp
			f := writeResponseFiles(t, tr, "header")
			var out, errOut bytes.Buffer
			err := runVerifyResponse(context.Background(), f.args("--allow-simulated", "--nonce", tr.Nonce), &out, &errOut)
			if !errors.Is(err, attest.ErrBatchProof) || !strings.HasPrefix(err.Error(), "batch proof: ") {
				t.Fatalf("got %v, want ErrBatchProof", err)
			}
		})
	}
}

// TestVerifyDefaultMaxAge: the CLI refuses evidence older than 24 hours by
// default (issue 11 finding 3); --max-age changes the limit and --max-age 0
// lifts it.
func TestVerifyDefaultMaxAge(t *testing.T) {
	tr := loadTestTranscript(t, "chat")
	p := filepath.Join(transcriptDir, "chat.transcript.json")
	at := func(d time.Duration) string { return "--now=" + tr.Saved.Add(d).UTC().Format(time.RFC3339) }
	for _, tc := range []struct {
		name  string
		flags []string
		want  error
	}{
		{"23 hours later", []string{at(23 * time.Hour)}, nil},
		{"25 hours later", []string{at(25 * time.Hour)}, attest.ErrEvidenceExpired},
		{"25 hours later, --max-age 0", []string{at(25 * time.Hour), "--max-age=0"}, nil},
		{"2 hours later, --max-age 1h", []string{at(2 * time.Hour), "--max-age=1h"}, attest.ErrEvidenceExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := runVerifyTranscript(context.Background(), append([]string{p, "--allow-simulated"}, tc.flags...), &out, &errOut)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) || (err != nil && !strings.HasPrefix(err.Error(), "evidence: ")) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}
