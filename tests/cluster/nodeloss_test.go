package cluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/teegate/teegate/attest/client"
)

type outcomeKind int

const (
	outcomeCompletion outcomeKind = iota // 200 and a whole answer with its receipt
	outcomeRetryable                     // a clean, retryable OpenAI-shaped error
	outcomeBroken                        // anything else
)

type outcome struct {
	kind    outcomeKind
	status  int
	code    string // the error's code, for errors
	detail  string
	elapsed time.Duration
	reqID   string
}

func (o outcome) String() string {
	return fmt.Sprintf("status %d code %q after %v: %s", o.status, o.code, o.elapsed.Round(time.Millisecond), o.detail)
}

// retryableStatus: what a client may retry, and must be told when (the
// gateway sends Retry-After with each).
var retryableStatus = map[int]bool{http.StatusTooManyRequests: true, http.StatusBadGateway: true,
	http.StatusServiceUnavailable: true, http.StatusGatewayTimeout: true}

// fire sends one chat request (streamed or not) asking for tokens tokens
// and classifies how it ended. The client's own timeout is the gateway's
// deadline plus slack: a request still open then is broken.
func fire(ctx context.Context, gw, key string, stream bool, tokens int) outcome {
	return fireWithin(ctx, gw, key, stream, tokens, requestTimeout+5*time.Second)
}

// fireWithin is fire with the client giving up after timeout.
func fireWithin(ctx context.Context, gw, key string, stream bool, tokens int, timeout time.Duration) outcome {
	start := time.Now()
	body := fmt.Sprintf(`{"model":"teegate-builtin","messages":[{"role":"user","content":"Tell me about lighthouses."}],"max_tokens":%d,"stream":%t}`, tokens, stream)
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(rctx, "POST", gw+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return outcome{kind: outcomeBroken, detail: err.Error(), elapsed: time.Since(start)}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	o := outcome{status: resp.StatusCode, elapsed: time.Since(start), reqID: resp.Header.Get("X-Request-Id")}
	if err != nil {
		o.kind, o.detail = outcomeBroken, "reading the body: "+err.Error()
		return o
	}
	if resp.StatusCode != 200 {
		code, ok := errorCode(raw)
		o.code = code
		switch {
		case !ok:
			o.kind, o.detail = outcomeBroken, "not an OpenAI error body: "+string(raw)
		case !retryableStatus[resp.StatusCode]:
			o.kind, o.detail = outcomeBroken, "not a retryable status: "+string(raw)
		case resp.Header.Get("Retry-After") == "":
			o.kind, o.detail = outcomeBroken, "no Retry-After: "+string(raw)
		default:
			o.kind = outcomeRetryable
		}
		return o
	}
	if !stream {
		if resp.Header.Get("Teegate-Receipt") == "" {
			o.kind, o.detail = outcomeBroken, "a completion without a receipt"
		}
		return o
	}
	// A stream ends with its receipt event and [DONE], or with one error
	// event the gateway wrote when the answer could not be finished
	// (followed by [DONE]).
	var events []string
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			events = append(events, d)
		}
	}
	if len(events) == 0 {
		o.kind, o.detail = outcomeBroken, "an empty stream"
		return o
	}
	last := events[len(events)-1]
	if last == "[DONE]" && len(events) >= 2 {
		last = events[len(events)-2]
		if _, isErr := errorCode([]byte(last)); !isErr {
			if !strings.Contains(last, "receipt") {
				o.kind, o.detail = outcomeBroken, "a stream without a receipt event"
			}
			return o
		}
	}
	code, ok := errorCode([]byte(last))
	o.code = code
	if !ok || !retryableStreamCode[code] {
		o.kind, o.detail = outcomeBroken, "a stream that ends with "+last
		return o
	}
	o.kind = outcomeRetryable
	return o
}

