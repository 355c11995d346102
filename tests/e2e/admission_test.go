package e2e

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/gateway"
	"github.com/teegate/teegate/internal/stack"
	"github.com/teegate/teegate/internal/stacktest"
	"github.com/teegate/teegate/policies"
	"github.com/teegate/teegate/worker/engine/builtin"
	"github.com/teegate/teegate/worker/wire"
)

const adminKey = "sk-admin-test"

// workersList is GET /v1/attestation/workers.
type workersList struct {
	Object string                 `json:"object"`
	Data   []gateway.WorkerStatus `json:"data"`
}

func listWorkers(t *testing.T, base, key string) workersList {
	t.Helper()
	resp, body := getAs(t, base+"/v1/attestation/workers", key)
	var l workersList
	if resp.StatusCode != 200 || json.Unmarshal(body, &l) != nil || l.Object != "list" {
		t.Fatalf("workers: %d %s", resp.StatusCode, body)
	}
	return l
}

// checkNoAttestedWorker: the OpenAI-shaped 503 a client gets when no
// admitted worker serves the model.
func checkNoAttestedWorker(t *testing.T, resp *http.Response, body []byte) {
	t.Helper()
	var e struct {
		Error struct {
			Message string `json:"message"`
			Type    string `json:"type"`
			Code    string `json:"code"`
		} `json:"error"`
	}
	if resp.StatusCode != http.StatusServiceUnavailable || json.Unmarshal(body, &e) != nil {
		t.Fatalf("want 503, got %d %s", resp.StatusCode, body)
	}
	if !strings.Contains(e.Error.Message, "No attested worker") || e.Error.Type != "server_error" || e.Error.Code != "no_capacity" {
		t.Fatalf("error %+v", e.Error)
	}
	if resp.Header.Get("Retry-After") == "" || resp.Header.Get("x-request-id") == "" {
		t.Fatal("503 without Retry-After or x-request-id")
	}
}

func hasSimulatedReason(reasons []string) bool {
	for _, r := range reasons {
		if strings.Contains(r, "simulated") {
			return true
		}
	}
	return false
}

const admissionChat = `{"model":"teegate-builtin","messages":[{"role":"user","content":"Tell me about harbours."}],"max_tokens":8}`

