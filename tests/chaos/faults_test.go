package chaos

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/teegate/teegate/internal/enginetest"
	"github.com/teegate/teegate/internal/stack"
	"github.com/teegate/teegate/internal/stacktest"
	"github.com/teegate/teegate/worker/engine"
	"github.com/teegate/teegate/worker/engine/builtin"
)

// TestEngineSlowerThanDeadline: an engine that takes longer than the
// request deadline gets a 504 deadline_exceeded for the client, and the
// generation is stopped in the worker (its context ends), for non-stream
// and stream requests alike.
func TestEngineSlowerThanDeadline(t *testing.T) {
	slow := &watched{Engine: stacktest.Builtin(t, builtin.Config{ModelID: "chaos-slow", Latency: builtin.Latency{TTFT: 10 * time.Minute}})}
	s := start(t, stacktest.WithEngines(slow), withGateway(func(c *stack.Config) { c.Gateway.RequestTimeout = time.Second }))
	base := quiet()
	for i := range scale(2, 10) {
		stream := i%2 == 1
		resp, b := post(t, s.URL, chatBody("chaos-slow", 8, stream))
		if stream {
			// The stream had started (the role chunk comes before the first
			// token), so the deadline arrives as its last event, an OpenAI
			// error, followed only by [DONE].
			events := sseData(b)
			if resp.StatusCode != http.StatusOK || len(events) < 2 {
				t.Fatalf("slow stream: status %d: %s", resp.StatusCode, b)
			}
			last := events[len(events)-2]
			wantAPIError(t, "slow stream's last event", http.StatusGatewayTimeout, []byte(last), http.StatusGatewayTimeout, "timeout", "deadline_exceeded")
			if events[len(events)-1] != "[DONE]" || slices.Index(events, "[DONE]") != len(events)-1 {
				t.Errorf("slow stream: the deadline error is not followed by one [DONE]: %s", b)
			}
		} else {
			wantAPIError(t, "slow engine", resp.StatusCode, b, http.StatusGatewayTimeout, "timeout", "deadline_exceeded")
		}
		eventually(t, 30*time.Second, "the slow generation to stop", func() bool { return slow.open.Load() == 0 })
	}
	if n := slow.calls.Load(); n != int64(scale(2, 10)) {
		t.Errorf("engine calls = %d", n)
	}
	settled(t, base, "engine slower than the deadline")
}

// TestClientDisconnectStopsGeneration: a client that goes away in the
// middle of a stream stops the generation in the worker. The delay from
// the disconnect to the engine's stream being stopped is logged (target
// 100 ms); the test asserts only that it stops, within a generous bound.
func TestClientDisconnectStopsGeneration(t *testing.T) {
	eng := &watched{Engine: stacktest.Builtin(t, builtin.Config{ModelID: "chaos-drip", Latency: builtin.Latency{PerToken: 2 * time.Millisecond}})}
	s := start(t, stacktest.WithEngines(eng))
	base := quiet()
	var delays []time.Duration
	for range scale(5, 50) {
		req, _ := http.NewRequest(http.MethodPost, s.URL+"/v1/chat/completions", strings.NewReader(chatBody("chaos-drip", 4000, true)))
		req.Header.Set("Authorization", "Bearer "+stacktest.APIKey)
		tr := &http.Transport{}
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(resp.Body)
		for range 3 {
			firstEvent(t, br)
		}
		gone := time.Now()
		resp.Body.Close() // an unfinished body: the connection is closed
		tr.CloseIdleConnections()
		eventually(t, 30*time.Second, "generation to stop after the client left", func() bool { return eng.open.Load() == 0 })
		delays = append(delays, eng.lastStop().Sub(gone))
	}
	slices.Sort(delays)
	t.Logf("client disconnect → generation stopped: median %v, max %v over %d streams (target 100 ms)",
		delays[len(delays)/2], delays[len(delays)-1], len(delays))
	if worst := delays[len(delays)-1]; worst > 10*time.Second {
		t.Errorf("generation went on %v after the client left", worst)
	}
	settled(t, base, "client disconnects")
	mustServe(t, s.URL, "chaos-drip")
}

// floodCase is one malformed request and the error it must get.
type floodCase struct {
	name         string
	method, path string
	body         string
	auth         string // "" means the test key; "-" none
	status       int
	typ, code    string
}