// retryableStreamCode: the errors a stream may end with once its answer
// began, each saying the client may try again.
var retryableStreamCode = map[string]bool{"worker_gone": true, "deadline_exceeded": true, "no_capacity": true, "bus_unavailable": true}

var httpClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 400}}

// errorCode reads {"error":{"message":…,"type":…,"code":…}}.
func errorCode(raw []byte) (string, bool) {
	var body struct {
		Error *struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Code    *string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(raw, &body); err != nil || body.Error == nil || body.Error.Message == "" || body.Error.Type == "" {
		return "", false
	}
	if body.Error.Code == nil {
		return "", true
	}
	return *body.Error.Code, true
}

// inflight sums the gateways' in-flight request gauges.
func inflight(ctx context.Context, gws []string) int {
	n := 0
	for _, gw := range gws {
		req, _ := http.NewRequestWithContext(ctx, "GET", gw+"/metrics", nil)
		resp, err := httpClient.Do(req)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, "teegate_gateway_inflight_requests") {
				continue
			}
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			n += int(v)
		}
		resp.Body.Close()
	}
	return n
}

// busiestNode is the NATS node serving the most workers (then the most
// gateways): the hardest to lose, as a worker that reconnects elsewhere
// may not answer the requests it took before.
func busiestNode(t *testing.T, ctx context.Context, base int) (int, []string) {
	t.Helper()
	best, bestNames := -1, []string(nil)
	for i := range 3 {
		req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://127.0.0.1:%d/connz?limit=1000", base+20+i), nil)
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var cz struct {
			Conns []struct {
				Name string `json:"name"`
			} `json:"connections"`
		}
		err = json.NewDecoder(resp.Body).Decode(&cz)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, c := range cz.Conns {
			if strings.HasPrefix(c.Name, "teegate") {
				names = append(names, c.Name)
			}
		}
		if best < 0 || score(names) > score(bestNames) {
			best, bestNames = i, names
		}
	}
	return best, bestNames
}

func score(names []string) int {
	n := 0
	for _, c := range names {
		switch c {
		case "teegate-worker":
			n += 10
		case "teegate-gateway":
			n++
		}
	}
	return n
}

