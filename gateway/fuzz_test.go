package gateway

import (
	"bufio"
	"bytes"
	"log/slog"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/teegate/teegate/worker/wire"
)

// The relay decodes the worker's stream messages (kind, sequence, status
// headers and payload) and writes SSE for the client. Whatever a message
// holds, the relay does not panic, writes only whole data events, ends the
// stream on anything but the expected next data message, and answers an
// out-of-order or unknown message with the gateway's own error event.
func FuzzRelayHandle(f *testing.F) {
	f.Add(wire.KindData, "1", "", "", []byte(`{"choices":[]}`))
	f.Add(wire.KindEnd, "1", "200", "", []byte(`{"choices":[],"teegate_receipt":{}}`))
	f.Add(wire.KindEnd, "1", "200", "", []byte(nil))
	f.Add(wire.KindError, "1", "502", "", []byte(`{"error":{"message":"m"}}`))
	f.Add("", "", "", "503", []byte(nil))
	f.Add(wire.KindData, "2", "", "", []byte("x"))
	f.Add("bogus", "1", "", "", []byte("a\nb"))
	f.Add(wire.KindData, "+1", "", "", []byte("x"))
	f.Fuzz(func(t *testing.T, kind, seq, status, natsStatus string, data []byte) {
		if bytes.ContainsRune(data, '\r') {
			return // see FuzzWriteEvent: payloads are JSON, which holds no raw CR
		}
		// Without attestation (receipts are checked in TestStreamEndNeedsReceipt).
		g := &Gateway{log: slog.New(slog.DiscardHandler), cfg: Config{Unattested: true}}
		r := testRelay(g, "req_fuzz", false)
		m := &nats.Msg{Header: nats.Header{}, Data: data}
		m.Header.Set(wire.HdrKind, kind)
		m.Header.Set(wire.HdrSeq, seq)
		m.Header.Set(wire.HdrStatus, status)
		m.Header.Set("Status", natsStatus)
		var buf bytes.Buffer
		w := bufio.NewWriter(&buf)
		done, ok := r.handle(w, m)
		_ = w.Flush()
		out := buf.String()

		// Only data lines, each event ended by a blank line.
		if out != "" && !strings.HasSuffix(out, "\n\n") {
			t.Fatalf("output not ended by a blank line: %q", out)
		}
		for _, ev := range strings.Split(strings.TrimSuffix(out, "\n\n"), "\n\n") {
			if ev == "" && out == "" {
				continue
			}
			for _, l := range strings.Split(ev, "\n") {
				if !strings.HasPrefix(l, "data: ") && l != "data:" {
					t.Fatalf("line %q is not a data line in %q", l, out)
				}
			}
		}
		upstream := string(errUpstream().Body())
		switch {
		case wire.IsNoResponders(m):
			if !done || !ok || !strings.Contains(out, string(errNoCapacity().Body())) {
				t.Fatalf("no responders: done=%v ok=%v %q", done, ok, out)
			}
		case !seqIsOne(seq):
			// A gap says chunks were lost (worker_gone), anything else
			// that the worker sent a bad one.
			want := upstream
			if n, err := strconv.Atoi(seq); err == nil && n > 1 {
				want = string(errWorkerGone().Body())
			}
			if !done || ok || !strings.Contains(out, want) {
				t.Fatalf("seq %q accepted: done=%v ok=%v %q", seq, done, ok, out)
			}
		case kind == wire.KindData:
			if done || !ok || r.rx.Next() != 2 {
				t.Fatalf("data: done=%v ok=%v next=%d", done, ok, r.rx.Next())
			}
		case kind == wire.KindEnd:
			if !done || !ok || !strings.HasSuffix(out, "data: [DONE]\n\n") {
				t.Fatalf("end: done=%v ok=%v %q", done, ok, out)
			}
		case kind == wire.KindError:
			if !done || !ok || !strings.HasSuffix(out, "data: [DONE]\n\n") {
				t.Fatalf("error: done=%v ok=%v %q", done, ok, out)
			}
		default:
			if !done || ok || !strings.Contains(out, upstream) {
				t.Fatalf("kind %q accepted: done=%v ok=%v %q", kind, done, ok, out)
			}
		}
	})
}

// testRelay is a relay of a stream whose first message is yet to come,
// with no control subject (a bus without attestation).
func testRelay(g *Gateway, reqID string, events bool) *relay {
	rx := wire.NewStreamReceiver(func(*nats.Msg) error { return nil }, "_TGG.test", wire.DefaultWindow, events)
	return &relay{g: g, a: &attempt{rx: rx}, rx: rx, reqID: reqID, events: events}
}

// seqIsOne is the relay's rule for the first message's sequence number: it
// reads it as a decimal integer (so "+1" and "01" are 1 too).
func seqIsOne(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n == 1
}

// A Responses stream relays named events, refuses a name that could break
// the framing with an "error" event, and ends without [DONE].
func TestRelayResponsesEvents(t *testing.T) {
	g := &Gateway{log: slog.New(slog.DiscardHandler), cfg: Config{Unattested: true}}
	r := testRelay(g, "req_t", true)
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	msg := func(kind, seq, event string, data string) *nats.Msg {
		m := &nats.Msg{Header: nats.Header{}, Data: []byte(data)}
		m.Header.Set(wire.HdrKind, kind)
		m.Header.Set(wire.HdrSeq, seq)
		m.Header.Set(wire.HdrStatus, "200")
		if event != "" {
			m.Header.Set(wire.HdrEvent, event)
		}
		return m
	}
	if done, ok := r.handle(w, msg(wire.KindData, "1", "response.created", `{"type":"response.created"}`)); done || !ok {
		t.Fatal("data refused")
	}
	if done, ok := r.handle(w, msg(wire.KindEnd, "2", "", "")); !done || !ok {
		t.Fatal("end refused")
	}
	_ = w.Flush()
	if got := buf.String(); got != "event: response.created\ndata: {\"type\":\"response.created\"}\n\n" {
		t.Fatalf("relayed %q", got)
	}
	for _, bad := range []string{"", "x\ndata: {}", "a b"} {
		buf.Reset()
		r := testRelay(g, "req_t", true)
		if done, ok := r.handle(w, msg(wire.KindData, "1", bad, `{}`)); !done || ok {
			t.Fatalf("event name %q accepted", bad)
		}
		_ = w.Flush()
		if !strings.HasPrefix(buf.String(), "event: error\ndata: {\"type\":\"error\",\"sequence_number\":0,") {
			t.Fatalf("name %q: %q", bad, buf.String())
		}
	}
}
