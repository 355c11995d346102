package e2e

// Failover and drain (issue 10): a request whose worker dies before the
// first byte of its answer completes on another worker with a receipt that
// verifies; one whose worker dies after it ends with an OpenAI error event
// and [DONE]; a late answer of a worker the gateway gave up on never
// reaches the client; a draining worker fails none of its requests.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/gateway"
	"github.com/teegate/teegate/internal/enginetest"
	"github.com/teegate/teegate/internal/stack"
	"github.com/teegate/teegate/internal/stacktest"
	"github.com/teegate/teegate/worker"
	"github.com/teegate/teegate/worker/engine"
	"github.com/teegate/teegate/worker/engine/builtin"
	"github.com/teegate/teegate/worker/wire"
)

// holding wraps an engine: every call waits in Do, before any byte of its
// answer exists, for a token on gate (or its context's end).
type holding struct {
	engine.Engine
	gate      chan struct{}
	entered   atomic.Int64
	cancelled atomic.Int64
	calls     atomic.Int64
}

func newHolding(t *testing.T, model string) *holding {
	return &holding{Engine: stacktest.Builtin(t, builtin.Config{ModelID: model}), gate: make(chan struct{}, 1024)}
}

func (h *holding) Do(ctx context.Context, call engine.Call) (*engine.Result, error) {
	h.entered.Add(1)
	select {
	case <-h.gate:
	case <-ctx.Done():
		h.cancelled.Add(1)
		return nil, ctx.Err()
	}
	h.calls.Add(1)
	return h.Engine.Do(ctx, call)
}

// counting counts the calls an engine answers.
type counting struct {
	engine.Engine
	calls atomic.Int64
}

func (c *counting) Do(ctx context.Context, call engine.Call) (*engine.Result, error) {
	c.calls.Add(1)
	return c.Engine.Do(ctx, call)
}

// answer is one client request's outcome.
type answer struct {
	stream bool
	body   string // the request
	status int
	hdr    http.Header
	raw    []byte
	err    error
}

