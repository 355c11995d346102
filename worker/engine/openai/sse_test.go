package openai

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// readAllEvents runs an SSEReader to its end.
func readAllEvents(r *SSEReader) ([]string, error) {
	var out []string
	for {
		p, err := r.Next()
		if err != nil {
			return out, err
		}
		out = append(out, string(p))
	}
}

// chunkReader returns its data n bytes at a time, to put buffer boundaries
// everywhere (between CR and LF, inside the BOM, inside field names).
type chunkReader struct {
	data []byte
	n    int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := min(c.n, len(p), len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

func TestSSEReader(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want []string
	}{
		{"lf", "data: a\n\ndata: b\n\n", []string{"a", "b"}},
		{"crlf", "data: a\r\n\r\ndata: b\r\n\r\n", []string{"a", "b"}},
		{"lone cr", "data: a\r\rdata: b\r\r", []string{"a", "b"}},
		{"mixed endings", "data: a\r\n\ndata: b\r\r\n", []string{"a", "b"}},
		{"multi-line", "data: a\ndata: b\ndata:c\n\n", []string{"a\nb\nc"}},
		{"empty data line dispatches empty payload", "data\n\n", []string{""}},
		{"data colon only", "data:\n\n", []string{""}},
		{"two empty data lines", "data\ndata\n\n", []string{"\n"}},
		{"only first space stripped", "data:  two\n\n", []string{" two"}},
		{"no space", "data:x\n\n", []string{"x"}},
		{"colon in value", "data: {\"a\":\"b:c\"}\n\n", []string{`{"a":"b:c"}`}},
		{"comments", ": ping\n:\ndata: a\n: mid\n\n", []string{"a"}},
		{"other fields ignored", "event: e\nid: 7\nretry: 100\nfoo: bar\nDATA: x\ndata: a\n\n", []string{"a"}},
		{"event without data not dispatched", "event: e\n\nid: 1\n\n\n\ndata: a\n\n", []string{"a"}},
		{"incomplete last event discarded", "data: a\n\ndata: b\n", []string{"a"}},
		{"unterminated last line discarded", "data: a\n\ndata: b", []string{"a"}},
		{"bom", "\xEF\xBB\xBFdata: a\n\n", []string{"a"}},
		{"bom only once", "\xEF\xBB\xBFdata: a\n\n\xEF\xBB\xBFdata: b\n\n", []string{"a"}},
		{"done is a payload here", "data: [DONE]\n\n", []string{"[DONE]"}},
		{"empty input", "", nil},
		{"cr at end", "data: a\r\r", []string{"a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, n := range []int{1, 2, 3, 7, 1 << 20} {
				got, err := readAllEvents(NewSSEReader(&chunkReader{data: []byte(tc.in), n: n}, 0))
				if err != io.EOF {
					t.Fatalf("chunk %d: end = %v, want io.EOF", n, err)
				}
				if !slices.Equal(got, tc.want) {
					t.Fatalf("chunk %d: got %q, want %q", n, got, tc.want)
				}
			}
		})
	}
}

func TestSSEReaderLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want []string
	}{
		{"event at limit", "data: " + strings.Repeat("x", 16) + "\n\n", []string{strings.Repeat("x", 16)}},
		{"event over limit", "data: a\n\ndata: " + strings.Repeat("x", 17) + "\n\n", []string{"a"}},
		{"joined lines over limit", "data: " + strings.Repeat("x", 8) + "\ndata: " + strings.Repeat("x", 8) + "\n\n", nil},
		{"long line without terminator", ": " + strings.Repeat("x", 200), nil},
		{"long comment line", ": " + strings.Repeat("x", 200) + "\n\ndata: a\n\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, n := range []int{1, 5, 1 << 20} {
				got, err := readAllEvents(NewSSEReader(&chunkReader{data: []byte(tc.in), n: n}, 16))
				if strings.Contains(tc.name, "at limit") {
					if err != io.EOF {
						t.Fatalf("end = %v", err)
					}
				} else if !errors.Is(err, ErrEventTooLarge) {
					t.Fatalf("chunk %d: end = %v, want ErrEventTooLarge", n, err)
				}
				if !slices.Equal(got, tc.want) {
					t.Fatalf("chunk %d: got %q, want %q", n, got, tc.want)
				}
			}
		})
	}
}

