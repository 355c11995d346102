package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/gateway"
	"github.com/teegate/teegate/gateway/audit"
	"github.com/teegate/teegate/internal/stack"
	"github.com/teegate/teegate/internal/stacktest"
	"github.com/teegate/teegate/worker"
	"github.com/teegate/teegate/worker/engine"
	"github.com/teegate/teegate/worker/engine/builtin"
)

// testClock is a settable clock shared by both gateway replicas, so a
// minute window cannot roll over in the middle of a test: it stands at the
// second second of the minute it was made in, plus what the test added.
type testClock struct {
	base time.Time
	off  atomic.Int64
}

func newTestClock() *testClock {
	return &testClock{base: time.Now().Truncate(time.Minute).Add(time.Second)}
}

func (c *testClock) now() time.Time {
	return c.base.Add(time.Duration(c.off.Load()))
}

// twoReplicas starts a stack (gateway A) and a second gateway replica B on
// the same NATS.
func twoReplicas(t *testing.T, opts ...stacktest.Option) (*stack.Stack, string, string) {
	t.Helper()
	s := stacktest.Start(t, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := s.AddGateway(ctx, "gateway-b")
	if err != nil {
		t.Fatal(err)
	}
	stacktest.Eventually(t, 30*time.Second, func() bool {
		resp, _, err := send("GET", r.URL+"/healthz", "", "")
		return err == nil && resp.StatusCode == 200
	}, "replica b healthy")
	return s, s.URL, r.URL
}

func newKey(t *testing.T, s *stack.Stack, rec gateway.APIKey) (string, gateway.APIKey) {
	t.Helper()
	ctx := context.Background()
	kv, err := gateway.EnsureKeysBucket(ctx, s.JS)
	if err != nil {
		t.Fatal(err)
	}
	secret, rec, err := gateway.CreateKey(ctx, kv, rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Keys.WaitFor(ctx, secret); err != nil {
		t.Fatal(err)
	}
	return secret, rec
}

const smallChat = `{"model":"teegate-builtin","messages":[{"role":"user","content":"Tell me about lighthouses."}],"max_tokens":6}`

// waitKey waits until gateway url accepts secret.
func waitKey(t *testing.T, base, secret string) {
	t.Helper()
	stacktest.Eventually(t, 30*time.Second, func() bool {
		resp, _, err := send("GET", base+"/v1/models", secret, "")
		return err == nil && resp.StatusCode == 200
	}, "key visible at "+base)
}

// A 60 rpm key through two replicas: the 61st request in the minute is a
// 429 with OpenAI's headers whichever replica serves it.
func TestRateLimitAcrossReplicas(t *testing.T) {
	clk := newTestClock()
	s, a, b := twoReplicas(t, func(c *stack.Config) { c.Gateway.Now = clk.now })
	secret, _ := newKey(t, s, gateway.APIKey{Tenant: "t1", RPM: 60})
	waitKey(t, b, secret)
	for i := range 60 {
		base := a
		if i%2 == 1 {
			base = b
		}
		resp, body := post(t, base+"/v1/chat/completions", secret, smallChat)
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i+1, resp.StatusCode, body)
		}
		if got, want := resp.Header.Get("x-ratelimit-remaining-requests"), strconv.Itoa(59-i); got != want {
			t.Fatalf("request %d: remaining %q, want %s", i+1, got, want)
		}
	}
	for _, base := range []string{a, b} {
		resp, body := post(t, base+"/v1/chat/completions", secret, smallChat)
		if resp.StatusCode != 429 {
			t.Fatalf("61st request at %s: %d %s", base, resp.StatusCode, body)
		}
		h := resp.Header
		reset, err := time.ParseDuration(h.Get("x-ratelimit-reset-requests"))
		ra, raErr := strconv.Atoi(h.Get("Retry-After"))
		if h.Get("x-ratelimit-limit-requests") != "60" || h.Get("x-ratelimit-remaining-requests") != "0" ||
			err != nil || reset <= 0 || reset > time.Minute || raErr != nil || ra < 1 || ra > 60 {
			t.Fatalf("429 headers: %v", h)
		}
		var e struct{ Error struct{ Code, Type string } }
		if json.Unmarshal(body, &e) != nil || e.Error.Code != "rate_limit_exceeded" || e.Error.Type != "requests" {
			t.Fatalf("429 body: %s", body)
		}
	}
	// The next minute has a new window.
	clk.off.Store(int64(time.Minute))
	if resp, body := post(t, b+"/v1/chat/completions", secret, smallChat); resp.StatusCode != 200 ||
		resp.Header.Get("x-ratelimit-remaining-requests") != "59" {
		t.Fatalf("next minute: %d %s %v", resp.StatusCode, body, resp.Header)
	}
}