func ask(base, model string, stream bool, n int) answer {
	body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"Tell me about rivers %d."}],"max_tokens":8,"stream":%v}`, model, n, stream)
	a := answer{stream: stream, body: body}
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+stacktest.APIKey)
	resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
	if err != nil {
		a.err = err
		return a
	}
	defer resp.Body.Close()
	a.status, a.hdr = resp.StatusCode, resp.Header
	a.raw, a.err = io.ReadAll(resp.Body)
	return a
}

// verified checks that a is a complete answer for its own request, from
// worker wantWorker ("" for any), whose receipt verifies.
func verified(t *testing.T, s *stack.Stack, v *attest.Verifier, a answer, wantWorker string) {
	t.Helper()
	if a.err != nil || a.status != 200 {
		t.Fatalf("status %d err %v: %s", a.status, a.err, a.raw)
	}
	if w := a.hdr.Get("Teegate-Worker"); wantWorker != "" && w != wantWorker {
		t.Fatalf("answered by %q, want %q", w, wantWorker)
	}
	reqID := a.hdr.Get("x-request-id")
	var sr *attest.SignedReceipt
	check := attest.ReceiptCheck{Request: []byte(a.body)}
	if a.stream {
		res, err := attest.DigestSSE(bytes.NewReader(a.raw))
		if err != nil || res.Receipt == nil {
			t.Fatalf("stream without a receipt (%v): %s", err, a.raw)
		}
		if !bytes.HasSuffix(a.raw, []byte("data: [DONE]\n\n")) || bytes.Contains(a.raw, []byte(`"error"`)) {
			t.Fatalf("stream not complete: %s", a.raw)
		}
		sr, check.ResponseDigest = res.Receipt, &res.Digest
	} else {
		var err error
		if sr, err = attest.ParseReceipt([]byte(a.hdr.Get("Teegate-Receipt"))); err != nil {
			t.Fatalf("no receipt: %v", err)
		}
		check.Response = a.raw
	}
	if sr.Receipt.RequestID != reqID || sr.Receipt.Stream != a.stream {
		t.Fatalf("receipt for %q (stream %v), request %q", sr.Receipt.RequestID, sr.Receipt.Stream, reqID)
	}
	er, evidence := get(t, s.URL+"/v1/attestation/evidence/"+sr.Receipt.EvidenceID)
	if er.StatusCode != 200 {
		t.Fatalf("evidence: %d", er.StatusCode)
	}
	if _, err := v.Receipt(context.Background(), sr, check, evidence, nil); err != nil {
		t.Fatalf("receipt does not verify: %v", err)
	}
}

// TestFailoverBeforeFirstByte: requests held by a worker that is killed
// before it sent a byte complete on the other worker, each once, with a
// receipt that verifies; the killed worker answers none. Requests sent
// after the kill, while its record still lives, go to the other one too.
func TestFailoverBeforeFirstByte(t *testing.T) {
	s := stacktest.Start(t, withMetrics(prometheus.NewRegistry()), func(c *stack.Config) { c.Gateway.DispatchProbe = 50 * time.Millisecond })
	ctx := t.Context()
	held := newHolding(t, "fo")
	wa, err := s.AddWorker(ctx, held, worker.Config{}, "fo-a")
	if err != nil {
		t.Fatal(err)
	}
	// Only fo-a serves "fo" now: these requests are all its.
	const first = 6
	var wg sync.WaitGroup
	answers := make(chan answer, 64)
	for i := range first {
		wg.Add(1)
		go func() { defer wg.Done(); answers <- ask(s.URL, "fo", i%2 == 1, i) }()
	}
	stacktest.Eventually(t, 30*time.Second, func() bool { return held.entered.Load() == first }, "fo-a to hold every request")
	plain := &counting{Engine: stacktest.Builtin(t, builtin.Config{ModelID: "fo"})}
	if _, err := s.AddWorker(ctx, plain, worker.Config{}, "fo-b"); err != nil {
		t.Fatal(err)
	}
	stacktest.Eventually(t, 30*time.Second, func() bool { return len(s.Dir.Replicas("fo")) == 2 }, "both replicas listed")
	wa.Kill()
	// fo-a's record outlives it: new requests meet its direct subject
	// without a subscriber and go to fo-b.
	const later = 6
	for i := range later {
		wg.Add(1)
		go func() { defer wg.Done(); answers <- ask(s.URL, "fo", i%2 == 0, first+i) }()
	}
	wg.Wait()
	close(answers)
	v := simVerifier()
	n := 0
	for a := range answers {
		verified(t, s, v, a, "fo-b")
		n++
	}
	if n != first+later || plain.calls.Load() != first+later || held.calls.Load() != 0 {
		t.Fatalf("%d answers; fo-b's engine answered %d calls, fo-a's %d", n, plain.calls.Load(), held.calls.Load())
	}
	// Each held request was lost with its worker once and sent again.
	fams, _ := scrape(t, s.URL)
	if n := value(fams, gateway.MetricRedispatched, map[string]string{"reason": "lost"}); n != first {
		t.Fatalf("%s{reason=lost} = %v, want %d", gateway.MetricRedispatched, n, first)
	}
	// The killed worker's generations were abandoned, not finished.
	stacktest.Eventually(t, 10*time.Second, func() bool { return held.cancelled.Load() == first }, "fo-a's calls to end")
}

// TestFailoverLateAnswerDropped: a worker that takes a request and sends
// no accept is given up after AcceptTimeout; the request completes on
// another worker, and the first one's late answer (sent to the request's
// first inbox once the second worker holds it) never reaches the client.
func TestFailoverLateAnswerDropped(t *testing.T) {
	s := stacktest.Start(t, func(c *stack.Config) { c.Gateway.AcceptTimeout = 300 * time.Millisecond })
	ctx := t.Context()
	const model = "late"
	held := newHolding(t, model)
	if _, err := s.AddWorker(ctx, held, worker.Config{MaxConcurrency: 2, MaxQueue: 1}, "late-b"); err != nil {
		t.Fatal(err)
	}
	// The hostile worker, admitted by the stack's own simulated root.
	h := newHostile(t, s, s.SimRoot, "late-h", model)
	if !h.st.Allow {
		t.Fatalf("hostile not admitted: %v", h.st.Reasons)
	}
	inboxes := make(chan string, 4)
	sub, err := h.nc.Subscribe(wire.DirectSubject(model, h.ep.ID), func(m *nats.Msg) { inboxes <- m.Reply })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := h.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	v := simVerifier()
	for round, stream := range []bool{false, true} {
		// An occupier holds one of late-b's two slots, so the gateway
		// prefers the hostile replica (all its capacity spare) next.
		occupied := int64(2 * round)
		occ := make(chan answer, 1)
		go func() { occ <- ask(s.URL, model, false, 100+round) }()
		stacktest.Eventually(t, 30*time.Second, func() bool { return held.entered.Load() == occupied+1 }, "the occupier to be held")
		rec := wire.WorkerRecord{ID: "late-h", Version: wire.Version, EvidenceID: h.ep.ID, MaxConcurrency: 8, Ready: true,
			HeartbeatAt: time.Now(), Models: []wire.ModelInfo{{ID: model}}}
		js, err := jetstream.New(h.nc)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(rec)
		kv, err := js.KeyValue(ctx, wire.RegistryBucket)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, h.ep.ID, b); err != nil {
			t.Fatal(err)
		}
		stacktest.Eventually(t, 10*time.Second, func() bool { return len(s.Dir.Replicas(model)) == 2 }, "the hostile replica listed")
		res := make(chan answer, 1)
		go func() { res <- ask(s.URL, model, stream, round) }()
		var inbox string
		select {
		case inbox = <-inboxes:
		case a := <-res:
			t.Fatalf("answered without the hostile replica: %d %s", a.status, a.raw)
		}
		// No accept: after AcceptTimeout the request goes to late-b.
		stacktest.Eventually(t, 30*time.Second, func() bool { return held.entered.Load() == occupied+2 }, "the request to be dispatched again")
		// Now the first worker answers, late, to the first inbox.
		late := nats.NewMsg(inbox)
		if stream {
			late.Header.Set(wire.HdrKind, wire.KindData)
			late.Header.Set(wire.HdrSeq, "1")
			late.Data = []byte(`{"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"LATE"}}]}`)
		} else {
			late.Header.Set(wire.HdrKind, wire.KindResponse)
			late.Header.Set(wire.HdrStatus, "200")
			late.Data = []byte(`{"object":"chat.completion","choices":[{"message":{"content":"LATE"}}]}`)
		}
		if err := h.nc.PublishMsg(late); err != nil {
			t.Fatal(err)
		}
		if err := h.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		held.gate <- struct{}{}
		held.gate <- struct{}{}
		a := <-res
		if bytes.Contains(a.raw, []byte("LATE")) {
			t.Fatalf("round %d: the late answer reached the client: %s", round, a.raw)
		}
		verified(t, s, v, a, "late-b")
		verified(t, s, v, <-occ, "late-b")
		// The hostile record goes, for the next round to start alike.
		if err := kv.Delete(ctx, h.ep.ID); err != nil {
			t.Fatal(err)
		}
		stacktest.Eventually(t, 10*time.Second, func() bool { return len(s.Dir.Replicas(model)) == 1 }, "the hostile replica gone")
	}
}

