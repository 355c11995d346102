package e2e

// The bus as a trust boundary (issue 8; docs/architecture.md, "Who may do
// what on the bus"): each test performs one attack a hostile worker or an
// unauthenticated neighbour could try against the running stack, with the
// project's own packages (simulated TEE, keeper, wire) and raw NATS
// clients, and checks that it fails and harms nobody else.

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/enclave"
	"github.com/teegate/teegate/enclave/sim"
	"github.com/teegate/teegate/gateway"
	"github.com/teegate/teegate/gateway/admission"
	"github.com/teegate/teegate/internal/enginetest"
	"github.com/teegate/teegate/internal/stack"
	"github.com/teegate/teegate/internal/stacktest"
	"github.com/teegate/teegate/worker"
	"github.com/teegate/teegate/worker/engine"
	"github.com/teegate/teegate/worker/engine/builtin"
	"github.com/teegate/teegate/worker/wire"
)

// hostile is a worker process run by an attacker: a simulated TEE under a
// root of its choosing, connected by its evidence like any worker.
type hostile struct {
	t    *testing.T
	s    *stack.Stack
	ep   *enclave.Epoch
	nkey string
	nc   *nats.Conn // the admitted (or quarantined) connection
	st   wire.AdmissionStatus
	errs chan error // the server's permission violations on nc
}

func newHostile(t *testing.T, s *stack.Stack, root *sim.Root, id string, models ...string) *hostile {
	t.Helper()
	att, err := sim.NewAttester(sim.Config{Root: root, GPUs: 1, QuoteDelay: sim.NoDelay})
	if err != nil {
		t.Fatal(err)
	}
	k, err := enclave.NewKeeper(t.Context(), enclave.KeeperConfig{Attester: att, Identity: attest.WorkerIdentity{ID: id, Models: models}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	h := &hostile{t: t, s: s, ep: k.Current(), errs: make(chan error, 64)}
	if h.nkey, err = wire.WorkerNKey(h.ep.SigningPub()); err != nil {
		t.Fatal(err)
	}
	q := h.dial()
	m, err := q.Request(wire.SubmitSubject(h.nkey), h.ep.Raw, 10*time.Second)
	if err != nil {
		t.Fatalf("submitting: %v", err)
	}
	if err := json.Unmarshal(m.Data, &h.st); err != nil {
		t.Fatal(err)
	}
	if !h.st.Allow {
		h.nc = q
		return h
	}
	q.Close()
	h.nc = h.dial()
	return h
}

func (h *hostile) dial() *nats.Conn {
	h.t.Helper()
	opts, err := wire.WorkerConnectOptions(h.ep.ID, h.ep.SigningPub(), h.ep.Sign)
	if err != nil {
		h.t.Fatal(err)
	}
	opts = append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case h.errs <- err:
		default:
		}
	}))
	nc, err := h.s.Server.ConnectBare("hostile", opts...)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(nc.Close)
	return nc
}

// violation waits for the server to refuse something on h.nc.
func (h *hostile) violation(what string) {
	h.t.Helper()
	_ = h.nc.Flush()
	select {
	case err := <-h.errs:
		if !errors.Is(err, nats.ErrPermissionViolation) && !strings.Contains(err.Error(), "Permissions Violation") {
			h.t.Fatalf("%s: %v, want a permissions violation", what, err)
		}
	case <-time.After(10 * time.Second):
		h.t.Fatalf("%s: the server did not refuse it", what)
	}
}

// register publishes h's registry record (under its own evidence id, the
// only key it may write), so the gateway routes its models to it.
func (h *hostile) register(models ...string) {
	h.t.Helper()
	js, _ := jetstream.New(h.nc)
	kv, err := js.KeyValue(h.t.Context(), wire.RegistryBucket)
	if err != nil {
		h.t.Fatal(err)
	}
	rec := wire.WorkerRecord{ID: h.ep.Bundle.Worker.ID, Version: wire.Version, EvidenceID: h.ep.ID, HeartbeatAt: time.Now(),
		MaxConcurrency: 64, Ready: true}
	for _, m := range models {
		rec.Models = append(rec.Models, wire.ModelInfo{ID: m})
	}
	b, _ := json.Marshal(rec)
	if _, err := kv.Put(h.t.Context(), h.ep.ID, b); err != nil {
		h.t.Fatal(err)
	}
	for _, m := range models {
		stacktest.Eventually(h.t, 10*time.Second, func() bool { _, ok := h.s.Dir.Model(m); return ok }, "the hostile model to be routed")
	}
}