// A revoked key fails on every replica within 2 s; a rotated key's old
// secret stops working and the new one works everywhere.
func TestRevokeAndRotateAcrossReplicas(t *testing.T) {
	s, a, b := twoReplicas(t)
	secret, rec := newKey(t, s, gateway.APIKey{Tenant: "t1"})
	waitKey(t, b, secret)
	ctx := context.Background()
	kv, _ := gateway.EnsureKeysBucket(ctx, s.JS)

	newSecret, _, err := gateway.RotateKey(ctx, kv, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, base := range []string{a, b} {
		waitKey(t, base, newSecret)
		stacktest.Eventually(t, 30*time.Second, func() bool {
			resp, _, err := send("GET", base+"/v1/models", secret, "")
			return err == nil && resp.StatusCode == 401
		}, "old secret refused at "+base)
	}

	start := time.Now()
	if _, err := gateway.RevokeKey(ctx, kv, rec.ID); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, base := range []string{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				resp, _, err := send("POST", base+"/v1/chat/completions", newSecret, smallChat)
				if err == nil && resp.StatusCode == 401 {
					return
				}
				if time.Since(start) > 2*time.Second {
					t.Errorf("revoked key still accepted at %s after 2 s", base)
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	t.Logf("revocation effective on both replicas after %s", time.Since(start))
}

// A key limited to some models gets 404 for the others, which are not
// revealed in /v1/models either.
func TestModelAccess(t *testing.T) {
	other := stacktest.Builtin(t, builtin.Config{ModelID: "teegate-other"})
	s := stacktest.Start(t, stacktest.WithEngines(stacktest.Builtin(t, builtin.Config{}), other))
	secret, _ := newKey(t, s, gateway.APIKey{Tenant: "t1", Models: []string{"teegate-builtin"}})
	resp, body := post(t, s.URL+"/v1/chat/completions", secret, strings.Replace(smallChat, "teegate-builtin", "teegate-other", 1))
	var e struct{ Error struct{ Code string } }
	if resp.StatusCode != 404 || json.Unmarshal(body, &e) != nil || e.Error.Code != "model_not_found" {
		t.Fatalf("other model: %d %s", resp.StatusCode, body)
	}
	if resp, _ := post(t, s.URL+"/v1/chat/completions", secret, smallChat); resp.StatusCode != 200 {
		t.Fatalf("allowed model: %d", resp.StatusCode)
	}
	_, body = getAs(t, s.URL+"/v1/models", secret)
	if !strings.Contains(string(body), "teegate-builtin") || strings.Contains(string(body), "teegate-other") {
		t.Fatalf("models list reveals: %s", body)
	}
	for _, path := range []string{"/v1/models/teegate-other", "/v1/attestation?model=teegate-other&nonce=n1"} {
		if resp, body := getAs(t, s.URL+path, secret); resp.StatusCode != 404 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
		}
	}
	// The unrestricted key still sees both.
	if _, body := get(t, s.URL+"/v1/models"); !strings.Contains(string(body), "teegate-other") {
		t.Fatalf("unrestricted list: %s", body)
	}
}

// A budget spent through both replicas at once: the key is charged exactly
// the usage the answers' receipts sign, and overspends by at most what the
// requests in flight when it ran out used.
func TestBudgetAcrossReplicas(t *testing.T) {
	s, a, b := twoReplicas(t)
	const budget = 600
	secret, rec := newKey(t, s, gateway.APIKey{Tenant: "t1", BudgetTokens: budget})
	waitKey(t, b, secret)
	const workers = 8
	var (
		mu      sync.Mutex
		charged int64
		maxUse  int64
		refused int
	)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			base := a
			if i%2 == 1 {
				base = b
			}
			for {
				resp, body, err := send("POST", base+"/v1/chat/completions", secret, smallChat)
				if err != nil {
					t.Error(err)
					return
				}
				if resp.StatusCode == 429 {
					var e struct{ Error struct{ Code string } }
					if json.Unmarshal(body, &e) != nil || e.Error.Code != "insufficient_quota" {
						t.Errorf("refusal: %s", body)
					}
					mu.Lock()
					refused++
					mu.Unlock()
					return
				}
				if resp.StatusCode != 200 {
					t.Errorf("status %d: %s", resp.StatusCode, body)
					return
				}
				var out struct {
					Usage struct {
						TotalTokens int64 `json:"total_tokens"`
					}
				}
				_ = json.Unmarshal(body, &out)
				mu.Lock()
				charged += out.Usage.TotalTokens
				maxUse = max(maxUse, out.Usage.TotalTokens)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	spent, err := s.Limits.Spent(context.Background(), rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	bound := int64(budget + (workers-1)*maxUse)
	t.Logf("budget %d, spent %d, client-visible usage %d, bound %d (%d in flight × %d)", budget, spent, charged, bound, workers-1, maxUse)
	if refused != workers || spent != charged || spent < budget || spent > bound {
		t.Fatalf("refused %d of %d, spent %d, clients saw %d, bound %d", refused, workers, spent, charged, bound)
	}
}

// natsServiceURL is the stack's NATS URL with its service user, as the
// CLI connects.
func natsServiceURL(t *testing.T, s *stack.Stack) string {
	u, ok := s.Server.ServiceUser()
	if !ok || s.NATSURL == "" {
		t.Fatal("stack has no listening NATS with a service user")
	}
	su, err := url.Parse(s.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	su.User = url.UserPassword(u.Name, u.Password)
	return su.String()
}

func runCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(teegateBinary(t), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// After 1,000 mixed requests through two replicas, from two tenants, served
// by two workers of different providers: audit verify counts exactly 1,000
// receipts; the ledger by provider sums exactly to the usage the clients
// saw; a deleted or altered record is named; a tenant's export verifies
// offline and holds no other tenant's records.
func TestAuditThousandRequests(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 requests")
	}
	s, a, b := twoReplicas(t, func(c *stack.Config) {
		c.NATSListen = "127.0.0.1:0"
		c.Engines = []engine.Engine{}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, p := range []string{"provider-a", "provider-b"} {
		if _, err := s.AddProviderWorker(ctx, stacktest.Builtin(t, builtin.Config{}), worker.Config{}, "w-"+p, p); err != nil {
			t.Fatal(err)
		}
	}
	secrets := map[string]string{}
	for _, tenant := range []string{"t1", "t2"} {
		secrets[tenant], _ = newKey(t, s, gateway.APIKey{Tenant: tenant})
		waitKey(t, b, secrets[tenant])
	}
	workerProvider := map[string]string{"w-provider-a": "provider-a", "w-provider-b": "provider-b"}
	bodies := []struct{ path, body string }{
		{"/v1/chat/completions", smallChat},
		{"/v1/chat/completions", `{"model":"teegate-builtin","messages":[{"role":"user","content":"Sing."}],"max_tokens":5,"stream":true,"stream_options":{"include_usage":true}}`},
		{"/v1/completions", `{"model":"teegate-builtin","prompt":"The harbor","max_tokens":4}`},
		{"/v1/embeddings", `{"model":"teegate-builtin","input":"harbor lights"}`},
	}
	const total = 1000
	var (
		mu      sync.Mutex
		seen    = map[string]int64{} // provider → total tokens the clients saw
		counts  = map[string]int{}   // tenant → receipts
		jobs    = make(chan int)
		wg      sync.WaitGroup
		failure atomic.Value
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				base := a
				if i%2 == 1 {
					base = b
				}
				tenant := "t1"
				if i%3 == 0 {
					tenant = "t2"
				}
				req := bodies[i%len(bodies)]
				resp, body, err := send("POST", base+req.path, secrets[tenant], req.body)
				if err != nil || resp.StatusCode != 200 {
					failure.Store(fmt.Sprintf("request %d: %v %v %s", i, err, resp, body))
					continue
				}
				tokens := usageSeen(body, strings.Contains(req.body, `"stream":true`))
				mu.Lock()
				seen[workerProvider[resp.Header.Get("Teegate-Worker")]] += tokens
				counts[tenant]++
				mu.Unlock()
			}
		}()
	}
	for i := range total {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if f := failure.Load(); f != nil {
		t.Fatal(f)
	}
	if len(seen) != 2 || seen[""] != 0 {
		t.Fatalf("answers by provider: %v (both workers must serve, each named)", seen)
	}
	if err := s.CheckpointAudit(ctx); err != nil {
		t.Fatal(err)
	}
	nurl := natsServiceURL(t, s)
	pin := audit.KeyString(s.AuditKey)

	out, errOut, err := runCLI(t, "audit", "verify", "--nats", nurl, "--allow-simulated", "--audit-key", pin, "--json")
	if err != nil {
		t.Fatalf("audit verify: %v\n%s\n%s", err, out, errOut)
	}
	var rep struct {
		OK       bool `json:"ok"`
		Receipts int  `json:"receipts"`
	}
	if json.Unmarshal([]byte(out), &rep) != nil || !rep.OK || rep.Receipts != total {
		t.Fatalf("audit verify: %s", out)
	}

	// The ledger by provider sums exactly to what the clients saw.
	out, errOut, err = runCLI(t, "audit", "usage", "--nats", nurl, "--allow-simulated", "--audit-key", pin, "--by", "provider", "--json")
	if err != nil {
		t.Fatalf("audit usage: %v\n%s", err, errOut)
	}
	var sums []audit.Sum
	if err := json.Unmarshal([]byte(out), &sums); err != nil {
		t.Fatalf("audit usage output: %v: %s", err, out)
	}
	var reqs int64
	for _, sum := range sums {
		reqs += sum.Requests
		if sum.TotalTokens != seen[sum.Key] {
			t.Fatalf("provider %q: ledger %d tokens, clients saw %d (all: %v vs %v)", sum.Key, sum.TotalTokens, seen[sum.Key], sums, seen)
		}
	}
	if reqs != total || len(sums) != 2 {
		t.Fatalf("ledger: %v", sums)
	}

	// A tenant's export verifies offline and holds only its own records.
	out, errOut, err = runCLI(t, "audit", "export", "--nats", nurl, "--tenant", "t1")
	if err != nil {
		t.Fatalf("audit export: %v\n%s", err, errOut)
	}
	if strings.Contains(out, `"tenant":"t2"`) || !strings.Contains(out, `"tenant":"t1"`) {
		t.Fatal("export for t1 holds another tenant's records, or none of its own")
	}
	exp := filepath.Join(t.TempDir(), "t1.jsonl")
	if err := os.WriteFile(exp, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, err = runCLI(t, "audit", "verify", "--file", exp, "--allow-simulated", "--audit-key", pin, "--json")
	if err != nil || json.Unmarshal([]byte(out), &rep) != nil || !rep.OK || rep.Receipts != counts["t1"] {
		t.Fatalf("offline verify of the export: %v %s %s (t1 had %d receipts)", err, out, errOut, counts["t1"])
	}

	// Save the stream, then delete one receipt record through the NATS API.
	st, err := s.JS.Stream(ctx, audit.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	saved := streamData(t, st)
	victim := recordOfKind(t, saved, audit.KindReceipt, 500)
	if err := st.DeleteMsg(ctx, victim); err != nil {
		t.Fatal(err)
	}
	_, errOut, err = runCLI(t, "audit", "verify", "--nats", nurl, "--allow-simulated", "--audit-key", pin)
	if err == nil || !strings.Contains(errOut, fmt.Sprintf("record %d:", victim)) {
		t.Fatalf("deleted record %d: exit %v, stderr %s", victim, err, errOut)
	}

	// Rewrite the stream with one record altered (its usage inflated).
	altered := recordOfKind(t, saved, audit.KindReceipt, 700)
	if err := s.JS.DeleteStream(ctx, audit.StreamName); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.EnsureStream(ctx, s.JS, audit.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	for i, d := range saved {
		if uint64(i+1) == altered {
			d = bytes.Replace(d, []byte(`"total_tokens":`), []byte(`"total_tokens":1`), 1)
		}
		if _, err := s.JS.Publish(ctx, audit.SubjectPrefix+"x", d); err != nil {
			t.Fatal(err)
		}
	}
	_, errOut, err = runCLI(t, "audit", "verify", "--nats", nurl, "--allow-simulated", "--audit-key", pin)
	if err == nil || !strings.Contains(errOut, fmt.Sprintf("record %d:", altered)) {
		t.Fatalf("altered record %d: exit %v, stderr %s", altered, err, errOut)
	}
}

// usageSeen is the total tokens an answer told its client: the usage
// member of a body, or of a stream's usage chunk.
func usageSeen(body []byte, stream bool) int64 {
	var u struct {
		Usage *struct {
			TotalTokens int64 `json:"total_tokens"`
		} `json:"usage"`
	}
	if !stream {
		_ = json.Unmarshal(body, &u)
		if u.Usage == nil {
			return 0
		}
		return u.Usage.TotalTokens
	}
	var n int64
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		p, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || p == "[DONE]" || strings.Contains(p, attest.ChunkReceiptMember) {
			continue
		}
		u.Usage = nil
		if json.Unmarshal([]byte(p), &u) == nil && u.Usage != nil {
			n = u.Usage.TotalTokens
		}
	}
	return n
}

// streamData returns every message of the audit stream, in order (the
// stream has no gaps yet: index i is sequence i+1).
func streamData(t *testing.T, st jetstream.Stream) [][]byte {
	t.Helper()
	ctx := context.Background()
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("reading audit record %d: %v", seq, err)
		}
		out = append(out, m.Data)
	}
	return out
}

// recordOfKind returns the sequence of the first record of kind at or
// after index from.
func recordOfKind(t *testing.T, data [][]byte, kind string, from int) uint64 {
	t.Helper()
	for i := from; i < len(data); i++ {
		r, err := audit.ParseRecord(data[i])
		if err != nil {
			t.Fatal(err)
		}
		if e, err := r.Entry(); err == nil && e.Kind == kind {
			return r.Seq
		}
	}
	t.Fatalf("no %s record after %d", kind, from)
	return 0
}
