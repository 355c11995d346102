package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Model names the harness serves. UpstreamModel is what the upstream
// lists (and the openai engine therefore offers); BuiltinModel and
// HoldModel are builtin engines in the stack, the second with a latency
// profile that keeps each stream open after its first token.
const (
	UpstreamModel = "bench-upstream"
	BuiltinModel  = "bench-builtin"
	HoldModel     = "bench-hold"
)

// upstreamWords is the completion the upstream returns: 16 words, about as
// long as the builtin engine's 16-token answers.
var upstreamWords = strings.Fields("The lighthouse keeper climbed the stairs each evening to light the lamp for passing ships tonight.")

// Upstream is a zero-latency OpenAI-compatible server: it reads each
// request and answers at once with a fixed chat completion (JSON, or SSE
// chunks then [DONE] when the body asks for a stream). It is the baseline
// every added latency is measured against.
type Upstream struct {
	URL string
	srv *http.Server
	ln  net.Listener

	models, completion []byte
	chunks             [][]byte
	usageChunk         []byte
}

// StartUpstream listens on a loopback port and serves until Close.
func StartUpstream() (*Upstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("starting upstream: %w", err)
	}
	u := &Upstream{URL: "http://" + ln.Addr().String(), ln: ln}
	u.build()
	u.srv = &http.Server{Handler: u, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = u.srv.Serve(ln) }()
	return u, nil
}

func (u *Upstream) build() {
	const created = 1767225600
	u.models = fmt.Appendf(nil, `{"object":"list","data":[{"id":%q,"object":"model","created":%d,"owned_by":"bench"}]}`, UpstreamModel, created)
	content := strings.Join(upstreamWords, " ")
	u.completion = fmt.Appendf(nil, `{"id":"chatcmpl-bench","object":"chat.completion","created":%d,"model":%q,`+
		`"choices":[{"index":0,"message":{"role":"assistant","content":%q},"finish_reason":"stop"}],`+
		`"usage":{"prompt_tokens":12,"completion_tokens":%d,"total_tokens":%d}}`,
		created, UpstreamModel, content, len(upstreamWords), 12+len(upstreamWords))
	head := fmt.Sprintf(`{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":%d,"model":%q,"choices":`, created, UpstreamModel)
	u.chunks = append(u.chunks, []byte(head+`[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`))
	for i, w := range upstreamWords {
		if i > 0 {
			w = " " + w
		}
		u.chunks = append(u.chunks, fmt.Appendf(nil, `%s[{"index":0,"delta":{"content":%q},"finish_reason":null}]}`, head, w))
	}
	u.chunks = append(u.chunks, []byte(head+`[{"index":0,"delta":{},"finish_reason":"stop"}]}`))
	u.usageChunk = fmt.Appendf(nil, `%s[],"usage":{"prompt_tokens":12,"completion_tokens":%d,"total_tokens":%d}}`,
		head, len(upstreamWords), 12+len(upstreamWords))
}

// ServeHTTP answers GET /v1/models and POST /v1/chat/completions.
func (u *Upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/v1/models" && r.Method == http.MethodGet:
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(u.models)
	case r.URL.Path == "/v1/chat/completions" && r.Method == http.MethodPost:
		body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
		if err != nil {
			http.Error(w, `{"error":{"message":"reading body","type":"invalid_request_error"}}`, http.StatusBadRequest)
			return
		}
		if !bytes.Contains(body, []byte(`"stream":true`)) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(u.completion)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		// One write for the whole stream: the upstream is as fast as it can
		// be, so any time to the first token beyond the direct call's is
		// the stack's.
		var b bytes.Buffer
		for _, c := range u.chunks {
			b.WriteString("data: ")
			b.Write(c)
			b.WriteString("\n\n")
		}
		if bytes.Contains(body, []byte(`"include_usage":true`)) {
			b.WriteString("data: ")
			b.Write(u.usageChunk)
			b.WriteString("\n\n")
		}
		b.WriteString("data: [DONE]\n\n")
		_, _ = w.Write(b.Bytes())
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"error":{"message":"not found","type":"invalid_request_error","code":"not_found"}}`)
	}
}

// Close stops the server.
func (u *Upstream) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := u.srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("stopping upstream: %w", err)
	}
	return nil
}
