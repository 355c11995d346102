package wire

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// The request's headers are exactly those gateways sent before the typed
// messages (plus Teegate-Accept), so older workers read it unchanged.
func TestRequestMsgFormat(t *testing.T) {
	dl := time.UnixMilli(1795768664123)
	r := Request{ID: "req_1", Op: OpChat, Model: "m.x", Tenant: "acme", Stream: true, Deadline: dl, Nonce: "n 1",
		Inline: true, Window: 32, Accept: true, Traceparent: "00-abc-def-01", Body: []byte(`{"model":"m.x"}`)}
	m := r.Msg(InferSubject(r.Model))
	want := nats.Header{
		HdrVersion: {"1"}, HdrRequestID: {"req_1"}, HdrOp: {OpChat}, HdrModel: {"m.x"}, HdrTenant: {"acme"},
		HdrDeadline: {"1795768664123"}, HdrNonce: {"n 1"}, HdrInline: {"1"}, HdrStream: {"1"}, HdrWindow: {"32"},
		HdrAccept: {"1"}, HdrTrace: {"00-abc-def-01"},
	}
	if !reflect.DeepEqual(m.Header, want) || m.Subject != "teegate.v1.infer.m%2Ex" || string(m.Data) != `{"model":"m.x"}` {
		t.Fatalf("request message %q %v %q", m.Subject, m.Header, m.Data)
	}
	got, err := ParseRequest(m.Header, m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Deadline.Equal(dl) {
		t.Fatalf("deadline %v", got.Deadline)
	}
	got.Deadline = dl
	if !reflect.DeepEqual(got, r) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, r)
	}
	// A non-stream request without the optional parts has no headers for them.
	plain := (&Request{ID: "req_2", Op: OpEmbeddings, Model: "e"}).Msg("s")
	for _, k := range []string{HdrTenant, HdrDeadline, HdrNonce, HdrInline, HdrStream, HdrWindow, HdrAccept, HdrTrace} {
		if plain.Header.Get(k) != "" {
			t.Errorf("plain request sets %s", k)
		}
	}
}

