package attest

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/teegate/teegate/attest/merkle"
)

var update = flag.Bool("update", false, "rewrite the golden test vectors in testdata/vectors")

const vectorDir = "testdata/vectors"

func readVector(name string) ([]byte, error) { return os.ReadFile(filepath.Join(vectorDir, name)) }

// vectorFiles generates every published test vector from fixed inputs. The
// keys and the fake evidence are derived from ASCII labels with SHA-256 (see
// testdata/vectors/README.md), so another implementation can regenerate them.
func vectorFiles(t *testing.T) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	js := func(v any) []byte {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		return append(b, '\n')
	}
	m := newFakeMachine("vector-machine")
	k := newFakeKeys("vector")
	hpkeSeed := sha256.Sum256([]byte("vector/hpke"))
	hk, _ := ecdh.X25519().NewPrivateKey(hpkeSeed[:])
	signSeed := sha256.Sum256([]byte("vector/sign"))
	pub := []byte(k.sign.Public().(ed25519.PublicKey))
	files["key.json"] = js(map[string]string{
		"ed25519_seed":      hex.EncodeToString(signSeed[:]),
		"ed25519_public":    hex.EncodeToString(pub),
		"x25519_private":    hex.EncodeToString(hk.Bytes()),
		"x25519_public":     hex.EncodeToString(k.hpke),
		"fake_cpu_seed":     hex.EncodeToString(m.cpu.Seed()),
		"fake_gpu_seed":     hex.EncodeToString(m.gpu.Seed()),
		"derivation_labels": "seed = SHA-256(label): vector/sign, vector/hpke, vector-machine/cpu, vector-machine/gpu",
	})

	// Binding.
	nonce := sha256.Sum256([]byte("vector/epoch"))
	b := m.bundle(k, nonce, 2)
	b.Worker = WorkerIdentity{ID: "worker-vector", Models: []string{"builtin"}}
	k.signBundle(b)
	var digestInput []byte
	digestInput = binary.BigEndian.AppendUint32(digestInput, uint32(len(b.GPUs)))
	var gpus []map[string]string
	for _, g := range b.GPUs {
		for _, f := range [][]byte{[]byte(g.Arch), []byte(g.CCMode), g.Report, g.CertChain} {
			digestInput = binary.BigEndian.AppendUint32(digestInput, uint32(len(f)))
			digestInput = append(digestInput, f...)
		}
		gpus = append(gpus, map[string]string{"arch": g.Arch, "cc_mode": g.CCMode, "report": hex.EncodeToString(g.Report), "cert_chain": hex.EncodeToString(g.CertChain)})
	}
	gd := GPUEvidenceDigest(b.GPUs)
	if gd != sha256.Sum256(digestInput) {
		t.Fatal("GPUEvidenceDigest disagrees with its documented layout")
	}
	gn := GPUNonce(pub, nonce)
	rd := ReportData(pub, k.hpke, gd, nonce, b.Epoch)
	rdInput := append([]byte(DomainEvidence), pub...)
	rdInput = append(append(append(rdInput, k.hpke...), gd[:]...), nonce[:]...)
	for _, v := range []int64{b.Epoch.NotBefore.Unix(), b.Epoch.NotAfter.Unix(), int64(b.Epoch.Grace / time.Second)} {
		rdInput = binary.BigEndian.AppendUint64(rdInput, uint64(v))
	}
	if rd != sha512.Sum512(rdInput) {
		t.Fatal("ReportData disagrees with its documented layout")
	}
	files["binding.json"] = js(map[string]any{
		"signing_pub":               hex.EncodeToString(pub),
		"hpke_pub":                  hex.EncodeToString(k.hpke),
		"epoch_nonce":               hex.EncodeToString(nonce[:]),
		"gpus":                      gpus,
		"gpu_evidence_digest_input": hex.EncodeToString(digestInput),
		"gpu_evidence_digest":       hex.EncodeToString(gd[:]),
		"gpu_nonce":                 hex.EncodeToString(gn[:]),
		"epoch": map[string]any{
			"not_before":    b.Epoch.NotBefore.Format(TimeLayout),
			"not_after":     b.Epoch.NotAfter.Format(TimeLayout),
			"grace_seconds": int64(b.Epoch.Grace / time.Second),
		},
		"report_data_input": hex.EncodeToString(rdInput),
		"report_data":       hex.EncodeToString(rd[:]),
	})

	// Bundle.
	raw := mustEncode(t, b)
	files["bundle.json"] = raw
	files["bundle.id"] = []byte(BundleID(raw) + "\n")
	ev, err := VerifyBundleFull(t.Context(), raw, testOpts(m))
	if err != nil {
		t.Fatal(err)
	}

	// Non-stream receipt.
	req := []byte(`{"model":"builtin","messages":[{"role":"user","content":"Say hello."}],"stream":false}`)
	resp := []byte(`{"id":"chatcmpl-vector","object":"chat.completion","created":1795773600,"model":"builtin","choices":[{"index":0,"message":{"role":"assistant","content":"Hello."},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":2,"total_tokens":13}}`)
	files["request.json"] = req
	files["response.json"] = resp
	r := Receipt{
		Version: ReceiptVersion, RequestID: "req-vector-1", EvidenceID: ev.ID, Model: "builtin",
		RequestSHA256: sha256.Sum256(req), ResponseSHA256: sha256.Sum256(resp),
		Created: time.Date(2026, 11, 27, 10, 0, 5, 0, time.UTC), Usage: Usage{11, 2, 13}, UsageSource: UsageFromEngine,
	}
	sr := signReceipt(k.sign, r)
	files["receipt.body.json"] = r.AppendCanonical(nil)
	files["receipt.signing_input.hex"] = []byte(hex.EncodeToString(r.AppendSigningInput(nil)) + "\n")
	files["receipt.envelope.json"] = sr.AppendJSON(nil)
	files["receipt.header.txt"] = []byte(sr.HeaderValue() + "\n")
	if err := VerifyReceipt(sr, ev, nil, ReceiptCheck{Request: req, Response: resp}); err != nil {
		t.Fatal(err)
	}

	// Stream.
	payloads := []string{
		`{"id":"chatcmpl-vs","object":"chat.completion.chunk","created":1795773601,"model":"builtin","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`,
		`{"id":"chatcmpl-vs","object":"chat.completion.chunk","created":1795773601,"model":"builtin","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}`,
		`{"id":"chatcmpl-vs","object":"chat.completion.chunk","created":1795773601,"model":"builtin","choices":[{"index":0,"delta":{"content":"."},"finish_reason":"stop"}]}`,
	}
	sreq := []byte(`{"model":"builtin","messages":[{"role":"user","content":"Say hello."}],"stream":true}`)
	// The stream as the gateway writes it, with a keep-alive comment
	// (not hashed) between two events; the hashed lines are published.
	var sse bytes.Buffer
	h := NewStreamHasher()
	for i, p := range payloads {
		h.Event("", []byte(p))
		sse.Write(AppendSSEEvent(nil, "", []byte(p)))
		if i == 0 {
			sse.WriteString(": keep-alive\n")
		}
	}
	var lines []string
	for _, p := range payloads {
		lines = append(lines, "data: "+p, "")
	}
	sd := h.Sum()
	if sd != streamDigestOfLines(lines) {
		t.Fatal("StreamHasher disagrees with its documented layout")
	}
	rs := Receipt{
		Version: ReceiptVersion, RequestID: "req-vector-2", EvidenceID: ev.ID, Model: "builtin", Stream: true,
		RequestSHA256: sha256.Sum256(sreq), ResponseSHA256: sd,
		Created: time.Date(2026, 11, 27, 10, 0, 6, 0, time.UTC), Usage: Usage{11, 2, 13},
		// The request did not ask for usage: the worker asked the engine
		// and kept the usage chunk out of the stream.
		UsageSource: UsageRequested,
	}
	ssr := signReceipt(k.sign, rs)
	sse.Write(AppendSSEEvent(nil, "", AppendReceiptChunk(nil, ChunkMeta{ID: "chatcmpl-vs", Object: "chat.completion.chunk", Created: 1795773601, Model: "builtin"}, ssr, nil)))
	sse.Write(AppendSSEDone(nil))
	files["stream.request.json"] = sreq
	files["stream.sse"] = sse.Bytes()
	files["stream.json"] = js(map[string]any{
		"payloads":        payloads,
		"hashed_lines":    lines,
		"response_sha256": hex.EncodeToString(sd[:]),
		"receipt_body":    string(rs.AppendCanonical(nil)),
		"signature":       base64.RawURLEncoding.EncodeToString(ssr.Signature),
	})
	res, err := DigestSSE(bytes.NewReader(sse.Bytes()))
	if err != nil || res.Digest != sd {
		t.Fatalf("stream vector does not verify: %v", err)
	}
	if err := VerifyReceipt(res.Receipt, ev, nil, ReceiptCheck{Request: sreq, ResponseDigest: &res.Digest}); err != nil {
		t.Fatal(err)
	}

	// Fresh-mode batch of three receipts; the second is published in full.
	var leaves [][32]byte
	var batch []*SignedReceipt
	var inputs []string
	for i := range 3 {
		rb := r
		rb.RequestID = "req-vector-fresh-" + string(rune('0'+i))
		rb.Nonce = "client-nonce-" + string(rune('0'+i))
		s := signReceipt(k.sign, rb)
		batch = append(batch, s)
		in := rb.AppendSigningInput(nil)
		inputs = append(inputs, hex.EncodeToString(in))
		leaves = append(leaves, merkle.LeafHash(in))
	}
	tree := merkle.New(leaves)
	root := tree.Root()
	fb := m.bundle(k, BatchNonce(3, root), 2)
	fb.Worker = b.Worker
	fb.Created = time.Date(2026, 11, 27, 10, 0, 6, 0, time.UTC)
	k.signBundle(fb)
	fraw := mustEncode(t, fb)
	fev, err := VerifyBundleFull(t.Context(), fraw, testOpts(m))
	if err != nil {
		t.Fatal(err)
	}
	var proofs [][]string
	for i, s := range batch {
		p, _ := tree.Proof(i)
		s.Batch = &BatchProof{EvidenceID: fev.ID, LeafIndex: uint64(i), TreeSize: 3, Proof: p, Root: root}
		var ph []string
		for _, x := range p {
			ph = append(ph, hex.EncodeToString(x[:]))
		}
		proofs = append(proofs, ph)
		if err := VerifyReceipt(s, ev, fev, ReceiptCheck{Request: req, Response: resp, Nonce: s.Receipt.Nonce}); err != nil {
			t.Fatal(err)
		}
	}
	bn := BatchNonce(3, root)
	var lh []string
	for _, l := range leaves {
		lh = append(lh, hex.EncodeToString(l[:]))
	}
	files["fresh.bundle.json"] = fraw
	files["fresh.envelope.json"] = batch[1].AppendJSON(nil)
	files["batch.json"] = js(map[string]any{
		"signing_inputs":  inputs,
		"leaf_hashes":     lh,
		"root":            hex.EncodeToString(root[:]),
		"tree_size":       3,
		"batch_nonce":     hex.EncodeToString(bn[:]),
		"proofs":          proofs,
		"fresh_bundle_id": fev.ID,
	})
	return files
}

