package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/teegate/teegate/internal/natsembed"
	"github.com/teegate/teegate/worker/wire"
)

// coldEnv is a gateway with a real registry watch and cold-start queue on
// an embedded nats-server, and a way to bring a fake worker up.
type coldEnv struct {
	t       *testing.T
	srv     *natsembed.Server
	nc      *nats.Conn
	js      jetstream.JetStream
	reg     jetstream.KeyValue
	dir     *KVDirectory
	pending *Pending
	g       *Gateway
	served  atomic.Int64
}

func newColdEnv(t *testing.T, pc PendingConfig, gc Config) *coldEnv {
	t.Helper()
	srv, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return attachColdEnv(t, srv, pc, gc)
}

// attachColdEnv starts another gateway on srv (a second replica).
func attachColdEnv(t *testing.T, srv *natsembed.Server, pc PendingConfig, gc Config) *coldEnv {
	t.Helper()
	nc, err := srv.Connect("gw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e := &coldEnv{t: t, srv: srv, nc: nc, js: js}
	if e.reg, err = wire.EnsureBucket(ctx, js, wire.RegistryConfig()); err != nil {
		t.Fatal(err)
	}
	if e.dir, err = OpenDirectory(ctx, js); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.dir.Close)
	pc.JS = js
	if e.pending, err = OpenPending(ctx, pc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.pending.Close)
	gc.Conn, gc.Keys, gc.Directory, gc.Pending, gc.Unattested = nc, fakeKeys{"user": {Name: "u"}, "admin": {Name: "a", Admin: true}}, e.dir, e.pending, true
	if e.g, err = New(gc); err != nil {
		t.Fatal(err)
	}
	return e
}