// logSignal is a slog handler that closes seen at the first record whose
// message is msg, and drops every record.
type logSignal struct {
	msg  string
	once sync.Once
	seen chan struct{}
}

func (h *logSignal) Enabled(context.Context, slog.Level) bool { return true }
func (h *logSignal) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.once.Do(func() { close(h.seen) })
	}
	return nil
}
func (h *logSignal) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logSignal) WithGroup(string) slog.Handler      { return h }

// TestLateAcceptOnlyReplica: a request whose only replica answers after
// AcceptTimeout (a live worker reading its requests late under load) is
// not given up: with nowhere to fail over to, the gateway waits on and
// relays that replica's answer. It is neither refused (503 no_capacity,
// as when it failed over to nowhere) nor sent to the replica twice.
func TestLateAcceptOnlyReplica(t *testing.T) {
	waiting := &logSignal{msg: "no accept yet from the only replica that may serve the request; waiting on", seen: make(chan struct{})}
	s := stacktest.Start(t, func(c *stack.Config) {
		c.Gateway.AcceptTimeout = 50 * time.Millisecond
		c.Logger = slog.New(waiting)
	})
	ctx := t.Context()
	const model = "late-only"
	h := newHostile(t, s, s.SimRoot, "late-o", model)
	if !h.st.Allow {
		t.Fatalf("hostile not admitted: %v", h.st.Reasons)
	}
	inboxes := make(chan string, 4)
	sub, err := h.nc.Subscribe(wire.DirectSubject(model, h.ep.ID), func(m *nats.Msg) { inboxes <- m.Reply })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	js, err := jetstream.New(h.nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, wire.RegistryBucket)
	if err != nil {
		t.Fatal(err)
	}
	rec := wire.WorkerRecord{ID: "late-o", Version: wire.Version, EvidenceID: h.ep.ID, MaxConcurrency: 8, Ready: true,
		HeartbeatAt: time.Now(), Models: []wire.ModelInfo{{ID: model}}}
	b, _ := json.Marshal(rec)
	if _, err := kv.Put(ctx, h.ep.ID, b); err != nil {
		t.Fatal(err)
	}
	stacktest.Eventually(t, 10*time.Second, func() bool { return len(s.Dir.Replicas(model)) == 1 }, "the replica listed")
	res := make(chan answer, 1)
	go func() { res <- ask(s.URL, model, false, 0) }()
	var inbox string
	select {
	case inbox = <-inboxes:
	case a := <-res:
		t.Fatalf("answered without the replica: %d %s", a.status, a.raw)
	}
	// The accept is late: the gateway says it waits on.
	select {
	case <-waiting.seen:
	case a := <-res:
		t.Fatalf("given up before the replica answered: %d %s", a.status, a.raw)
	}
	e := wire.Errorf(wire.CodeBad, "The late replica's own answer.")
	r := wire.ErrorReply("late-o", e)
	m := nats.NewMsg(inbox)
	m.Header, m.Data = r.Header(), r.Body
	if err := h.nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	a := <-res
	if a.err != nil || a.status != e.Status || !bytes.Contains(a.raw, []byte("late replica")) {
		t.Fatalf("got %d %v %s, want the late replica's %d", a.status, a.err, a.raw, e.Status)
	}
	select {
	case again := <-inboxes:
		t.Fatalf("the request was sent to the replica again (inbox %s)", again)
	default:
	}
}