// serve answers every request for model with reply.
func (h *hostile) serve(model string, reply func(req *nats.Msg)) {
	h.t.Helper()
	sub, err := h.nc.QueueSubscribe(wire.InferSubject(model), wire.QueueGroup, reply)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = sub.Unsubscribe() })
	// Its own direct subject too, where gateways send what they route to
	// its record.
	direct, err := h.nc.QueueSubscribe(wire.DirectSubject(model, h.ep.ID), wire.QueueGroup, reply)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = direct.Unsubscribe() })
	if err := h.nc.Flush(); err != nil {
		h.t.Fatal(err)
	}
}

func kindMsg(subject, kind string, seq int, data []byte) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Header.Set(wire.HdrKind, kind)
	m.Header.Set(wire.HdrSeq, strconv.Itoa(seq))
	m.Header.Set(wire.HdrStatus, "200")
	m.Data = data
	return m
}

const chunk = `{"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"forged"}}]}`

func chatBody(model string, stream bool) string {
	return fmt.Sprintf(`{"model":%q,"stream":%v,"messages":[{"role":"user","content":"hi"}]}`, model, stream)
}

// Attack 1: a worker names the server's JetStream API (or another worker's
// inbox) as its stream's ack subject, or as the control subject of its
// accept. The gateway publishes nothing there,
// refuses the stream, and every bucket and stream stays as it was.
func TestHostileConfusedDeputy(t *testing.T) {
	s := stacktest.Start(t)
	resp, _ := post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, chatBody("teegate-builtin", false))
	reqID := resp.Header.Get("x-request-id")
	stacktest.Eventually(t, 10*time.Second, func() bool {
		r, _, _ := send("GET", s.URL+"/v1/attestation/receipts/"+reqID, stacktest.APIKey, "")
		return r != nil && r.StatusCode == 200
	}, "the receipt to be stored")

	victim, _ := wire.WorkerNKey(s.Keepers[0].Current().SigningPub())
	h := newHostile(t, s, s.SimRoot, "evil", "evil-model")
	if !h.st.Allow {
		t.Fatalf("the hostile worker was not admitted: %+v", h.st)
	}
	targets := []string{
		"$JS.API.STREAM.PURGE.KV_" + gateway.ReceiptsBucket,
		"$JS.API.STREAM.DELETE.KV_" + wire.RegistryBucket,
		"$KV." + wire.RegistryBucket + "." + s.Keepers[0].Current().ID,
		wire.WorkerInboxPrefix(victim) + ".x",
	}
	var target, kind atomic.Value
	h.serve("evil-model", func(req *nats.Msg) {
		// The subject goes on a stream's first chunk, or on the accept
		// that names a request's control subject (probes, cancels).
		m := kindMsg(req.Reply, kind.Load().(string), 1, []byte(chunk))
		m.Header.Set(wire.HdrEvidenceID, h.ep.ID)
		m.Reply = target.Load().(string)
		_ = h.nc.PublishMsg(m)
	})
	h.register("evil-model")
	for _, tc := range []struct {
		kind   string
		stream bool
	}{{wire.KindData, true}, {wire.KindAccept, true}, {wire.KindAccept, false}} {
		kind.Store(tc.kind)
		for _, tg := range targets {
			target.Store(tg)
			resp, body := post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, chatBody("evil-model", tc.stream))
			if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "bad_worker_reply") {
				t.Fatalf("%s (stream %v) naming %s: %d %s", tc.kind, tc.stream, tg, resp.StatusCode, body)
			}
		}
	}
	// Nothing was purged or deleted.
	if r, b := get(t, s.URL+"/v1/attestation/receipts/"+reqID); r.StatusCode != 200 {
		t.Fatalf("receipt gone: %d %s", r.StatusCode, b)
	}
	if _, ok := s.Dir.Model("teegate-builtin"); !ok {
		t.Fatal("the registry lost the builtin model")
	}
	if r, b := post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, chatBody("teegate-builtin", false)); r.StatusCode != 200 {
		t.Fatalf("builtin after the attack: %d %s", r.StatusCode, b)
	}
}