// worker subscribes a fake worker for model (answering after hold is
// closed, when hold is not nil) and registers its record.
func (e *coldEnv) worker(id, model string, conc int, hold <-chan struct{}) {
	e.t.Helper()
	handle := func(m *nats.Msg) {
		e.served.Add(1)
		go func() {
			if hold != nil {
				<-hold
			}
			r := nats.NewMsg(m.Reply)
			r.Header.Set(wire.HdrKind, wire.KindResponse)
			r.Header.Set(wire.HdrStatus, "200")
			r.Header.Set(wire.HdrWorker, id)
			r.Data = []byte(`{"id":"chatcmpl-1","object":"chat.completion","choices":[]}`)
			_ = m.RespondMsg(r)
		}()
	}
	// The direct subject the gateway picks, and the queue group's.
	for _, subj := range []string{wire.DirectSubject(model, id), wire.InferSubject(model)} {
		sub, err := e.nc.Subscribe(subj, handle)
		if err != nil {
			e.t.Fatal(err)
		}
		e.t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	rec, _ := json.Marshal(wire.WorkerRecord{ID: id, Version: wire.Version, Models: []wire.ModelInfo{{ID: model, OwnedBy: "test"}},
		MaxConcurrency: conc, Ready: true, StartedAt: time.Now(), HeartbeatAt: time.Now()})
	if _, err := e.reg.Put(context.Background(), id, rec); err != nil {
		e.t.Fatal(err)
	}
	eventually(e.t, 5*time.Second, func() bool { _, ok := e.dir.Model(model); return ok }, "the directory to see the worker")
}

type result struct {
	status     int
	retryAfter string
	body       string
}

func (e *coldEnv) chat(model string) result {
	req := httptest.NewRequest("POST", "/v1/chat/completions",
		strings.NewReader(`{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer user")
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.g.App().Test(req, -1)
	if err != nil {
		e.t.Error(err)
		return result{}
	}
	b, _ := io.ReadAll(resp.Body)
	return result{resp.StatusCode, resp.Header.Get("Retry-After"), string(b)}
}

// numPending is the model's consumer's num_pending: the scale signal.
func (e *coldEnv) numPending(model string) uint64 {
	e.t.Helper()
	c, err := e.js.Consumer(context.Background(), wire.PendingStream, wire.PendingConsumer(model))
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 0 // created with the model's first ticket
	}
	if err != nil {
		e.t.Fatalf("consumer of %s: %v", model, err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return info.NumPending
}

func eventually(t *testing.T, d time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestColdStartWaitsForAWorker(t *testing.T) {
	e := newColdEnv(t, PendingConfig{Models: []string{"m"}}, Config{})
	// Declared, served by nobody: listed, and a request waits.
	if code, body := do(t, e.g, "GET", "/v1/models/m", "user", ""); code != 200 {
		t.Fatalf("declared model: %d %s", code, body)
	}
	done := make(chan result, 1)
	go func() { done <- e.chat("m") }()
	eventually(t, 5*time.Second, func() bool { return e.pending.Waiting()["m"] == 1 && e.numPending("m") == 1 }, "a ticket")
	// The ticket names the request, never its content.
	st, _ := e.js.Stream(context.Background(), wire.PendingStream)
	raw, err := st.GetLastMsgForSubject(context.Background(), wire.PendingSubject("m"))
	if err != nil {
		t.Fatal(err)
	}
	tk, err := wire.DecodeTicket(raw.Data)
	if err != nil || tk.Model != "m" || !strings.HasPrefix(tk.RequestID, "req_") || strings.Contains(string(raw.Data), "hi") {
		t.Fatalf("ticket %s: %+v %v", raw.Data, tk, err)
	}
	// Admins see the queue.
	code, body := do(t, e.g, "GET", "/v1/attestation/workers", "admin", "")
	if code != 200 || !strings.Contains(body, `"pending":[{"model":"m","waiting":1,"queued":1}]`) {
		t.Fatalf("workers: %d %s", code, body)
	}
	select {
	case r := <-done:
		t.Fatalf("answered with no worker: %+v", r)
	default:
	}
	e.worker("w1", "m", 4, nil)
	r := <-done
	if r.status != 200 {
		t.Fatalf("after the worker came: %+v", r)
	}
	eventually(t, 5*time.Second, func() bool { return e.numPending("m") == 0 && e.pending.Waiting()["m"] == 0 }, "the ticket deleted")
	// An unknown model still does not exist: it never waits.
	if r := e.chat("nope"); r.status != 404 {
		t.Fatalf("unknown model: %+v", r)
	}
}

func TestColdStartTimeoutAndFullQueue(t *testing.T) {
	e := newColdEnv(t, PendingConfig{Models: []string{"m"}, Timeout: 300 * time.Millisecond, QueueLength: 2}, Config{})
	start := time.Now()
	r := e.chat("m")
	if r.status != 503 || r.retryAfter == "" || !strings.Contains(r.body, `"code":"cold_start_timeout"`) || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("timeout: %+v after %v", r, time.Since(start))
	}
	eventually(t, 5*time.Second, func() bool { return e.numPending("m") == 0 }, "the ticket of a request given up deleted")

	// Two wait (the queue's length); a third is refused at once.
	// (The in-flight limit would shed the third first: it is raised here.)
	long := attachColdEnv(t, e.srv, PendingConfig{Models: []string{"m"}, Timeout: time.Minute, QueueLength: 2}, Config{MaxInflight: 100, MaxInflightPerModel: 100})
	var wg sync.WaitGroup
	res := make(chan result, 2)
	for range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); res <- long.chat("m") }()
	}
	eventually(t, 5*time.Second, func() bool { return long.pending.Waiting()["m"] == 2 }, "two waiting")
	start = time.Now()
	if r := long.chat("m"); r.status != 503 || r.retryAfter == "" || !strings.Contains(r.body, `"code":"queue_full"`) {
		t.Fatalf("third: %+v", r)
	}
	// The bound is the stream's, fleet-wide: another gateway with room of
	// its own is refused by JetStream (discard new per subject).
	other := attachColdEnv(t, e.srv, PendingConfig{Models: []string{"m"}, Timeout: time.Minute, QueueLength: 2}, Config{MaxInflight: 100, MaxInflightPerModel: 100})
	eventually(t, 5*time.Second, func() bool {
		q, err := other.pending.Queued(context.Background(), []string{"m"})
		return err == nil && q["m"] == 2
	}, "two tickets in the stream")
	if r := other.chat("m"); r.status != 503 || r.retryAfter == "" || !strings.Contains(r.body, `"code":"queue_full"`) {
		t.Fatalf("other gateway: %+v", r)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("refusals took %v", time.Since(start))
	}
	long.worker("w1", "m", 4, nil)
	wg.Wait()
	close(res)
	for r := range res {
		if r.status != 200 {
			t.Fatalf("waiting request: %+v", r)
		}
	}
}

func TestModelMemory(t *testing.T) {
	e := newColdEnv(t, PendingConfig{ModelMemory: 2 * time.Second, Timeout: 200 * time.Millisecond}, Config{})
	if r := e.chat("m"); r.status != 404 {
		t.Fatalf("never served: %+v", r)
	}
	e.worker("w1", "m", 4, nil)
	eventually(t, 5*time.Second, func() bool { _, ok := e.pending.Known("m"); return ok }, "the model remembered")
	raw, err := e.js.Stream(context.Background(), "KV_"+wire.ModelsBucket)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := raw.GetLastMsgForSubject(context.Background(), "$KV."+wire.ModelsBucket+"."+wire.ModelKey("m")); err != nil || !strings.Contains(string(m.Data), `"id":"m"`) {
		t.Fatalf("memory entry: %v", err)
	}
	// The worker leaves: the model is still known, so requests wait (and
	// here time out: 503, not 404).
	if err := e.reg.Delete(context.Background(), "w1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() bool { _, ok := e.dir.Model("m"); return !ok }, "the worker gone")
	if r := e.chat("m"); r.status != 503 || !strings.Contains(r.body, "cold_start_timeout") {
		t.Fatalf("remembered model: %+v", r)
	}
	// Past the memory it is unknown again.
	eventually(t, 10*time.Second, func() bool { _, ok := e.pending.Known("m"); return !ok }, "the model forgotten")
	if r := e.chat("m"); r.status != 404 {
		t.Fatalf("forgotten model: %+v", r)
	}
}

func TestModelKeyDistinct(t *testing.T) {
	seen := map[string]string{}
	for _, id := range []string{"a", "a.b", "a%2Eb", "a=b", "a/b", "llama 3", "x:latest", "%"} {
		k := wire.ModelKey(id)
		if prev, dup := seen[k]; dup {
			t.Fatalf("%q and %q share key %q", prev, id, k)
		}
		seen[k] = id
		for _, c := range k {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-/_=.", c)) {
				t.Fatalf("key %q of %q has %q", k, id, c)
			}
		}
	}
}

func TestShedOverload(t *testing.T) {
	e := newColdEnv(t, PendingConfig{}, Config{MaxInflightPerModel: 2})
	hold := make(chan struct{})
	e.worker("w1", "m", 64, hold)
	res := make(chan result, 2)
	for range 2 {
		go func() { res <- e.chat("m") }()
	}
	eventually(t, 5*time.Second, func() bool { return e.served.Load() == 2 }, "two in flight")
	start := time.Now()
	r := e.chat("m")
	if r.status != http.StatusServiceUnavailable || r.retryAfter != "1" || !strings.Contains(r.body, `"code":"overloaded"`) {
		t.Fatalf("third: %+v", r)
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("shedding took %v", el)
	}
	if e.served.Load() != 2 {
		t.Fatal("a shed request reached a worker")
	}
	close(hold)
	for range 2 {
		if r := <-res; r.status != 200 {
			t.Fatalf("held: %+v", r)
		}
	}
	// Slots freed: the next one goes through.
	if r := e.chat("m"); r.status != 200 {
		t.Fatalf("after: %+v", r)
	}

	// A total limit sheds across models, before the body is parsed.
	tot := attachColdEnv(t, e.srv, PendingConfig{}, Config{MaxInflight: 1})
	hold2 := make(chan struct{})
	tot.worker("w2", "m2", 64, hold2)
	go func() { res <- tot.chat("m2") }()
	eventually(t, 5*time.Second, func() bool { return tot.served.Load() == 1 }, "one in flight")
	if r := tot.chat("m"); r.status != 503 || !strings.Contains(r.body, "overloaded") {
		t.Fatalf("total: %+v", r)
	}
	close(hold2)
	if r := <-res; r.status != 200 {
		t.Fatalf("held: %+v", r)
	}
}

func TestShedDefaultsFollowTheRegistry(t *testing.T) {
	e := newColdEnv(t, PendingConfig{QueueLength: 3}, Config{})
	hold := make(chan struct{})
	defer close(hold)
	e.worker("w1", "m", 2, hold)
	total, each := e.g.shed.limits("m")
	if total != 2+3 || each != 2+3 {
		t.Fatalf("limits %d/%d, want 5/5", total, each)
	}
	e.worker("w2", "m", 4, hold)
	eventually(t, 5*time.Second, func() bool { tot, _ := e.g.shed.limits("m"); return tot == 9 }, "limits to follow the registry")
	if _, each := e.g.shed.limits("other"); each != 3 {
		t.Fatalf("a model nobody serves: %d", each)
	}
}

// Every worker at its concurrency: the request waits in the queue too (and
// counts in the scale signal), and goes out when a slot frees.
func TestColdStartWaitsWhileWorkersAreFull(t *testing.T) {
	e := newColdEnv(t, PendingConfig{}, Config{})
	hold := make(chan struct{})
	e.worker("w1", "m", 1, hold)
	first := make(chan result, 1)
	go func() { first <- e.chat("m") }()
	eventually(t, 5*time.Second, func() bool { return e.served.Load() == 1 }, "one in flight")
	second := make(chan result, 1)
	go func() { second <- e.chat("m") }()
	eventually(t, 5*time.Second, func() bool { return e.numPending("m") == 1 }, "the second waiting with a ticket")
	if e.served.Load() != 1 {
		t.Fatal("a worker at its concurrency was sent more")
	}
	close(hold)
	for _, ch := range []chan result{first, second} {
		if r := <-ch; r.status != 200 {
			t.Fatalf("%+v", r)
		}
	}
	eventually(t, 5*time.Second, func() bool { return e.numPending("m") == 0 }, "the ticket deleted")
}

// A worker still alive that stops offering a model (its engine dropped it)
// makes the gateway forget it: 404 at once, not a wait.
func TestDroppedModelIsForgotten(t *testing.T) {
	e := newColdEnv(t, PendingConfig{Timeout: 5 * time.Second}, Config{})
	e.worker("w1", "m", 4, nil)
	e.worker("w1", "m2", 4, nil) // the same worker now offers m2 only
	eventually(t, 5*time.Second, func() bool { _, ok := e.dir.Model("m"); return !ok }, "m withdrawn")
	eventually(t, 5*time.Second, func() bool { _, ok := e.pending.Known("m"); return !ok }, "m forgotten")
	if r := e.chat("m"); r.status != 404 {
		t.Fatalf("dropped model: %+v", r)
	}
	if r := e.chat("m2"); r.status != 200 {
		t.Fatalf("offered model: %+v", r)
	}
}
