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

// TestVerifyReceiptTimeBounds: receipts genuinely signed by a simulated
// TEE's key but dated before its bundle or in the future fail by name
// (issue 11, finding 3).
func TestVerifyReceiptTimeBounds(t *testing.T) {
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
	defer k.Close()
	ep := k.Current()
	req := []byte(`{"model":"builtin","messages":[]}`)
	resp := []byte(`{"id":"x"}`)
	for _, tc := range []struct {
		name string
		at   time.Time
		want error
	}{
		{"genuine", ep.Bundle.Created, nil},
		{"dated before its bundle", ep.Bundle.Created.Add(-time.Hour), attest.ErrReceiptTime},
		{"dated 2001", time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC), attest.ErrReceiptTime},
		{"in the future", time.Now().Add(time.Hour), attest.ErrReceiptTime},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := attest.Receipt{RequestID: "r", Model: "builtin", RequestSHA256: sha256.Sum256(req), ResponseSHA256: sha256.Sum256(resp), Created: tc.at.UTC().Truncate(time.Second)}
			sr, err := ep.SignReceipt(&r)
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(t.TempDir(), "t.json")
			tr := &client.Transcript{Version: client.TranscriptVersion, Request: req, Response: resp, Receipt: sr, Evidence: ep.Raw}
			if err := client.SaveTranscript(p, tr); err != nil {
				t.Fatal(err)
			}
			var out, errOut bytes.Buffer
			err = runVerifyTranscript(context.Background(), []string{p, "--allow-simulated"}, &out, &errOut)
			if !errors.Is(err, tc.want) || (tc.want != nil && !strings.HasPrefix(err.Error(), "receipt time: ")) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
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