// Attack 2: a worker for another model tries to watch or write the
// gateway's inboxes to break or forge the builtin model's streams. It may
// not subscribe to them, may publish only to the inboxes of requests it
// received, and the inboxes it sees are random, so every builtin stream
// finishes intact with its receipt.
func TestHostileStreamInjection(t *testing.T) {
	s := stacktest.Start(t)
	h := newHostile(t, s, s.SimRoot, "evil", "evil-model")
	var mu sync.Mutex
	var seen []string
	h.serve("evil-model", func(req *nats.Msg) {
		mu.Lock()
		seen = append(seen, req.Reply)
		mu.Unlock()
		m := kindMsg(req.Reply, wire.KindError, 1, []byte(`{"error":{"message":"no","type":"invalid_request_error","param":null,"code":null}}`))
		m.Header.Set(wire.HdrStatus, "400")
		_ = h.nc.PublishMsg(m)
	})
	h.register("evil-model")
	for range 3 {
		if r, _ := post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, chatBody("evil-model", false)); r.StatusCode != 400 {
			t.Fatalf("hostile model: %d", r.StatusCode)
		}
	}
	shape := regexp.MustCompile(`^_TGG\.[0-9a-f]{24}\.[0-9a-f]{32}$`)
	mu.Lock()
	inboxes := append([]string(nil), seen...)
	mu.Unlock()
	for _, in := range inboxes {
		if !shape.MatchString(in) {
			t.Fatalf("gateway inbox %q is not random under the gateway's prefix", in)
		}
	}
	prefix := inboxes[0][:strings.LastIndexByte(inboxes[0], '.')]

	// Watching the inboxes is refused.
	for _, subj := range []string{wire.GatewayInboxRoot + ".>", prefix + ".*", "_INBOX.>", ">"} {
		if _, err := h.nc.SubscribeSync(subj); err != nil {
			t.Fatal(err)
		}
		h.violation("subscribing to " + subj)
	}
	// So is writing to one it was not sent, while builtin streams run.
	var wg sync.WaitGroup
	results := make([]string, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, b, err := send("POST", s.URL+"/v1/chat/completions", stacktest.APIKey, chatBody("teegate-builtin", true))
			if err != nil {
				results[i] = err.Error()
				return
			}
			results[i] = string(b)
		}()
	}
	for i := range 8 {
		forged := kindMsg(prefix+"."+hex.EncodeToString([]byte(fmt.Sprintf("guess-%010d", i))), wire.KindEnd, 1, []byte(chunk))
		if err := h.nc.PublishMsg(forged); err != nil {
			t.Fatal(err)
		}
		h.violation("publishing into a gateway inbox it was not sent")
	}
	wg.Wait()
	for i, r := range results {
		if !strings.HasSuffix(r, "data: [DONE]\n\n") || !strings.Contains(r, attest.ChunkReceiptMember) || strings.Contains(r, "forged") || strings.Contains(r, `"error"`) {
			t.Fatalf("builtin stream %d was disturbed: %q", i, r)
		}
	}
}