func TestSSEReaderSourceErrors(t *testing.T) {
	boom := errors.New("boom")
	r := NewSSEReader(io.MultiReader(strings.NewReader("data: a\n\ndata: b"), iotest.ErrReader(boom)), 0)
	got, err := readAllEvents(r)
	if !errors.Is(err, boom) || !slices.Equal(got, []string{"a"}) {
		t.Fatalf("got %q, %v", got, err)
	}
	if _, again := r.Next(); !errors.Is(again, boom) {
		t.Fatalf("error not sticky: %v", again)
	}

	// A source that never makes progress must not spin forever.
	_, err = NewSSEReader(emptyReader{}, 0).Next()
	if !errors.Is(err, io.ErrNoProgress) {
		t.Fatalf("empty reads: %v", err)
	}

	_, err = NewSSEReader(iotest.TimeoutReader(strings.NewReader("data: a\n\n")), 0).Next()
	if err != nil {
		t.Fatalf("first read of a TimeoutReader: %v", err)
	}
}

type emptyReader struct{}

func (emptyReader) Read([]byte) (int, error) { return 0, nil }

func TestSSEReaderReplayBodies(t *testing.T) {
	for name, tr := range loadTranscripts(t) {
		if !tr.chunked {
			continue
		}
		t.Run(name, func(t *testing.T) {
			got, err := readAllEvents(NewSSEReader(iotest.OneByteReader(bytes.NewReader(tr.body)), 0))
			if err != io.EOF || !slices.Equal(got, sseEvents(tr.body)) {
				t.Fatalf("got %d events (%v), want %d", len(got), err, len(sseEvents(tr.body)))
			}
		})
	}
}

// refSSE is a deliberately naive reading of the WHATWG rules, written
// independently of SSEReader's buffering, for differential fuzzing.
func refSSE(in []byte) []string {
	s := strings.TrimPrefix(string(in), "\xEF\xBB\xBF")
	var lines []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\n':
			lines = append(lines, s[start:i])
			start = i + 1
		case '\r':
			lines = append(lines, s[start:i])
			if i+1 < len(s) && s[i+1] == '\n' {
				i++
			}
			start = i + 1
		}
	}
	var out []string
	data := ""
	for _, l := range lines {
		if l == "" {
			if data != "" {
				out = append(out, data[:len(data)-1])
			}
			data = ""
			continue
		}
		if l[0] == ':' {
			continue
		}
		field, value, found := strings.Cut(l, ":")
		if found {
			value = strings.TrimPrefix(value, " ")
		}
		if field == "data" {
			data += value + "\n"
		}
	}
	return out
}

func FuzzSSEReader(f *testing.F) {
	for _, tr := range loadTranscripts(f) {
		if tr.chunked {
			f.Add(tr.body, uint8(7))
		}
	}
	for _, s := range []string{
		"data: a\r\n\r\ndata: b\r\rdata: c\n\n",
		"\xEF\xBB\xBFdata:x\ndata\n\n:c\nevent: e\n\n",
		"data: a\r",
		"\r\n\r\n\n\r",
	} {
		f.Add([]byte(s), uint8(1))
	}
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		want := refSSE(in)
		n := int(chunk%16) + 1
		got, err := readAllEvents(NewSSEReader(&chunkReader{data: in, n: n}, 1<<20))
		if err != io.EOF {
			t.Fatalf("end = %v", err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("chunk %d: got %q, reference %q", n, got, want)
		}
		for _, p := range got {
			if strings.ContainsRune(p, '\r') {
				t.Fatalf("payload holds a CR: %q", p)
			}
		}
		// With a small limit the reader either agrees or stops with
		// ErrEventTooLarge after a prefix of the events, none over the limit.
		const limit = 8
		small, err := readAllEvents(NewSSEReader(&chunkReader{data: in, n: n}, limit))
		if err != io.EOF && !errors.Is(err, ErrEventTooLarge) {
			t.Fatalf("limited end = %v", err)
		}
		if len(small) > len(want) || !slices.Equal(small, want[:len(small)]) {
			t.Fatalf("limited reader diverged: %q vs %q", small, want)
		}
		for _, p := range small {
			if len(p) > limit {
				t.Fatalf("payload of %d bytes over the limit", len(p))
			}
		}
	})
}

func BenchmarkSSEReader(b *testing.B) {
	trs := loadTranscripts(b)
	event := trs["chat-stream"].body
	event = event[:bytes.Index(event, []byte("data: [DONE]"))]
	var in []byte
	for len(in) < 1<<20 {
		in = append(in, event...)
	}
	events := len(sseEvents(in))
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	src := bytes.NewReader(in)
	for b.Loop() {
		src.Reset(in)
		r := NewSSEReader(src, 0)
		n := 0
		for {
			if _, err := r.Next(); err != nil {
				break
			}
			n++
		}
		if n != events {
			b.Fatalf("read %d events, want %d", n, events)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*events), "ns/event")
}