func floodCases(model string, bodyLimit int) []floodCase {
	nested := strings.Repeat("[", 100000) + strings.Repeat("]", 100000)
	return []floodCase{
		{name: "truncated JSON", body: `{"model":`, status: 400, typ: "invalid_request_error"},
		{name: "array body", body: `[]`, status: 400, typ: "invalid_request_error"},
		{name: "empty body", body: ``, status: 400, typ: "invalid_request_error"},
		{name: "trailing data", body: chatBody(model, 4, false) + `{}`, status: 400, typ: "invalid_request_error"},
		{name: "no model", body: `{"messages":[{"role":"user","content":"hi"}]}`, status: 400, typ: "invalid_request_error"},
		{name: "unknown model", body: chatBody("chaos-no-such-model", 4, false), status: 404, typ: "invalid_request_error", code: "model_not_found"},
		{name: "empty messages", body: fmt.Sprintf(`{"model":%q,"messages":[]}`, model), status: 400, typ: "invalid_request_error"},
		{name: "messages not an array", body: fmt.Sprintf(`{"model":%q,"messages":"hi"}`, model), status: 400, typ: "invalid_request_error"},
		{name: "bad role", body: fmt.Sprintf(`{"model":%q,"messages":[{"role":"robot","content":"hi"}]}`, model), status: 400, typ: "invalid_request_error"},
		{name: "negative max_tokens", body: chatBody(model, -1, false), status: 400, typ: "invalid_request_error"},
		{name: "temperature out of range", body: fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hi"}],"temperature":9}`, model), status: 400, typ: "invalid_request_error"},
		{name: "stream_options without stream", body: fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":true}}`, model), status: 400, typ: "invalid_request_error"},
		{name: "deep nesting", body: fmt.Sprintf(`{"model":%q,"messages":%s}`, model, nested[:min(len(nested), bodyLimit-64)]), status: 400, typ: "invalid_request_error"},
		{name: "no API key", body: chatBody(model, 4, false), auth: "-", status: 401, typ: "invalid_request_error"},
		{name: "wrong API key", body: chatBody(model, 4, false), auth: "sk-wrong", status: 401, typ: "invalid_request_error", code: "invalid_api_key"},
		{name: "unknown path", path: "/v1/no-such-endpoint", body: `{}`, status: 404, typ: "invalid_request_error", code: "not_found"},
		// OpenAI answers a wrong method as an unknown URL, 404.
		{name: "wrong method", method: http.MethodGet, status: 404, typ: "invalid_request_error", code: "not_found"},
		{name: "embeddings stream", path: "/v1/embeddings", body: fmt.Sprintf(`{"model":%q,"input":"hi","stream":true}`, model), status: 400, typ: "invalid_request_error"},
	}
}

func (c floodCase) do(base string) (int, []byte, error) {
	method, path := c.method, c.path
	if method == "" {
		method = http.MethodPost
	}
	if path == "" {
		path = "/v1/chat/completions"
	}
	var body io.Reader
	if c.body != "" {
		body = strings.NewReader(c.body)
	}
	req, err := http.NewRequest(method, base+path, body)
	if err != nil {
		return 0, nil, err
	}
	switch c.auth {
	case "":
		req.Header.Set("Authorization", "Bearer "+stacktest.APIKey)
	case "-":
	default:
		req.Header.Set("Authorization", "Bearer "+c.auth)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// rawCase is a request that breaks HTTP itself, sent on a bare connection.
type rawCase struct {
	name  string
	req   string
	codes []int  // acceptable statuses
	code  string // the OpenAI error code it must carry, if any; "-": any body
}

func rawCases(host string, bodyLimit int) []rawCase {
	auth := "Authorization: Bearer " + stacktest.APIKey + "\r\n"
	return []rawCase{
		// The body is announced, not sent: the answer comes from the
		// headers alone, before a byte of it is read. (Sent in full, the
		// server's close after its 413 can reset the connection before the
		// client reads the answer.)
		{"oversized body", fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
			host, auth, bodyLimit+1), []int{413}, "request_too_large"},
		// Not HTTP at all: fasthttp answers before any handler, in text.
		{"garbage request line", "\x00\x01\x02 nonsense\r\n\r\n", []int{400}, "-"},
		{"bad Content-Length", "POST /v1/chat/completions HTTP/1.1\r\nHost: " + host + "\r\n" + auth + "Content-Length: -5\r\n\r\n", []int{400}, ""},
	}
}

// hygieneCases break HTTP framing: headers or URL beyond the gateway's
// limits, and conflicting Content-Length headers (request smuggling).
func hygieneCases(host string) []rawCase {
	body := chatBody(stacktest.APIKey, 4, false)
	auth := "Authorization: Bearer " + stacktest.APIKey + "\r\n"
	return []rawCase{
		{"huge header", "POST /v1/chat/completions HTTP/1.1\r\nHost: " + host + "\r\n" + auth + "X-Big: " + strings.Repeat("a", 64<<10) + "\r\nContent-Length: 2\r\n\r\n{}", []int{431}, "headers_too_large"},
		{"huge URL", "GET /v1/models?" + strings.Repeat("a", 64<<10) + " HTTP/1.1\r\nHost: " + host + "\r\n" + auth + "\r\n", []int{414, 431}, ""},
		{"duplicate Content-Length", fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\n%sContent-Length: %d\r\nContent-Length: 5\r\n\r\n%s", host, auth, len(body), body), []int{400}, ""},
	}
}

// do sends the raw request and returns the status and body the server
// answered with (status 0 when it closed the connection without one).
func (c rawCase) do(host string) (int, []byte, error) {
	conn, err := net.DialTimeout("tcp", host, 10*time.Second)
	if err != nil {
		return 0, nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	// A write error means the server hung up early; its answer may still
	// be there to read.
	_, _ = io.WriteString(conn, c.req)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, nil, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, nil
}

// TestMalformedFlood: a flood of malformed, oversized and unauthenticated
// requests, each refused with the right status and OpenAI error while
// normal requests keep being served; nothing leaks.
func TestMalformedFlood(t *testing.T) {
	const bodyLimit = 64 << 10
	s := start(t, withGateway(func(c *stack.Config) { c.Gateway.BodyLimit = bodyLimit }))
	model := "teegate-builtin"
	mustServe(t, s.URL, model)
	base := quiet()
	cases := floodCases(model, bodyLimit)
	host := strings.TrimPrefix(s.URL, "http://")
	raw := append(rawCases(host, bodyLimit), hygieneCases(host)...)
	rounds := scale(20, 200)

	var wg sync.WaitGroup
	stop := make(chan struct{})
	served := 0
	var goodErr error
	wg.Add(1)
	go func() { // normal traffic all along
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			st, b, err := floodCase{body: chatBody(model, 4, false), status: 200}.do(s.URL)
			if err != nil || st != 200 {
				goodErr = fmt.Errorf("a normal request during the flood: %d %v %s", st, err, b)
				return
			}
			served++
		}
	}()
	var mu sync.Mutex
	type failure struct {
		c      floodCase
		status int
		body   []byte
		err    error
	}
	var failures []failure
	var rawFailures []string
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				for _, c := range cases {
					st, b, err := c.do(s.URL)
					if err != nil || st != c.status {
						mu.Lock()
						failures = append(failures, failure{c, st, b, err})
						mu.Unlock()
						continue
					}
					mu.Lock()
					failures = append(failures, failure{c: c, status: -1, body: b}) // checked below
					mu.Unlock()
				}
				rc := raw[(r+w)%len(raw)]
				st, b, err := rc.do(host)
				var e apiError
				switch {
				case err != nil || !slices.Contains(rc.codes, st):
					mu.Lock()
					rawFailures = append(rawFailures, fmt.Sprintf("%s: status %d, want one of %v (%v)", rc.name, st, rc.codes, err))
					mu.Unlock()
				case rc.code == "-":
				case json.Unmarshal(b, &e) != nil || e.Error.Message == "" || (rc.code != "" && (e.Error.Code == nil || *e.Error.Code != rc.code)):
					mu.Lock()
					rawFailures = append(rawFailures, fmt.Sprintf("%s: not the OpenAI error %q: %s", rc.name, rc.code, truncate(b)))
					mu.Unlock()
				}
			}
		}()
	}
	// Wait for the malformed senders, then stop the normal traffic.
	waitFlood := make(chan struct{})
	go func() {
		for {
			mu.Lock()
			n := len(failures)
			mu.Unlock()
			if n >= 8*rounds*len(cases) {
				close(waitFlood)
				return
			}
			time.Sleep(10 * time.Millisecond) // polling interval
		}
	}()
	select {
	case <-waitFlood:
	case <-time.After(5 * time.Minute):
		t.Fatal("the flood did not finish")
	}
	close(stop)
	wg.Wait()
	if goodErr != nil {
		t.Fatal(goodErr)
	}
	seen := map[string]bool{}
	for _, f := range failures {
		if f.status == -1 {
			if !seen[f.c.name] {
				seen[f.c.name] = true
				wantAPIError(t, f.c.name, f.c.status, f.body, f.c.status, f.c.typ, f.c.code)
			}
			continue
		}
		if !seen["fail "+f.c.name] {
			seen["fail "+f.c.name] = true
			t.Errorf("%s: status %d (want %d), err %v: %s", f.c.name, f.status, f.c.status, f.err, truncate(f.body))
		}
	}
	for _, f := range dedupe(rawFailures) {
		t.Error(f)
	}
	t.Logf("flood: %d malformed requests in %d rounds × 8 senders, %d normal requests served meanwhile", len(failures), rounds, served)
	if served == 0 {
		t.Error("no normal request was served during the flood")
	}
	settled(t, base, "malformed flood")
	mustServe(t, s.URL, model)
}

// sseData returns the data payloads of an SSE body.
func sseData(b []byte) []string {
	var out []string
	for line := range strings.SplitSeq(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "data: "); ok {
			out = append(out, p)
		}
	}
	return out
}