// TestBusyOnlyReplica: a request whose only replica answers busy is not
// refused at once with nothing left to try: it is sent to that replica
// again once a slot may have freed (here: the registry changes), and
// relays its answer; a replica busy on every one of Attempts tries ends
// in 503 no_capacity.
func TestBusyOnlyReplica(t *testing.T) {
	s := stacktest.Start(t)
	ctx := t.Context()
	const model = "busy-only"
	h := newHostile(t, s, s.SimRoot, "busy-o", model)
	if !h.st.Allow {
		t.Fatalf("hostile not admitted: %v", h.st.Reasons)
	}
	inboxes := make(chan string, 8)
	sub, err := h.nc.Subscribe(wire.DirectSubject(model, h.ep.ID), func(m *nats.Msg) { inboxes <- m.Reply })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	js, err := jetstream.New(h.nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, wire.RegistryBucket)
	if err != nil {
		t.Fatal(err)
	}
	heartbeat := func() {
		rec := wire.WorkerRecord{ID: "busy-o", Version: wire.Version, EvidenceID: h.ep.ID, MaxConcurrency: 8, Ready: true,
			HeartbeatAt: time.Now(), Models: []wire.ModelInfo{{ID: model}}}
		b, _ := json.Marshal(rec)
		if _, err := kv.Put(ctx, h.ep.ID, b); err != nil {
			t.Error(err)
		}
	}
	heartbeat()
	stacktest.Eventually(t, 10*time.Second, func() bool { return len(s.Dir.Replicas(model)) == 1 }, "the replica listed")
	answerWith := func(inbox string, e *wire.Error) {
		r := wire.ErrorReply("busy-o", e)
		m := nats.NewMsg(inbox)
		m.Header, m.Data = r.Header(), r.Body
		if err := h.nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	// next returns the next delivery of the request, heartbeating (a
	// registry change, which may mean a freed slot) until it comes.
	next := func(res chan answer) string {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case inbox := <-inboxes:
				return inbox
			case a := <-res:
				t.Fatalf("answered before the replica did: %d %s", a.status, a.raw)
			case <-tick.C:
				heartbeat()
			}
		}
	}
	busy := wire.Errorf(wire.CodeBusy, "The worker is at capacity. Retry shortly.")
	res := make(chan answer, 1)
	go func() { res <- ask(s.URL, model, false, 0) }()
	answerWith(next(res), busy)
	answerWith(next(res), busy)
	own := wire.Errorf(wire.CodeBad, "The busy replica's own answer.")
	answerWith(next(res), own)
	if a := <-res; a.err != nil || a.status != own.Status || !bytes.Contains(a.raw, []byte("busy replica")) {
		t.Fatalf("got %d %v %s, want the replica's own %d", a.status, a.err, a.raw, own.Status)
	}
	// Busy on each of the Attempts (3) tries: refused.
	go func() { res <- ask(s.URL, model, false, 1) }()
	for range 3 {
		answerWith(next(res), busy)
	}
	if a := <-res; a.status != 503 || !bytes.Contains(a.raw, []byte("no_capacity")) {
		t.Fatalf("busy three times: got %d %s, want 503 no_capacity", a.status, a.raw)
	}
	select {
	case extra := <-inboxes:
		t.Fatalf("a fourth try (inbox %s)", extra)
	default:
	}
}