// checkNodeKilled: kill -9 of the NATS node serving the most teegate
// connections while 300 requests are in flight through both gateways.
// Every request ends within its deadline with a completion or a clean,
// retryable error; within 10 s requests through both gateways succeed
// again (verified receipts), without restarting any gateway or worker;
// the processes that lost their server logged it and their reconnection.
func checkNodeKilled(t *testing.T, ctx context.Context, e env, base int) {
	const total = 300
	victim, names := busiestNode(t, ctx, base)
	t.Logf("killing nats-n%d, serving %v", victim+1, names)
	clients := map[string]int{}
	for _, n := range []string{"gateway-1", "gateway-2", "worker-1", "worker-2"} {
		clients[n] = pidOf(t, e.dir, n)
	}

	var wg sync.WaitGroup
	outcomes := make([]outcome, total)
	for i := range total {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// 300 tokens at 10 ms: each answer takes about 3 s. Each gateway
			// gets streams and non-stream requests alike.
			outcomes[i] = fire(ctx, e.gateways[i%len(e.gateways)], e.key, i/2%2 == 1, 300)
		}()
	}
	deadline := time.Now().Add(30 * time.Second)
	for inflight(ctx, e.gateways) < total {
		if time.Now().After(deadline) {
			t.Fatalf("only %d requests in flight", inflight(ctx, e.gateways))
		}
		time.Sleep(20 * time.Millisecond)
	}
	pid := pidOf(t, e.dir, fmt.Sprintf("nats-n%d", victim+1))
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()

	// Requests through both gateways succeed again within 10 s.
	back := make([]time.Duration, len(e.gateways))
	var bwg sync.WaitGroup
	for j, gw := range e.gateways {
		bwg.Add(1)
		go func() {
			defer bwg.Done()
			for time.Since(killed) < 10*time.Second {
				// A probe sent the moment the node died may be lost with
				// it: each gives up after 2 s and the next one is sent.
				if o := fireWithin(ctx, gw, e.key, false, 4, 2*time.Second); o.kind == outcomeCompletion {
					back[j] = time.Since(killed)
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	bwg.Wait()
	wg.Wait()
	for j, d := range back {
		if d == 0 {
			t.Errorf("no request through %s succeeded within 10 s of the kill", e.gateways[j])
		} else {
			t.Logf("%s serves again %v after the kill", e.gateways[j], d.Round(time.Millisecond))
		}
	}
	counts := map[string]int{}
	var slowest time.Duration
	for i, o := range outcomes {
		slowest = max(slowest, o.elapsed)
		switch o.kind {
		case outcomeCompletion:
			counts["completed"]++
		case outcomeRetryable:
			counts[fmt.Sprintf("retryable %d %s", o.status, o.code)]++
		default:
			t.Errorf("request %d (stream %t): %s", i, i/2%2 == 1, o)
		}
		if o.elapsed > requestTimeout+2*time.Second {
			t.Errorf("request %d ended %v after it was sent, past its %v deadline", i, o.elapsed, requestTimeout)
		}
	}
	t.Logf("outcomes of %d requests in flight at the kill: %v (slowest %v)", total, counts, slowest.Round(time.Millisecond))
	// None waited for its deadline: a gateway that lost its server fails
	// its requests at once, a worker that lost its server answers the
	// gateway's probes of the requests it can no longer answer.
	for k, n := range counts {
		if strings.Contains(k, "deadline_exceeded") {
			t.Errorf("%d requests waited for their deadline (%s)", n, k)
		}
	}

	// Every completion's receipt is stored, also those written while the
	// receipts bucket elected a new leader, and readable on both gateways.
	for i, o := range outcomes {
		if o.kind != outcomeCompletion {
			continue
		}
		for _, gw := range e.gateways {
			if code := pollCode(t, ctx, gw+"/v1/attestation/receipts/"+o.reqID, e.key); code != 200 {
				t.Errorf("request %d's receipt on %s: %d", i, gw, code)
			}
		}
	}

	// Nothing was restarted; the processes that lost their server said so.
	for n, p := range clients {
		if !running(p) || pidOf(t, e.dir, n) != p {
			t.Errorf("%s (pid %d) no longer runs", n, p)
		}
	}
	logged := 0
	for n := range clients {
		raw, _ := os.ReadFile(filepath.Join(e.dir, n+".log"))
		if bytes.Contains(raw, []byte("nats disconnected")) && bytes.Contains(raw, []byte("nats reconnected")) {
			logged++
		}
	}
	if logged == 0 && len(names) > 0 {
		t.Errorf("no gateway or worker logged losing and regaining its server")
	}

	// The fleet on two nodes: answers verify, receipts are stored (the
	// R3 buckets keep a quorum).
	for _, gw := range e.gateways {
		c := sdkClient(t, gw, e.key)
		for range 10 {
			var res client.Result
			var hdr *http.Response
			p := openai.ChatCompletionNewParams{Model: "teegate-builtin", MaxTokens: openai.Int(4),
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Tell me about lighthouses.")}}
			if _, err := c.Chat.Completions.New(client.WithResult(ctx, &res), p, option.WithResponseInto(&hdr)); err != nil {
				var apiErr *openai.Error
				if errors.As(err, &apiErr) {
					t.Fatalf("%s after the kill: %v %s", gw, err, apiErr.RawJSON())
				}
				t.Fatalf("%s after the kill: %v", gw, err)
			}
			if !res.Verified {
				t.Fatalf("%s after the kill: not verified: %+v", gw, res)
			}
			if code := pollCode(t, ctx, gw+"/v1/attestation/receipts/"+hdr.Header.Get("X-Request-Id"), e.key); code != 200 {
				t.Fatalf("receipt on %s after the kill: %d", gw, code)
			}
		}
	}
}