// streamDigestOfLines is §8's digest written out over the hashed lines.
func streamDigestOfLines(lines []string) [32]byte {
	b := append([]byte(DomainStream), 0)
	for _, l := range lines {
		b = binary.BigEndian.AppendUint32(b, uint32(len(l)))
		b = append(b, l...)
	}
	return sha256.Sum256(b)
}

func TestVectors(t *testing.T) {
	files := vectorFiles(t)
	if *update {
		if err := os.MkdirAll(vectorDir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range files {
			if err := os.WriteFile(filepath.Join(vectorDir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			got, err := readVector(name)
			if err != nil {
				t.Fatalf("%v (run go test -run TestVectors -update)", err)
			}
			if !bytes.Equal(got, files[name]) {
				t.Fatalf("golden file %s differs from what the code produces", name)
			}
		})
	}
	// The published files must also verify by themselves, read back from
	// disk, the way an independent verifier would use them.
	hdr, _ := readVector("receipt.header.txt")
	sr, err := ParseReceipt(bytes.TrimSpace(hdr))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := readVector("bundle.json")
	id, _ := readVector("bundle.id")
	if BundleID(raw) != strings.TrimSpace(string(id)) || sr.Receipt.EvidenceID != BundleID(raw) {
		t.Fatal("bundle id vector")
	}
	bnd, _ := DecodeBundle(raw)
	if !ed25519.Verify(bnd.SigningPub, sr.Receipt.AppendSigningInput(nil), sr.Signature) {
		t.Fatal("receipt vector signature")
	}
}
