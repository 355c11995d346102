package openai

import (
	"bufio"
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

const transcriptDir = "testdata/ollama-0.12.6"

// transcript is one recorded exchange: the request body sent and the raw
// HTTP response received.
type transcript struct {
	name    string
	method  string
	path    string
	request []byte // nil for GETs
	status  int
	header  http.Header
	body    []byte // de-chunked when chunked is set
	chunked bool
}

// endpointOf says which request a transcript records, from its name (see the
// README's table).
func endpointOf(name string) (method, path string) {
	switch {
	case name == "models":
		return http.MethodGet, "/v1/models"
	case name == "model-one":
		return http.MethodGet, "/v1/models/tiny"
	case strings.HasPrefix(name, "completions-"):
		return http.MethodPost, "/v1/completions"
	case name == "embeddings":
		return http.MethodPost, "/v1/embeddings"
	}
	return http.MethodPost, "/v1/chat/completions"
}

func loadTranscripts(tb testing.TB) map[string]*transcript {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join(transcriptDir, "*.response.http"))
	if err != nil || len(files) == 0 {
		tb.Fatalf("no transcripts in %s: %v", transcriptDir, err)
	}
	out := make(map[string]*transcript, len(files))
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".response.http")
		raw, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		tr, err := parseRawResponse(raw)
		if err != nil {
			tb.Fatalf("%s: %v", f, err)
		}
		tr.name = name
		tr.method, tr.path = endpointOf(name)
		if tr.method == http.MethodPost {
			if tr.request, err = os.ReadFile(filepath.Join(transcriptDir, name+".request.json")); err != nil {
				tb.Fatal(err)
			}
		}
		out[name] = tr
	}
	return out
}

// parseRawResponse splits a response as `curl -i` saved it: status line,
// CRLF headers, blank line, body. Content-Length, when present, must match
// the body exactly; a chunked body was already de-chunked by curl.
func parseRawResponse(raw []byte) (*transcript, error) {
	head, body, ok := bytes.Cut(raw, []byte("\r\n\r\n"))
	if !ok {
		return nil, fmt.Errorf("no end of headers")
	}
	lines := strings.Split(string(head), "\r\n")
	proto, rest, _ := strings.Cut(lines[0], " ")
	if !strings.HasPrefix(proto, "HTTP/1.") || len(rest) < 3 {
		return nil, fmt.Errorf("bad status line %q", lines[0])
	}
	status, err := strconv.Atoi(rest[:3])
	if err != nil {
		return nil, fmt.Errorf("bad status line %q", lines[0])
	}
	tr := &transcript{status: status, header: http.Header{}}
	for _, l := range lines[1:] {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			return nil, fmt.Errorf("bad header line %q", l)
		}
		tr.header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	if cl := tr.header.Get("Content-Length"); cl != "" {
		n, err := strconv.Atoi(cl)
		if err != nil || n != len(body) {
			return nil, fmt.Errorf("Content-Length %s but %d body bytes", cl, len(body))
		}
	}
	tr.chunked = strings.EqualFold(tr.header.Get("Transfer-Encoding"), "chunked")
	tr.header.Del("Transfer-Encoding")
	tr.body = body
	return tr, nil
}

// sseEvents returns the data payloads of a recorded stream by the simplest
// possible reading (the recordings use LF framing and one data line per
// event), independent of the reader under test.
func sseEvents(body []byte) []string {
	var out []string
	for _, ev := range strings.Split(string(body), "\n\n") {
		if p, ok := strings.CutPrefix(ev, "data: "); ok {
			out = append(out, p)
		}
	}
	return out
}

// replay is a loopback server that answers each request whose method, path
// and body match a transcript with that transcript's response, byte for
// byte; streams are written event by event with a flush after each.
type replay struct {
	*httptest.Server
	mu      sync.Mutex
	hits    map[string]int
	headers map[string]http.Header // last request headers per transcript
}

func newReplay(t testing.TB, trs map[string]*transcript) *replay {
	t.Helper()
	rp := &replay{hits: map[string]int{}, headers: map[string]http.Header{}}
	rp.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("replay: reading request: %v", err)
			return
		}
		var tr *transcript
		for _, c := range trs {
			if c.method == r.Method && c.path == r.URL.Path && bytes.Equal(c.request, body) {
				tr = c
				break
			}
		}
		if tr == nil {
			t.Errorf("replay: no transcript for %s %s", r.Method, r.URL.Path)
			http.Error(w, "no transcript", http.StatusTeapot)
			return
		}
		rp.mu.Lock()
		rp.hits[tr.name]++
		rp.headers[tr.name] = r.Header.Clone()
		rp.mu.Unlock()
		writeTranscript(w, tr)
	}))
	t.Cleanup(rp.Close)
	return rp
}

func (rp *replay) hitCount(name string) int {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return rp.hits[name]
}

func (rp *replay) lastHeader(name string) http.Header {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return rp.headers[name]
}

func writeTranscript(w http.ResponseWriter, tr *transcript) {
	for k, vs := range tr.header {
		w.Header()[k] = vs
	}
	w.WriteHeader(tr.status)
	if !tr.chunked {
		w.Write(tr.body)
		return
	}
	rc := http.NewResponseController(w)
	br := bufio.NewReader(bytes.NewReader(tr.body))
	for {
		// One event (up to and including its blank line) per chunk.
		var ev []byte
		for {
			line, err := br.ReadBytes('\n')
			ev = append(ev, line...)
			if err != nil || len(bytes.TrimRight(line, "\r\n")) == 0 {
				break
			}
		}
		if len(ev) == 0 {
			return
		}
		w.Write(ev)
		rc.Flush()
	}
}