// With the production policy the simulated worker is refused, with reasons
// that say why; clients get 503 "no attested worker" (not 404), NATS itself
// keeps inference requests away from the refused worker's connections, and
// the same stack with the dev policy serves.
func TestAdmissionProductionRefusesSimulated(t *testing.T) {
	s := stacktest.Start(t, stacktest.WithPolicy("production"))
	ctx := t.Context()
	if err := s.AddKey(ctx, adminKey, gateway.APIKey{Name: "admin", Tenant: "ops", Admin: true}); err != nil {
		t.Fatal(err)
	}
	w := s.Workers[0]
	st := w.Admission()
	if st.Admitted || !hasSimulatedReason(st.Reasons) {
		t.Fatalf("admission %+v", st)
	}

	resp, body := post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, admissionChat)
	checkNoAttestedWorker(t, resp, body)
	resp, body = post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, strings.Replace(admissionChat, `"max_tokens":8`, `"max_tokens":8,"stream":true`, 1))
	checkNoAttestedWorker(t, resp, body)
	// A model nobody asked to serve is still unknown.
	resp, _ = post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, strings.Replace(admissionChat, "teegate-builtin", "no-such-model", 1))
	if resp.StatusCode != 404 {
		t.Fatalf("unknown model: %d", resp.StatusCode)
	}
	// Nor can it be asked for fresh evidence.
	if r, b := getAs(t, s.URL+"/v1/attestation?model=teegate-builtin&nonce=n1", stacktest.APIKey); r.StatusCode != 503 {
		t.Fatalf("fresh evidence from a refused-only model: %d %s", r.StatusCode, b)
	}
	// The refused worker lists nothing.
	if _, b := getAs(t, s.URL+"/v1/models", stacktest.APIKey); strings.Contains(string(b), "teegate-builtin") {
		t.Fatalf("models lists a refused worker's model: %s", b)
	}

	// NATS enforces it: a connection presenting the refused evidence may
	// not even subscribe to the model's subject, and receives nothing.
	ep := s.Keepers[0].Current()
	opts, err := wire.WorkerConnectOptions(ep.ID, ep.SigningPub(), ep.Sign)
	if err != nil {
		t.Fatal(err)
	}
	violations := make(chan error, 8)
	opts = append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			violations <- err
		}
	}))
	nc, err := s.Server.ConnectBare("intruder", opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync(wire.InferSubject("teegate-builtin"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-violations:
	case <-time.After(10 * time.Second):
		t.Fatal("subscribing with refused evidence was not refused")
	}
	resp, body = post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, admissionChat)
	checkNoAttestedWorker(t, resp, body)
	if _, err := sub.NextMsg(50 * time.Millisecond); err == nil {
		t.Fatal("a refused connection received a request")
	}
	if n := w.Served(); n != 0 {
		t.Fatalf("the refused worker served %d requests", n)
	}

	// Operators see why: admin keys only.
	if r, _ := getAs(t, s.URL+"/v1/attestation/workers", stacktest.APIKey); r.StatusCode != http.StatusForbidden {
		t.Fatalf("non-admin key: %d", r.StatusCode)
	}
	l := listWorkers(t, s.URL, adminKey)
	if len(l.Data) != 1 {
		t.Fatalf("workers %+v", l.Data)
	}
	ws := l.Data[0]
	if ws.WorkerID != w.ID() || ws.Decision != "refused" || !hasSimulatedReason(ws.Reasons) || ws.Serving ||
		ws.Claims == nil || !ws.Claims.Simulated || ws.EvidenceAgeSeconds < 0 || !strings.HasPrefix(ws.Policy, "production@") {
		t.Fatalf("worker status %+v", ws)
	}

	// The same stack with the dev policy serves.
	d := stacktest.Start(t)
	if !d.Workers[0].Admission().Admitted {
		t.Fatalf("dev: %+v", d.Workers[0].Admission())
	}
	resp, body = post(t, d.URL+"/v1/chat/completions", stacktest.APIKey, admissionChat)
	if resp.StatusCode != 200 || resp.Header.Get("Teegate-Receipt") == "" {
		t.Fatalf("dev chat: %d %s", resp.StatusCode, body)
	}
	if err := d.AddKey(ctx, adminKey, gateway.APIKey{Name: "admin", Tenant: "ops", Admin: true}); err != nil {
		t.Fatal(err)
	}
	l = listWorkers(t, d.URL, adminKey)
	if len(l.Data) != 1 || l.Data[0].Decision != "admitted" || !l.Data[0].Serving || l.Data[0].Connections == 0 || len(l.Data[0].Reasons) != 0 {
		t.Fatalf("dev workers %+v", l.Data)
	}
}

// `teegate dev --policy production`: the binary's simulated worker is
// refused; chat answers 503 and the admin listing shows the reason.
func TestDevBinaryProductionPolicy(t *testing.T) {
	p := startDev(t, "--api-key", "sk-test", "--policy", "production")
	if out := p.stdout.String(); !strings.Contains(out, "REFUSED") || !strings.Contains(out, "production@") {
		t.Fatalf("banner does not say the worker was refused:\n%s", out)
	}
	base := "http://" + p.addr
	resp, body := post(t, base+"/v1/chat/completions", "sk-test", admissionChat)
	checkNoAttestedWorker(t, resp, body)
	l := listWorkers(t, base, "sk-test") // the dev key is an admin key
	if len(l.Data) != 1 || l.Data[0].Decision != "refused" || !hasSimulatedReason(l.Data[0].Reasons) {
		t.Fatalf("workers %+v", l.Data)
	}
	p.stop(t)
}

