package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// TestBenchJSONShape runs `teegate bench --json` in a tiny mode (a few
// hundred requests, 20 held streams) and checks the report's shape and
// that nothing failed. Speed is never asserted.
func TestBenchJSONShape(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two stacks")
	}
	var out, errb bytes.Buffer
	code := run([]string{"bench", "-json", "-rates", "40", "-duration", "300ms", "-peak-duration", "300ms",
		"-conns", "4", "-ttft", "5", "-streams", "20", "-streams-in-process", "-overload-duration", "300ms"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var rep map[string]any
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("not one JSON object: %v\n%s", err, out.String())
	}
	for _, k := range []string{"direct_rps", "stack_rps", "builtin_rps", "peak_ratio", "added_p50_ms", "added_p99_ms",
		"ttft_added_p50_ms", "stream_rss_kib_per_stream", "streams_open", "errors",
		"overload_goodput_ratio", "overload_refused", "overload_refused_p99_ms", "overload_timeouts"} {
		if _, ok := rep[k].(float64); !ok {
			t.Errorf("%s: want a number, got %#v", k, rep[k])
		}
	}
	if c, _ := rep["commit"].(string); c == "" {
		t.Error("no commit")
	}
	m, _ := rep["machine"].(map[string]any)
	if cores, _ := m["cores"].(float64); cores < 1 {
		t.Errorf("machine cores: %#v", m["cores"])
	}
	if cpu, _ := m["cpu_model"].(string); cpu == "" {
		t.Errorf("machine cpu_model: %#v", m["cpu_model"])
	}
	if e := rep["errors"].(float64); e != 0 {
		t.Errorf("errors = %v\n%s", e, out.String())
	}
	if n := rep["streams_open"].(float64); n != 20 {
		t.Errorf("streams_open = %v, want 20", n)
	}
	if ov, _ := rep["overload"].(map[string]any); ov == nil || ov["offered_rps"].(float64) < 1 || ov["requests"].(float64) < 1 {
		t.Errorf("overload section: %#v", rep["overload"])
	}
	for _, k := range []string{"rates", "peak", "ttft", "streams", "overload"} {
		if rep[k] == nil {
			t.Errorf("no %q section", k)
		}
	}
	// The text report names every target.
	out.Reset()
	if code := run([]string{"bench", "-rates", "40", "-duration", "200ms", "-peak-duration", "200ms", "-conns", "2",
		"-ttft", "2", "-streams", "0", "-overload-duration", "0"}, &out, &errb); code != 0 {
		t.Fatalf("text run: exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"direct", "stack (openai)", "stack (builtin)", "errors: 0"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, out.String())
		}
	}
}

func TestBenchRejectsBadRates(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"bench", "-rates", "10,x"}, &out, &errb); code != 2 {
		t.Fatalf("exit %d, want 2: %s", code, errb.String())
	}
}