// Every check of ParseRequest, one flipped value each.
func TestParseRequestRefuses(t *testing.T) {
	good := func() nats.Header {
		return (&Request{ID: "req_1", Op: OpChat, Model: "m", Stream: true}).Msg("s").Header
	}
	if r, err := ParseRequest(good(), nil); err != nil || r.Window != DefaultWindow || r.ID != "req_1" {
		t.Fatalf("good request: %+v %v", r, err)
	}
	for name, tc := range map[string]struct {
		key, value string
		want       error
	}{
		"other version": {HdrVersion, "2", ErrVersion},
		"no version":    {HdrVersion, "", ErrVersion},
		"unknown op":    {HdrOp, "images", ErrBadRequest},
		"no op":         {HdrOp, "", ErrBadRequest},
	} {
		h := good()
		h.Set(tc.key, tc.value)
		if _, err := ParseRequest(h, nil); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	// Values that are not refused but not believed either.
	for _, id := range []string{"", "a.b", "a b", strings.Repeat("x", MaxRequestID+1), "req>"} {
		h := good()
		h.Set(HdrRequestID, id)
		if r, err := ParseRequest(h, nil); err != nil || r.ID != "" {
			t.Errorf("id %q: kept %q (%v)", id, r.ID, err)
		}
	}
	h := good()
	h.Set(HdrWindow, "-1")
	h.Set(HdrDeadline, "soon")
	if r, err := ParseRequest(h, nil); err != nil || r.Window != DefaultWindow || !r.Deadline.IsZero() {
		t.Errorf("bad window/deadline: %+v %v", r, err)
	}
}

// The error table gives the worker's replies their exact former bodies
// and the gateway's errors their statuses and types.
func TestErrorTable(t *testing.T) {
	for code, want := range map[string]struct {
		status int
		body   string
	}{
		CodeBusy:       {503, `{"error":{"message":"m","type":"server_error","param":null,"code":"worker_busy"}}`},
		CodeVersion:    {503, `{"error":{"message":"m","type":"server_error","param":null,"code":"protocol_version"}}`},
		CodeBad:        {400, `{"error":{"message":"m","type":"invalid_request_error","param":null,"code":null}}`},
		CodeInternal:   {500, `{"error":{"message":"m","type":"server_error","param":null,"code":null}}`},
		CodeDeadline:   {504, `{"error":{"message":"m","type":"timeout","param":null,"code":"deadline_exceeded"}}`},
		CodeNoCapacity: {503, `{"error":{"message":"m","type":"server_error","param":null,"code":"no_capacity"}}`},
		CodeWorkerGone: {502, `{"error":{"message":"m","type":"server_error","param":null,"code":"worker_gone"}}`},
		CodeBadReply:   {502, `{"error":{"message":"m","type":"server_error","param":null,"code":"bad_worker_reply"}}`},
		CodeNoReceipt:  {502, `{"error":{"message":"m","type":"server_error","param":null,"code":"missing_receipt"}}`},
		CodeBusDown:    {503, `{"error":{"message":"m","type":"server_error","param":null,"code":"bus_unavailable"}}`},
	} {
		e := Errorf(code, "m")
		if e.Status != want.status || string(e.Body()) != want.body || e.Wire != code {
			t.Errorf("%s: %d %s", code, e.Status, e.Body())
		}
	}
	if !Retryable(CodeBusy) || Retryable(CodeEngine) || Retryable(CodeInternal) || Retryable("nonsense") {
		t.Error("only busy is retryable")
	}
	// What the bus or the deadline cut short may be asked again.
	for _, c := range []string{CodeNoCapacity, CodeDeadline, CodeWorkerGone, CodeBusDown, CodeBusy} {
		if Errorf(c, "").RetryAfter != 1 {
			t.Errorf("%s: no Retry-After", c)
		}
	}
	if Errorf(CodeBad, "").RetryAfter != 0 || Errorf(CodeBadReply, "").RetryAfter != 0 {
		t.Error("Retry-After on an error that retrying does not cure")
	}
	if _, ok := Spec("nonsense"); ok {
		t.Error("unknown code in the table")
	}
}

func goodReply() *nats.Msg {
	r := &Reply{Kind: KindResponse, Status: 200, Worker: "w-1", Body: []byte(`{}`),
		Attestation: nats.Header{HdrReceipt: {"eyJh"}, HdrEvidenceID: {strings.Repeat("ab", 32)}}}
	return &nats.Msg{Header: r.Header(), Data: r.Body}
}

// Every check of ParseReply, one flipped header each: the named error.
func TestParseReplyRefuses(t *testing.T) {
	r, err := ParseReply(goodReply())
	if err != nil || r.Kind != KindResponse || r.Status != 200 || r.Worker != "w-1" || r.ContentType != "application/json" ||
		r.Attestation.Get(HdrReceipt) != "eyJh" {
		t.Fatalf("good reply: %+v %v", r, err)
	}
	eng := &Reply{Kind: KindError, Status: 422, Code: CodeEngine, Body: []byte(`{}`)}
	if r, err := ParseReply(&nats.Msg{Header: eng.Header(), Data: eng.Body}); err != nil || r.Status != 422 {
		t.Fatalf("engine error with its own status: %+v %v", r, err)
	}
	e := ErrorReply("w-1", Errorf(CodeBusy, "busy"))
	if r, err := ParseReply(&nats.Msg{Header: e.Header(), Data: e.Body}); err != nil || r.Code != CodeBusy || r.Status != 503 {
		t.Fatalf("busy reply: %+v %v", r, err)
	}
	for name, set := range map[string]func(h nats.Header){
		"status not a number":   func(h nats.Header) { h.Set(HdrStatus, "ok") },
		"success with 404":      func(h nats.Header) { h.Set(HdrStatus, "404") },
		"unknown kind":          func(h nats.Header) { h.Set(HdrKind, "data") },
		"error with 200":        func(h nats.Header) { h.Set(HdrKind, KindError) },
		"busy that is not 503":  func(h nats.Header) { h.Set(HdrKind, KindError); h.Set(HdrStatus, "500"); h.Set(HdrError, CodeBusy) },
		"html":                  func(h nats.Header) { h.Set(HdrContentType, "text/html") },
		"json in latin1":        func(h nats.Header) { h.Set(HdrContentType, "application/json; charset=latin1") },
		"receipt not base64url": func(h nats.Header) { h.Set(HdrReceipt, "a+b") },
		"receipt too long":      func(h nats.Header) { h.Set(HdrReceipt, strings.Repeat("A", MaxReceiptHeader+1)) },
		"evidence id not hex":   func(h nats.Header) { h.Set(HdrEvidenceID, strings.Repeat("AB", 32)) },
		"worker not a token":    func(h nats.Header) { h.Set(HdrWorker, "w.1") },
		"repeated receipt":      func(h nats.Header) { h.Add(HdrReceipt, "eyJh") },
		"repeated status":       func(h nats.Header) { h.Add(HdrStatus, "200") },
		"huge headers":          func(h nats.Header) { h.Set("X-Pad", strings.Repeat("x", MaxReplyHeaderBytes)) },
	} {
		m := goodReply()
		set(m.Header)
		if _, err := ParseReply(m); !errors.Is(err, ErrBadReply) {
			t.Errorf("%s: %v, want ErrBadReply", name, err)
		}
	}
}

func TestParseAccept(t *testing.T) {
	ev := strings.Repeat("0f", 32)
	a := Accept{Worker: "w-1", EvidenceID: ev, Control: "_TGW.UKEY.abc.123"}
	got, err := ParseAccept(a.Msg("_TGG.x.y"))
	if err != nil || got != a {
		t.Fatalf("accept round trip: %+v %v", got, err)
	}
	for name, b := range map[string]Accept{
		"wildcard control": {Worker: "w", Control: "_TGW.UKEY.>"},
		"empty token":      {Worker: "w", Control: "_TGW..x"},
		"no control":       {Worker: "w"},
		"long control":     {Worker: "w", Control: "a." + strings.Repeat("b", MaxControlSubject)},
		"bad evidence id":  {Worker: "w", EvidenceID: "xyz", Control: "a.b"},
		"bad worker":       {Worker: "w 1", Control: "a.b"},
	} {
		if _, err := ParseAccept(b.Msg("i")); !errors.Is(err, ErrBadReply) {
			t.Errorf("%s: %v", name, err)
		}
	}
	m := a.Msg("i")
	m.Header.Set(HdrKind, KindData)
	if _, err := ParseAccept(m); !errors.Is(err, ErrBadReply) {
		t.Errorf("data as accept: %v", err)
	}
}

// pipe carries messages between a StreamSender and a StreamReceiver in
// memory: what each publishes lands on the other's side by subject.
type pipe struct {
	toReceiver chan *nats.Msg
	toSender   chan *nats.Msg
	inbox      string
}

func (p *pipe) publish(m *nats.Msg) error {
	if m.Subject == p.inbox {
		p.toReceiver <- m
	} else {
		p.toSender <- m
	}
	return nil
}

// The two halves: the sender stops at the window until acks come, the
// receiver acks every half window, checks order and the control subject,
// and cancel and the server's no-responders stop the sender.
func TestStreamHalves(t *testing.T) {
	p := &pipe{toReceiver: make(chan *nats.Msg, 64), toSender: make(chan *nats.Msg, 64), inbox: "_TGG.g.in"}
	const window = 4
	gone := make(chan struct{})
	s := NewStreamSender(p.publish, p.inbox, "_TGW.U.c.tok", window, "w-1", "", func() { close(gone) })
	r := NewStreamReceiver(p.publish, p.inbox, window, false)
	r.SetControl("_TGW.U.c.tok")
	ctx := t.Context()
	for i := range window {
		if err := s.WaitCredit(ctx, time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := s.Data("", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	// The window is full: no credit without an ack.
	short, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.WaitCredit(short, time.Minute); !errors.Is(err, context.Canceled) {
		t.Fatalf("credit with a full window: %v", err)
	}
	if err := s.WaitCredit(ctx, time.Millisecond); !errors.Is(err, ErrStalled) {
		t.Fatalf("stalled: %v", err)
	}
	for i := 1; i <= window; i++ {
		c, err := r.Decode(<-p.toReceiver)
		if err != nil || c.Kind != KindData || c.Seq != i || c.Worker != "w-1" {
			t.Fatalf("chunk %d: %+v %v", i, c, err)
		}
		r.Written(c.Seq)
	}
	// Acks at 2 and 4 (every half window).
	for _, want := range []string{"2", "4"} {
		m := <-p.toSender
		if m.Subject != "_TGW.U.c.tok" || m.Header.Get(HdrAck) != want {
			t.Fatalf("ack %q: %q %v", want, m.Subject, m.Header)
		}
		s.Control(m)
	}
	if err := s.WaitCredit(ctx, time.Minute); err != nil {
		t.Fatalf("credit after acks: %v", err)
	}
	if err := s.End("", []byte("receipt")); err != nil {
		t.Fatal(err)
	}
	if c, err := r.Decode(<-p.toReceiver); err != nil || c.Kind != KindEnd || c.Seq != window+1 || c.Status != 200 || string(c.Data) != "receipt" {
		t.Fatalf("end: %+v %v", c, err)
	}
	// Probe: the last ack, with the inbox as reply subject.
	r.Probe()
	if m := <-p.toSender; m.Reply != p.inbox || m.Header.Get(HdrAck) != "4" {
		t.Fatalf("probe %v %q", m.Header, m.Reply)
	}
	// Cancel stops the sender once.
	r.Cancel()
	m := <-p.toSender
	s.Control(m)
	s.Control(m)
	<-gone
	if !s.Gone() {
		t.Fatal("not gone after cancel")
	}
	// The server's no-responders status stops another sender, and reads
	// as ErrWorkerGone on the receiver's side.
	s2 := NewStreamSender(p.publish, p.inbox, "c", 1, "w", "", nil)
	noResp := &nats.Msg{Header: nats.Header{"Status": {"503"}}}
	s2.Control(noResp)
	if !s2.Gone() {
		t.Fatal("no responders did not stop the sender")
	}
	if _, err := r.Decode(noResp); !errors.Is(err, ErrWorkerGone) {
		t.Fatalf("no responders: %v", err)
	}
}

// Decode refuses each broken message with ErrBadReply and does not move on.
func TestStreamReceiverRefuses(t *testing.T) {
	msg := func(kind, seq, event, reply string) *nats.Msg {
		m := &nats.Msg{Header: nats.Header{}, Reply: reply, Data: []byte("{}")}
		m.Header.Set(HdrKind, kind)
		m.Header.Set(HdrSeq, seq)
		if event != "" {
			m.Header.Set(HdrEvent, event)
		}
		return m
	}
	for name, tc := range map[string]struct {
		events bool
		m      *nats.Msg
	}{
		"out of order":       {false, msg(KindData, "0", "", "c")},
		"no seq":             {false, msg(KindData, "", "", "c")},
		"unknown kind":       {false, msg("accept", "1", "", "c")},
		"other control":      {false, msg(KindData, "1", "", "elsewhere")},
		"responses no event": {true, msg(KindData, "1", "", "c")},
		"event breaks SSE":   {true, msg(KindData, "1", "a\ndata: x", "c")},
	} {
		r := NewStreamReceiver(func(*nats.Msg) error { return nil }, "i", 8, tc.events)
		r.SetControl("c")
		if _, err := r.Decode(tc.m); !errors.Is(err, ErrBadReply) || r.Next() != 1 {
			t.Errorf("%s: %v next %d", name, err, r.Next())
		}
	}
	// A gap: chunks were lost on the bus, not a bad reply.
	gap := NewStreamReceiver(func(*nats.Msg) error { return nil }, "i", 8, false)
	gap.SetControl("c")
	if _, err := gap.Decode(msg(KindData, "2", "", "c")); !errors.Is(err, ErrChunksLost) || errors.Is(err, ErrBadReply) || gap.Next() != 1 {
		t.Errorf("gap: %v next %d", err, gap.Next())
	}
	// A chat stream ignores event names; an error carries status and code.
	r := NewStreamReceiver(func(*nats.Msg) error { return nil }, "i", 8, false)
	r.SetControl("c")
	m := msg(KindError, "1", "whatever", "")
	m.Header.Set(HdrStatus, strconv.Itoa(http.StatusBadGateway))
	m.Header.Set(HdrError, CodeEngine)
	if c, err := r.Decode(m); err != nil || c.Event != "" || c.Status != 502 || c.Code != CodeEngine {
		t.Fatalf("error chunk: %+v %v", c, err)
	}
}

func TestAttestRequest(t *testing.T) {
	m := AttestRequest{Model: "m", Nonce: "n-1"}.Msg()
	if m.Subject != AttestSubject("m") || m.Header.Get(HdrVersion) != Version {
		t.Fatalf("%q %v", m.Subject, m.Header)
	}
	if r, err := ParseAttestRequest(m.Header); err != nil || r.Nonce != "n-1" {
		t.Fatalf("%+v %v", r, err)
	}
	m.Header.Set(HdrVersion, "0")
	if _, err := ParseAttestRequest(m.Header); !errors.Is(err, ErrVersion) {
		t.Fatalf("other version: %v", err)
	}
}