// A policy swapped in the Holder evicts the worker it no longer admits:
// requests the worker is serving finish (non-stream and streams, with
// receipts), new ones get 503, and the operator sees the new decision.
// Swapping the permissive policy back lets the worker in again.
func TestPolicyReloadEvictsWithoutFailingInFlight(t *testing.T) {
	slow := stacktest.Builtin(t, builtin.Config{Latency: builtin.Latency{TTFT: 100 * time.Millisecond, PerToken: 20 * time.Millisecond}})
	s := stacktest.Start(t, stacktest.WithEngines(slow), func(c *stack.Config) {
		c.Worker.RetryInterval = 200 * time.Millisecond
		c.Admission.Grace = 20 * time.Second // the worker drains itself long before
	})
	ctx := t.Context()
	w := s.Workers[0]
	if !w.Admission().Admitted {
		t.Fatalf("not admitted: %+v", w.Admission())
	}
	const n = 8
	long := strings.Replace(admissionChat, `"max_tokens":8`, `"max_tokens":40`, 1)
	type result struct {
		status int
		body   []byte
		hdr    http.Header
		stream bool
	}
	results := make(chan result, n)
	var wg sync.WaitGroup
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n}}
	for i := range n {
		wg.Go(func() {
			body := long
			if i%2 == 1 {
				body = strings.Replace(long, `"max_tokens":40`, `"max_tokens":40,"stream":true`, 1)
			}
			req, _ := http.NewRequest("POST", s.URL+"/v1/chat/completions", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+stacktest.APIKey)
			resp, err := client.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Error(err)
				return
			}
			results <- result{resp.StatusCode, b, resp.Header, i%2 == 1}
		})
	}
	stacktest.Eventually(t, 10*time.Second, func() bool { return w.Served() >= n }, "requests in flight")

	prod, err := policies.Resolve("production")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetPolicy(ctx, prod); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(results)
	for r := range results {
		if r.status != 200 {
			t.Fatalf("in-flight request failed: %d %s", r.status, r.body)
		}
		if r.stream {
			res, err := attest.DigestSSE(strings.NewReader(string(r.body)))
			if err != nil || res.Receipt == nil || !strings.HasSuffix(string(r.body), "data: [DONE]\n\n") {
				t.Fatalf("in-flight stream cut short: %v: %q", err, r.body[max(0, len(r.body)-600):])
			}
		} else if r.hdr.Get("Teegate-Receipt") == "" {
			t.Fatal("in-flight response without a receipt")
		}
	}
	stacktest.Eventually(t, 20*time.Second, func() bool { return !w.Admission().Admitted }, "the worker to be evicted")
	if !hasSimulatedReason(w.Admission().Reasons) {
		t.Fatalf("eviction reasons %+v", w.Admission())
	}
	stacktest.Eventually(t, 20*time.Second, func() bool {
		resp, _ := post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, admissionChat)
		return resp.StatusCode == http.StatusServiceUnavailable
	}, "new requests to be refused")
	resp, body := post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, admissionChat)
	checkNoAttestedWorker(t, resp, body)
	if err := s.AddKey(ctx, adminKey, gateway.APIKey{Name: "admin", Tenant: "ops", Admin: true}); err != nil {
		t.Fatal(err)
	}
	if l := listWorkers(t, s.URL, adminKey); len(l.Data) != 1 || l.Data[0].Decision != "refused" {
		t.Fatalf("workers after reload %+v", l.Data)
	}

	dev, err := policies.Resolve("dev")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetPolicy(ctx, dev); err != nil {
		t.Fatal(err)
	}
	stacktest.Eventually(t, 20*time.Second, func() bool {
		resp, _ := post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, admissionChat)
		return resp.StatusCode == 200
	}, "the worker to be admitted again")
}