// neighbour connects with a key of its own and any evidence id: it is
// quarantined (no evidence of that id is stored).
func neighbour(t *testing.T, s *stack.Stack) (*nats.Conn, string) {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	var id [32]byte
	_, _ = rand.Read(id[:])
	opts, err := wire.WorkerConnectOptions(hex.EncodeToString(id[:]), pub, func(b []byte) ([]byte, error) { return ed25519.Sign(priv, b), nil })
	if err != nil {
		t.Fatal(err)
	}
	nc, err := s.Server.ConnectBare("neighbour", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	nk, _ := wire.WorkerNKey(pub)
	return nc, nk
}

func bucketBytes(t *testing.T, s *stack.Stack, bucket string) uint64 {
	t.Helper()
	st, err := s.JS.Stream(t.Context(), "KV_"+bucket)
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().State.Bytes
}

// Attack 3: unauthenticated neighbours submit self-made evidence again and
// again. Submissions are limited per key before any verification, a bundle
// must bind the submitting key, a simulated root other than the stack's is
// refused, and refused evidence is stored nowhere: the evidence and
// decision buckets and the service's memory do not grow, while a
// legitimate worker is admitted and fresh mode answers during the flood.
func TestHostileFlood(t *testing.T) {
	s := stacktest.Start(t)
	rogue, err := sim.NewRoot()
	if err != nil {
		t.Fatal(err)
	}
	r := newHostile(t, s, rogue, "flood", "teegate-builtin") // one self-made bundle, ~tens of KB
	if r.st.Allow {
		t.Fatal("a rogue root was admitted")
	}
	evBefore, decBefore := bucketBytes(t, s, wire.EvidenceBucket), bucketBytes(t, s, admission.DecisionBucket)
	decisionsBefore := len(s.Admission.Decisions())

	var limited, answered atomic.Int64
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 10 && ctx.Err() == nil; n++ {
				nc, nk := neighbour(t, s)
				for range 8 { // burst past the per-key limit
					m, err := nc.Request(wire.SubmitSubject(nk), r.ep.Raw, 10*time.Second)
					if err != nil {
						continue
					}
					answered.Add(1)
					var st wire.AdmissionStatus
					if json.Unmarshal(m.Data, &st) == nil && strings.Contains(st.Error, "too many") {
						limited.Add(1)
					}
					if st.Allow {
						t.Error("a flood submission was admitted")
					}
				}
				nc.Close()
			}
		}()
	}
	// Meanwhile: a legitimate worker joins, and fresh mode answers.
	w, err := s.AddWorker(t.Context(), stacktest.Builtin(t, builtin.Config{}), worker.Config{}, "legit-during-flood")
	if err != nil || !w.Admission().Admitted {
		t.Fatalf("legitimate admission during the flood: %v %+v", err, w.Admission())
	}
	resp, body := post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, chatBody("teegate-builtin", false), "Teegate-Nonce", "flood-nonce")
	if resp.StatusCode != 200 || resp.Header.Get("Teegate-Receipt") == "" {
		t.Fatalf("fresh mode during the flood: %d %s", resp.StatusCode, body)
	}
	wg.Wait()
	cancel()
	if answered.Load() == 0 || limited.Load() == 0 {
		t.Fatalf("flood answered %d, rate-limited %d: the per-key limit did not bite", answered.Load(), limited.Load())
	}
	// Only the legitimate worker's evidence (and the fresh batch) was
	// stored: well under one self-made bundle per submission.
	evAfter, decAfter := bucketBytes(t, s, wire.EvidenceBucket), bucketBytes(t, s, admission.DecisionBucket)
	if grown := evAfter - evBefore; grown > 4*uint64(len(r.ep.Raw))+64<<10 {
		t.Fatalf("evidence bucket grew by %d bytes during the flood", grown)
	}
	if grown := decAfter - decBefore; grown > 64<<10 {
		t.Fatalf("decision bucket grew by %d bytes during the flood", grown)
	}
	if n := len(s.Admission.Decisions()); n > decisionsBefore+2 {
		t.Fatalf("%d decisions in memory after the flood, %d before", n, decisionsBefore)
	}
}

// Attack 4: a worker whose evidence names another worker's id tries to
// overwrite or delete that worker's registry record. Records are keyed by
// the evidence each connection was admitted on, and a connection may write
// only its own.
func TestHostileSquatting(t *testing.T) {
	s := stacktest.Start(t)
	victim := s.Workers[0]
	victimKey := s.Keepers[0].Current().ID
	h := newHostile(t, s, s.SimRoot, victim.ID(), "teegate-builtin")
	if !h.st.Allow {
		t.Fatalf("not admitted: %+v", h.st)
	}
	for _, key := range []string{victimKey, victim.ID()} {
		for _, op := range []string{"put", "delete"} {
			m := nats.NewMsg("$KV." + wire.RegistryBucket + "." + key)
			if op == "delete" {
				m.Header.Set("KV-Operation", "DEL")
			} else {
				m.Data = []byte(`{"id":"` + victim.ID() + `","models":[]}`)
			}
			if err := h.nc.PublishMsg(m); err != nil {
				t.Fatal(err)
			}
			h.violation(op + " of the record " + key)
		}
	}
	// Nor may it take the victim's direct requests (wire.DirectSubject):
	// only its own direct subjects are granted.
	for _, subj := range []string{wire.DirectSubject("teegate-builtin", victimKey), wire.DirectSubject("teegate-builtin", "*"), wire.InferWildcard} {
		if _, err := h.nc.SubscribeSync(subj); err != nil {
			t.Fatal(err)
		}
		h.violation("subscribing to " + subj)
	}
	kv, err := s.JS.KeyValue(t.Context(), wire.RegistryBucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(t.Context(), victimKey)
	if err != nil || !strings.Contains(string(e.Value()), "teegate-builtin") {
		t.Fatalf("the victim's record: %v", err)
	}
	if r, b := post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, chatBody("teegate-builtin", false)); r.StatusCode != 200 {
		t.Fatalf("after the attempt: %d %s", r.StatusCode, b)
	}
}