func dedupe(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}

func truncate(b []byte) []byte {
	if len(b) > 300 {
		return b[:300]
	}
	return b
}

// TestSlowReadingClient: a client that stops reading a stream cannot make
// the stack buffer without bound: flow control stops the worker, which gives
// up after its ack timeout, and everyone else is served meanwhile.
func TestSlowReadingClient(t *testing.T) {
	fast := enginetest.NewGated("chaos-fast")
	fast.Infinite = true // a stream never ends by itself
	fast.Body = []byte(`{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`)
	eng := &watched{Engine: fast}
	s := start(t, stacktest.WithEngines(eng), withGateway(func(c *stack.Config) { c.Worker.AckTimeout = 2 * time.Second }))
	mustServe(t, s.URL, "chaos-fast")
	base := quiet()
	host := strings.TrimPrefix(s.URL, "http://")
	var conns []net.Conn
	for range scale(4, 32) {
		c, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.(*net.TCPConn).SetReadBuffer(4096)
		body := chatBody("chaos-fast", 100000, true)
		fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
			host, stacktest.APIKey, len(body), body)
		conns = append(conns, c) // never read
	}
	eventually(t, 30*time.Second, "the slow readers' streams to start", func() bool { return eng.calls.Load() >= int64(len(conns)+1) })
	for range 5 {
		mustServe(t, s.URL, "chaos-fast")
	}
	eventually(t, 90*time.Second, "generation for the slow readers to stop", func() bool { return eng.open.Load() == 0 })
	for _, c := range conns {
		c.Close()
	}
	settled(t, base, "slow readers")
	mustServe(t, s.URL, "chaos-fast")
}

