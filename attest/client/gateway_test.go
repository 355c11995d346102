package client

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/enclave"
	"github.com/teegate/teegate/enclave/sim"
)

// fakeGateway answers OpenAI calls the way teegate's gateway and worker do,
// with the real simulated TEE, the real Keeper and attest's receipts: the
// bytes it sends are the bytes it signs.
type fakeGateway struct {
	t      testing.TB
	keeper *enclave.Keeper
	root   *sim.Root
	srv    *httptest.Server
	// forged, when set, signs with a key the TEE never bound (see forge).
	forged *forgery
	// shift moves the created time of every receipt it signs, as a bent
	// keeper would: signing with the epoch key around the keeper's check
	// that a receipt's date lies inside the epoch.
	shift time.Duration

	mu      sync.Mutex
	bundles map[string][]byte
	n       atomic.Int64
	fetches atomic.Int64
}

type forgery struct {
	key ed25519.PrivateKey
	raw []byte
	id  string
}

const completionText = "hello from the enclave"

func newFakeGateway(t testing.TB, gpus int) *fakeGateway {
	t.Helper()
	root, err := sim.NewRoot()
	if err != nil {
		t.Fatal(err)
	}
	a, err := sim.NewAttester(sim.Config{Root: root, GPUs: gpus, QuoteDelay: sim.NoDelay})
	if err != nil {
		t.Fatal(err)
	}
	k, err := enclave.NewKeeper(context.Background(), enclave.KeeperConfig{
		Attester: a,
		Identity: attest.WorkerIdentity{ID: "w-test", Models: []string{"builtin"}},
		Batch:    enclave.BatchConfig{Window: time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	g := &fakeGateway{t: t, keeper: k, root: root, bundles: map[string][]byte{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", g.chat)
	mux.HandleFunc("POST /v1/embeddings", g.embeddings)
	mux.HandleFunc("GET /v1/attestation/evidence/{id}", g.evidence)
	g.srv = httptest.NewServer(mux)
	t.Cleanup(func() { g.srv.Close(); k.Close() })
	return g
}

// forge makes the gateway sign with a fresh key in a bundle that reuses the
// epoch's genuine evidence: the bundle is self-consistent and self-signed,
// but its key is not the one the quote binds.
func (g *fakeGateway) forge() {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	b := *g.keeper.Current().Bundle
	b.SigningPub = key.Public().(ed25519.PublicKey)
	b.Signature = ed25519.Sign(key, b.SigningInput())
	raw, err := b.Encode()
	if err != nil {
		g.t.Fatal(err)
	}
	g.forged = &forgery{key: key, raw: raw, id: attest.BundleID(raw)}
	g.mu.Lock()
	g.bundles[g.forged.id] = raw
	g.mu.Unlock()
}

func (g *fakeGateway) evidence(w http.ResponseWriter, r *http.Request) {
	g.fetches.Add(1)
	id := r.PathValue("id")
	g.mu.Lock()
	raw, ok := g.bundles[id]
	g.mu.Unlock()
	if !ok {
		if e, found := g.keeper.Lookup(id); found {
			raw, ok = e.Raw, true
		}
	}
	if !ok {
		http.Error(w, `{"error":{"message":"no such evidence"}}`, http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(raw)
}

// sign signs a receipt as the worker does: fresh mode through the batcher
// when the request carried a nonce. It returns the bundle to inline.
func (g *fakeGateway) sign(ctx context.Context, rec *attest.Receipt) (*attest.SignedReceipt, []byte) {
	if f := g.forged; f != nil {
		rec.EvidenceID = f.id
		var buf [512]byte
		return &attest.SignedReceipt{Receipt: *rec, Signature: ed25519.Sign(f.key, rec.AppendSigningInput(buf[:0]))}, f.raw
	}
	if g.shift != 0 {
		e := g.keeper.Current()
		rec.EvidenceID = e.ID
		var buf [512]byte
		sig, err := e.Sign(rec.AppendSigningInput(buf[:0]))
		if err != nil {
			g.t.Error(err)
			return nil, nil
		}
		return &attest.SignedReceipt{Receipt: *rec, Signature: sig}, e.Raw
	}
	if rec.Nonce != "" {
		sr, fresh, err := g.keeper.SignFresh(ctx, rec)
		if err != nil {
			g.t.Error(err)
			return nil, nil
		}
		g.mu.Lock()
		g.bundles[sr.Batch.EvidenceID] = fresh
		g.mu.Unlock()
		return sr, fresh
	}
	sr, err := g.keeper.SignReceipt(rec)
	if err != nil {
		g.t.Error(err)
		return nil, nil
	}
	return sr, g.keeper.Current().Raw
}

func (g *fakeGateway) receipt(r *http.Request, body []byte, model string, stream bool) attest.Receipt {
	return attest.Receipt{
		Version:       attest.ReceiptVersion,
		RequestID:     fmt.Sprintf("req-%d", g.n.Add(1)),
		Model:         model,
		RequestSHA256: sha256.Sum256(body),
		Stream:        stream,
		Nonce:         r.Header.Get(HeaderNonce),
		Created:       time.Now().Add(g.shift).UTC().Truncate(time.Second),
		Usage:         attest.Usage{PromptTokens: 3, CompletionTokens: 5, TotalTokens: 8},
	}
}

func (g *fakeGateway) chat(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req struct {
		Model  string `json:"model"`
		Stream bool   `json:"stream"`
	}
	if json.Unmarshal(body, &req) != nil || req.Model != "builtin" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":{"message":"unknown model","type":"invalid_request_error","code":"model_not_found"}}`)
		return
	}
	inline := r.Header.Get(HeaderInlineEvidence) != ""
	rec := g.receipt(r, body, req.Model, req.Stream)
	if !req.Stream {
		resp := fmt.Appendf(nil, `{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"builtin","choices":[{"index":0,"message":{"role":"assistant","content":%q},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}`, completionText)
		rec.ResponseSHA256 = sha256.Sum256(resp)
		sr, ev := g.sign(r.Context(), &rec)
		if sr == nil {
			http.Error(w, "signing failed", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set(attest.HeaderReceipt, sr.HeaderValue())
		w.Header().Set(attest.HeaderEvidenceID, sr.Receipt.EvidenceID)
		if inline {
			w.Header().Set(HeaderEvidence, base64.RawURLEncoding.EncodeToString(ev))
		}
		w.Write(resp)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	fl, _ := w.(http.Flusher)
	h := attest.NewStreamHasher()
	words := []string{"hello", " from", " the", " enclave"}
	for i, word := range words {
		finish := "null"
		if i == len(words)-1 {
			finish = `"stop"`
		}
		p := fmt.Appendf(nil, `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"builtin","choices":[{"index":0,"delta":{"content":%q},"finish_reason":%s}]}`, word, finish)
		h.Event("", p)
		w.Write(attest.AppendSSEEvent(nil, "", p))
		if fl != nil {
			fl.Flush()
		}
	}
	rec.ResponseSHA256 = h.Sum()
	sr, ev := g.sign(r.Context(), &rec)
	if sr == nil {
		return
	}
	if !inline {
		ev = nil
	}
	chunk := attest.AppendReceiptChunk(nil, attest.ChunkMeta{ID: "chatcmpl-1", Object: "chat.completion.chunk", Created: 1700000000, Model: "builtin"}, sr, ev)
	fmt.Fprintf(w, "data: %s\n\ndata: [DONE]\n\n", chunk)
}

func (g *fakeGateway) embeddings(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rec := g.receipt(r, body, requestModel(body), false)
	resp := []byte(`{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.25,-0.5]}],"model":"builtin","usage":{"prompt_tokens":3,"total_tokens":3}}`)
	rec.ResponseSHA256 = sha256.Sum256(resp)
	sr, _ := g.sign(r.Context(), &rec)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set(attest.HeaderReceipt, sr.HeaderValue())
	w.Write(resp)
}