// TestStreamWorkerKilledAfterFirstByte: a stream whose worker is killed
// after its first chunk ends with a worker_gone error event, then [DONE],
// and carries no receipt; it is not dispatched again.
func TestStreamWorkerKilledAfterFirstByte(t *testing.T) {
	s := stacktest.Start(t, func(c *stack.Config) { c.Gateway.StreamProbe = 100 * time.Millisecond })
	eng := enginetest.NewGated("kb")
	w, err := s.AddWorker(t.Context(), eng, worker.Config{}, "kb-a")
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"kb","messages":[{"role":"user","content":"hi"}],"stream":true}`))
	req.Header.Set("Authorization", "Bearer "+stacktest.APIKey)
	got := make(chan *http.Response, 1)
	go func() {
		resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
		if err != nil {
			close(got)
			return
		}
		got <- resp
	}()
	eng.Feed <- []byte(`{"id":"c1","object":"chat.completion.chunk","created":1,"model":"kb","choices":[{"index":0,"delta":{"content":"first"}}]}`)
	resp, ok := <-got
	if !ok || resp.StatusCode != 200 {
		t.Fatalf("stream did not start: %v", resp)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	firstLine, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(firstLine, `data: {"id":"c1"`) {
		t.Fatalf("first chunk %q %v", firstLine, err)
	}
	// The client holds the first byte: now the worker dies.
	w.Kill()
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	body := string(rest)
	want := `{"error":{"message":"The worker serving this request went away before it finished. Please retry.","type":"server_error","param":null,"code":"worker_gone"}}`
	if body != "\ndata: "+want+"\n\ndata: [DONE]\n\n" {
		t.Fatalf("stream after the kill: %q", body)
	}
}

// TestDrainDuringLoad: a worker told to drain while it holds requests
// finishes them all, gets no new ones (gateways route to the other), and
// leaves its record; no client request fails.
func TestDrainDuringLoad(t *testing.T) {
	s := stacktest.Start(t)
	ctx := t.Context()
	held := newHolding(t, "dr")
	wa, err := s.AddWorker(ctx, held, worker.Config{}, "dr-a")
	if err != nil {
		t.Fatal(err)
	}
	answers := make(chan answer, 128)
	var wg sync.WaitGroup
	send := func(from, n int) {
		for i := range n {
			wg.Add(1)
			go func() { defer wg.Done(); answers <- ask(s.URL, "dr", i%2 == 0, from+i) }()
		}
	}
	const first, during = 12, 20
	send(0, first)
	stacktest.Eventually(t, 30*time.Second, func() bool { return held.entered.Load() == first }, "dr-a to hold the first requests")
	other := &counting{Engine: stacktest.Builtin(t, builtin.Config{ModelID: "dr"})}
	if _, err := s.AddWorker(ctx, other, worker.Config{}, "dr-b"); err != nil {
		t.Fatal(err)
	}
	type result struct {
		abandoned int
		err       error
	}
	drained := make(chan result, 1)
	go func() {
		dctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		n, err := wa.Drain(dctx)
		drained <- result{n, err}
	}()
	// Gateways see the draining record and route to dr-b alone.
	stacktest.Eventually(t, 10*time.Second, func() bool {
		r := s.Dir.Replicas("dr")
		return len(r) == 1 && r[0].Record.ID == "dr-b"
	}, "dr-a's record to say draining")
	send(100, during) // while dr-a drains: all of them go to dr-b
	stacktest.Eventually(t, 60*time.Second, func() bool { return other.calls.Load() == during }, "dr-b to answer the requests sent during the drain")
	select {
	case r := <-drained:
		t.Fatalf("drain ended with %d requests held: %+v", first, r)
	default:
	}
	for range first {
		held.gate <- struct{}{}
	}
	if r := <-drained; r.err != nil || r.abandoned != 0 {
		t.Fatalf("drain: %+v", r)
	}
	wg.Wait()
	close(answers)
	v := simVerifier()
	byA := 0
	for a := range answers {
		verified(t, s, v, a, "")
		if a.hdr.Get("Teegate-Worker") == "dr-a" {
			byA++
		}
	}
	if byA != first || held.calls.Load() != first || other.calls.Load() != during {
		t.Fatalf("dr-a answered %d of its %d, dr-b %d of %d", byA, first, other.calls.Load(), during)
	}
	// Its record is gone, not only marked.
	stacktest.Eventually(t, 10*time.Second, func() bool {
		for _, r := range s.Dir.Workers() {
			if r.ID == "dr-a" {
				return false
			}
		}
		return true
	}, "dr-a's record to go")
}
