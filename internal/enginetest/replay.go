package enginetest

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Transcript is a recorded HTTP response as `curl -i` saves it (chunk
// framing removed): status, headers, body.
type Transcript struct {
	Status int
	Header http.Header
	Body   []byte
}

// LoadTranscript reads dir/name.response.http.
func LoadTranscript(tb testing.TB, dir, name string) *Transcript {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, name+".response.http"))
	if err != nil {
		tb.Fatal(err)
	}
	head, body, ok := bytes.Cut(raw, []byte("\r\n\r\n"))
	if !ok {
		tb.Fatalf("%s: no end of headers", name)
	}
	lines := strings.Split(string(head), "\r\n")
	_, rest, _ := strings.Cut(lines[0], " ")
	if len(rest) < 3 {
		tb.Fatalf("%s: bad status line", name)
	}
	status, err := strconv.Atoi(rest[:3])
	if err != nil {
		tb.Fatalf("%s: bad status line", name)
	}
	tr := &Transcript{Status: status, Header: http.Header{}, Body: body}
	for _, l := range lines[1:] {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			tb.Fatalf("%s: bad header line %q", name, l)
		}
		tr.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	tr.Header.Del("Transfer-Encoding")
	tr.Header.Del("Content-Length")
	tr.Header.Del("Connection")
	tr.Header.Del("Date")
	return tr
}

// Upstream is an OpenAI-compatible server replaying transcripts from a
// folder: GET /v1/models lists Model; POST /v1/chat/completions answers
// chat-nonstream or chat-stream; POST /v1/responses answers
// responses-nonstream or responses-stream when Responses is set, and 404
// (as a server without the endpoint does) otherwise. A request asks for a
// stream when its body has "stream":true.
type Upstream struct {
	*httptest.Server
	mu    sync.Mutex
	paths []string
}

// Paths lists the POSTed paths in order.
func (u *Upstream) Paths() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.paths...)
}

// NewUpstream starts the replaying server; it stops at test cleanup.
func NewUpstream(tb testing.TB, dir, model string, responses bool) *Upstream {
	tb.Helper()
	trs := map[string]*Transcript{}
	for _, n := range []string{"chat-nonstream", "chat-stream", "responses-nonstream", "responses-stream"} {
		trs[n] = LoadTranscript(tb, dir, n)
	}
	u := &Upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/v1/models" {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"object":"list","data":[{"id":%q,"object":"model","created":1744315746,"owned_by":"system"}]}`, model)
			return
		}
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.paths = append(u.paths, r.URL.Path)
		u.mu.Unlock()
		stream := bytes.Contains(body, []byte(`"stream":true`))
		var name string
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/v1/chat/completions":
			name = "chat-nonstream"
		case r.Method == http.MethodPost && r.URL.Path == "/v1/responses" && responses:
			name = "responses-nonstream"
		default:
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, "404 page not found\n")
			return
		}
		if stream {
			name = strings.Replace(name, "nonstream", "stream", 1)
		}
		tr := trs[name]
		for k, v := range tr.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(tr.Status)
		// Write event by event, flushing, as a streaming server does.
		for _, part := range bytes.SplitAfter(tr.Body, []byte("\n\n")) {
			_, _ = w.Write(part)
			if f, ok := w.(http.Flusher); ok {
				f.Flush()
			}
		}
	}))
	tb.Cleanup(u.Close)
	return u
}