// TestSlowWritingClient: clients that send their request a byte at a time,
// or stop halfway, hold nothing but their own connection: others are served
// meanwhile, a slow but complete request is answered, a stalled one is
// dropped when it goes away.
func TestSlowWritingClient(t *testing.T) {
	s := start(t)
	model := "teegate-builtin"
	mustServe(t, s.URL, model)
	base := quiet()
	host := strings.TrimPrefix(s.URL, "http://")
	body := chatBody(model, 4, false)
	req := fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		host, stacktest.APIKey, len(body), body)
	gap := scale(5*time.Millisecond, 50*time.Millisecond)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range scale(4, 16) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", host)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			n := len(req)
			if i%2 == 1 {
				n = len(req) - len(body)/2 // stalls halfway through the body
			}
			for j := range n {
				if _, err := c.Write([]byte{req[j]}); err != nil {
					errs <- fmt.Errorf("slow writer %d: %w", i, err)
					return
				}
				time.Sleep(gap) // the slowness under test, not synchronization
			}
			if i%2 == 1 {
				return // goes away without finishing
			}
			_ = c.SetReadDeadline(time.Now().Add(time.Minute))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				errs <- fmt.Errorf("slow writer %d: %w", i, err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !bytes.Contains(b, []byte(`"choices"`)) {
				errs <- fmt.Errorf("slow writer %d: status %d: %s", i, resp.StatusCode, b)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	served := 0
	for loop := true; loop; {
		select {
		case <-done:
			loop = false
		default:
			mustServe(t, s.URL, model)
			served++
		}
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("slow writers: %d normal requests served meanwhile", served)
	settled(t, base, "slow writers")
}

var _ engine.Engine = (*watched)(nil)
