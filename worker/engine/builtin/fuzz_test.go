package builtin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"testing"

	"github.com/teegate/teegate/worker/engine"
)

// fuzzDo checks the decoder contract for any body: never panic; either a
// valid response (every byte JSON) or an *engine.Error with a client status.
func fuzzDo(t *testing.T, e *Engine, op engine.Op, body []byte, stream bool) {
	r, err := e.Do(context.Background(), engine.Call{Op: op, Body: body, Stream: stream, RequestID: "fuzz"})
	if err != nil {
		ee, ok := engine.AsError(err)
		if !ok {
			t.Fatalf("non-engine error %v", err)
		}
		if (ee.Status != 400 && ee.Status != 404) || !json.Valid(ee.Body()) {
			t.Fatalf("bad error %d %s", ee.Status, ee.Body())
		}
		return
	}
	if !stream {
		if !json.Valid(r.Body) {
			t.Fatalf("invalid JSON body %q", r.Body)
		}
		return
	}
	defer r.Stream.Close()
	for {
		p, err := r.Stream.Next(context.Background())
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("stream error %v", err)
		}
		if !json.Valid(p) {
			t.Fatalf("invalid JSON payload %q", p)
		}
	}
}

func addSeeds(f *testing.F) {
	for _, b := range readRequests(f) {
		f.Add(b, false)
		f.Add(b, true)
	}
}

func FuzzChatRequest(f *testing.F) {
	addSeeds(f)
	e := testEngine(f)
	f.Fuzz(func(t *testing.T, body []byte, stream bool) { fuzzDo(t, e, chatOp, body, stream) })
}

func FuzzCompletionRequest(f *testing.F) {
	addSeeds(f)
	e := testEngine(f)
	f.Fuzz(func(t *testing.T, body []byte, stream bool) { fuzzDo(t, e, cmplOp, body, stream) })
}

func FuzzEmbeddingRequest(f *testing.F) {
	addSeeds(f)
	e := testEngine(f)
	f.Fuzz(func(t *testing.T, body []byte, _ bool) { fuzzDo(t, e, embOp, body, false) })
}

// TestSeedRequests runs every testdata request through every operation, so
// the fuzz seeds are also plain regression tests.
func TestSeedRequests(t *testing.T) {
	e := testEngine(t)
	for name, b := range readRequests(t) {
		for _, op := range []engine.Op{chatOp, cmplOp, embOp} {
			t.Run(name+"/"+string(op), func(t *testing.T) {
				fuzzDo(t, e, op, b, false)
				if op != embOp {
					fuzzDo(t, e, op, b, true)
				}
			})
		}
	}
}