// Attack 5: a worker overwrites another's evidence. Workers may not write
// the evidence bucket at all; what the admission service stores verified;
// and the gateway serves only bytes that hash to the id asked for, so even
// a bucket vandalized by someone with full access serves no forgery.
func TestHostileEvidenceVandalism(t *testing.T) {
	s := stacktest.Start(t)
	id := s.Keepers[0].Current().ID
	h := newHostile(t, s, s.SimRoot, "evil", "evil-model")
	m := nats.NewMsg("$KV." + wire.EvidenceBucket + "." + id)
	m.Data = []byte(`{"forged":true}`)
	if err := h.nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	h.violation("writing another's evidence")
	// Through the admission service: junk is not stored.
	rep, err := h.nc.Request(wire.EvidenceSubject(h.nkey), []byte(`{"forged":true}`), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var st wire.AdmissionStatus
	if _ = json.Unmarshal(rep.Data, &st); st.Error == "" {
		t.Fatalf("junk evidence accepted: %s", rep.Data)
	}
	resp, body := get(t, s.URL+"/v1/attestation/evidence/"+id)
	if resp.StatusCode != 200 || attest.BundleID(body) != id || !strings.Contains(resp.Header.Get("Cache-Control"), "immutable") {
		t.Fatalf("evidence: %d, hash %s", resp.StatusCode, attest.BundleID(body))
	}
	// Vandalized by a full-permission writer: not served.
	if _, err := s.Evidence.Put(t.Context(), id, []byte(`{"forged":true}`)); err != nil {
		t.Fatal(err)
	}
	if resp, body := get(t, s.URL+"/v1/attestation/evidence/"+id); resp.StatusCode != http.StatusNotFound || strings.Contains(string(body), "forged") {
		t.Fatalf("vandalized evidence served: %d %s", resp.StatusCode, body)
	}
}

// Attack 6a: under the dev policy, a local process with a simulated TEE of
// its own making is refused (only the stack's own root is pinned) and
// cannot subscribe to any model; the operator can add its root.
func TestHostileRogueRootUnderDev(t *testing.T) {
	rogue, err := sim.NewRoot()
	if err != nil {
		t.Fatal(err)
	}
	s := stacktest.Start(t)
	h := newHostile(t, s, rogue, "rogue", "teegate-builtin")
	if h.st.Allow || !strings.Contains(strings.Join(h.st.Reasons, " "), "simulated") {
		t.Fatalf("rogue root: %+v", h.st)
	}
	if _, err := h.nc.SubscribeSync(wire.InferSubject("teegate-builtin")); err != nil {
		t.Fatal(err)
	}
	h.violation("a rogue worker subscribing to prompts")

	trusted := stacktest.Start(t, func(c *stack.Config) { c.TrustedSimRoots = [][]byte{rogue.Cert.Raw} })
	if h := newHostile(t, trusted, rogue, "added", "teegate-builtin"); !h.st.Allow {
		t.Fatalf("a root the operator added: %+v", h.st)
	}
}

// Attack 6b and 8 (worker side): successes without a receipt, with a
// receipt for another request, with an oversized receipt header or a
// content type a browser would render, are turned into clean errors.
func TestHostileReceiptlessSuccess(t *testing.T) {
	s := stacktest.Start(t)
	h := newHostile(t, s, s.SimRoot, "evil", "evil-model")
	var mode atomic.Value
	h.serve("evil-model", func(req *nats.Msg) {
		switch mode.Load().(string) {
		case "stream-no-receipt":
			d := kindMsg(req.Reply, wire.KindData, 1, []byte(chunk))
			d.Header.Set(wire.HdrEvidenceID, h.ep.ID)
			d.Reply = h.nc.NewInbox()
			_ = h.nc.PublishMsg(d)
			_ = h.nc.PublishMsg(kindMsg(req.Reply, wire.KindEnd, 2, nil))
			return
		case "stream-other-receipt":
			d := kindMsg(req.Reply, wire.KindData, 1, []byte(chunk))
			d.Header.Set(wire.HdrEvidenceID, h.ep.ID)
			d.Reply = h.nc.NewInbox()
			_ = h.nc.PublishMsg(d)
			_ = h.nc.PublishMsg(kindMsg(req.Reply, wire.KindEnd, 2, []byte(`{"choices":[],"teegate_receipt":{"receipt":{}}}`)))
			return
		}
		m := kindMsg(req.Reply, wire.KindResponse, 0, []byte(`{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"forged"}}]}`))
		m.Header.Del(wire.HdrSeq)
		m.Header.Set(wire.HdrContentType, "application/json")
		switch mode.Load().(string) {
		case "huge-receipt":
			m.Header.Set(wire.HdrReceipt, strings.Repeat("A", 200<<10))
		case "html":
			m.Header.Set(wire.HdrContentType, "text/html")
		case "garbage-receipt":
			m.Header.Set(wire.HdrReceipt, "bm90LWEtcmVjZWlwdA")
		}
		_ = req.RespondMsg(m)
	})
	h.register("evil-model")
	for _, tc := range []struct{ mode, code string }{
		{"none", "missing_receipt"},
		{"garbage-receipt", "missing_receipt"},
		{"huge-receipt", "bad_worker_reply"},
		{"html", "bad_worker_reply"},
	} {
		mode.Store(tc.mode)
		resp, body := post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, chatBody("evil-model", false))
		if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), tc.code) || strings.Contains(string(body), "forged") ||
			resp.Header.Get("Content-Type") != "application/json" || len(resp.Header.Get("Teegate-Receipt")) > 0 {
			t.Fatalf("%s: %d %s %v", tc.mode, resp.StatusCode, body, resp.Header)
		}
	}
	for _, m := range []string{"stream-no-receipt", "stream-other-receipt"} {
		mode.Store(m)
		_, body := post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, chatBody("evil-model", true))
		// The chunks went out before the end without a receipt: the stream
		// ends with the error event, then [DONE] (a clean end that is not
		// a complete answer).
		if !strings.HasSuffix(string(body), `"code":"missing_receipt"}}`+"\n\ndata: [DONE]\n\n") {
			t.Fatalf("%s: %q", m, body)
		}
	}
}

