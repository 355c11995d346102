package openai

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/teegate/teegate/worker/engine"
)

func TestSSEReaderEventNames(t *testing.T) {
	r := NewSSEReader(strings.NewReader("event: a.b\ndata: 1\n\n: c\ndata: 2\n\nevent: x\n\nevent: y\r\ndata: 3\r\n\r\n"), 0)
	for _, want := range [][2]string{{"a.b", "1"}, {"", "2"}, {"y", "3"}} {
		p, err := r.Next()
		if err != nil || string(p) != want[1] || string(r.Event()) != want[0] {
			t.Fatalf("got %q %q %v, want %v", r.Event(), p, err, want)
		}
	}
}

func responsesServer(t *testing.T, status int, body string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/responses" {
			w.WriteHeader(http.StatusTeapot)
			return
		}
		if status == 200 {
			w.Header().Set("Content-Type", "text/event-stream")
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// A passed-through Responses stream ends with its body after a terminal
// event; ending before one is a truncation, as a chat stream without
// [DONE] is. Events without names take their JSON type.
func TestResponsesPassthroughStreamEnd(t *testing.T) {
	for _, tc := range []struct {
		body string
		ok   bool
	}{
		{"event: response.created\ndata: {\"type\":\"response.created\"}\n\nevent: response.completed\ndata: {\"type\":\"response.completed\"}\n\n", true},
		{"data: {\"type\":\"response.created\"}\n\ndata: {\"type\":\"response.incomplete\"}\n\n", true},
		{"event: response.created\ndata: {\"type\":\"response.created\"}\n\n", false},
	} {
		e, err := New(Config{BaseURL: responsesServer(t, 200, tc.body).URL, Responses: ResponsesPassthrough})
		if err != nil {
			t.Fatal(err)
		}
		res, err := e.Do(context.Background(), engine.Call{Op: engine.OpResponses, Body: []byte(`{"model":"m","input":"x","stream":true}`), Stream: true})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for {
			p, err := res.Stream.Next(context.Background())
			if errors.Is(err, io.EOF) {
				if !tc.ok {
					t.Fatalf("%q: ended cleanly", tc.body)
				}
				break
			}
			if err != nil {
				if tc.ok || !errors.Is(err, ErrStreamTruncated) {
					t.Fatalf("%q: %v", tc.body, err)
				}
				break
			}
			name := engine.EventOf(res.Stream)
			if !strings.Contains(string(p), `"`+name+`"`) {
				t.Fatalf("event %q for %s", name, p)
			}
			names = append(names, name)
		}
		if len(names) == 0 {
			t.Fatalf("%q: no events", tc.body)
		}
	}
}

// Auto mode translates only when the server has no /v1/responses: an
// unknown model (404 model_not_found) is the client's answer, not a
// reason to translate.
func TestResponsesAutoUnknownModel(t *testing.T) {
	srv := responsesServer(t, 404, `{"error":{"message":"The model 'm' does not exist.","type":"NotFoundError","code":404}}`)
	e, err := New(Config{BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.Do(context.Background(), engine.Call{Op: engine.OpResponses, Body: []byte(`{"model":"m","input":"x"}`)})
	ee, ok := engine.AsError(err)
	if !ok || ee.Status != 404 || ee.Code == nil || *ee.Code != CodeModelNotFound {
		t.Fatalf("err = %v", err)
	}
	if e.noResponsesUntil.Load() != 0 {
		t.Fatal("an unknown model marked the endpoint missing")
	}
	if _, err := New(Config{BaseURL: srv.URL, Responses: "sometimes"}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("bad mode: %v", err)
	}
}