// Attack 8 (client side): oversized headers and URLs, conflicting
// Content-Length and non-UTF-8 nonces get OpenAI-shaped 431, 414 and 400.
func TestHostileHTTPHygiene(t *testing.T) {
	s := stacktest.Start(t)
	addr := strings.TrimPrefix(s.URL, "http://")
	raw := func(req string) (*http.Response, string) {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	auth := "Authorization: Bearer " + stacktest.APIKey + "\r\n"
	body := chatBody("teegate-builtin", false)
	for _, tc := range []struct {
		name, req string
		status    int
		code      string
	}{
		{"oversized headers", "GET /v1/models HTTP/1.1\r\nHost: x\r\n" + auth + "X-Big: " + strings.Repeat("a", 40<<10) + "\r\n\r\n", 431, "headers_too_large"},
		{"oversized URL", "GET /v1/models?q=" + strings.Repeat("a", 10<<10) + " HTTP/1.1\r\nHost: x\r\n" + auth + "\r\n", 414, "url_too_long"},
		{"conflicting Content-Length", fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\nContent-Length: %d\r\n\r\n%s", auth, len(body)+5, len(body), body), 400, ""},
		{"non-UTF-8 nonce", fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\nTeegate-Nonce: \xff\xfe\r\nContent-Length: %d\r\n\r\n%s", auth, len(body), body), 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := raw(tc.req)
			var e struct {
				Error struct {
					Message string  `json:"message"`
					Type    string  `json:"type"`
					Code    *string `json:"code"`
				} `json:"error"`
			}
			if resp.StatusCode != tc.status || json.Unmarshal([]byte(b), &e) != nil || e.Error.Message == "" {
				t.Fatalf("%d %s", resp.StatusCode, b)
			}
			if tc.code != "" && (e.Error.Code == nil || *e.Error.Code != tc.code) {
				t.Fatalf("code %v, want %s", e.Error.Code, tc.code)
			}
		})
	}
}

var _ engine.Engine = (*enginetest.Gated)(nil)
