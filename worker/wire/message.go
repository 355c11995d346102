package wire

// Typed messages: the request a gateway sends, the accept and reply a
// worker answers with. Each type writes its own headers (Msg, Header) and
// has its decoder (ParseRequest, ParseAccept, ParseReply), so neither side
// assembles or reads headers by hand. The decoders read what another
// process wrote, across a trust boundary: they bound and check every value
// they return.

import (
	"errors"
	"fmt"
	"mime"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/teegate/teegate/attest"
)

// HdrAccept (request) asks the worker for a KindAccept message before
// anything else, naming the request's control subject: the gateway probes
// it to learn that the worker holding the request is gone, and re-dispatches
// a request that got no byte yet. Workers that do not know the header send
// no accept; gateways that do not set it get none.
const HdrAccept = "Teegate-Accept"

// KindAccept: the worker took the request. Its reply subject is the
// request's control subject (acks, cancel, liveness probes), inside the
// worker connection's own inbox space; HdrEvidenceID names the key whose
// space that is. Data: empty.
const KindAccept = "accept"

// Bounds of values read from the bus.
const (
	// MaxRequestID bounds a request id (and one token: see Token).
	MaxRequestID = 128
	// MaxWorkerID bounds the HdrWorker value.
	MaxWorkerID = 128
	// MaxReplyHeaderBytes bounds all header names and values of one reply.
	MaxReplyHeaderBytes = 2 << 20
	// MaxReceiptHeader bounds the HdrReceipt value (a receipt with a batch
	// proof is a few hundred bytes).
	MaxReceiptHeader = 16 << 10
	// MaxEvidenceHeader bounds the HdrEvidence value: base64url of a
	// bundle of at most attest.MaxBundleSize bytes.
	MaxEvidenceHeader = (attest.MaxBundleSize*4 + 2) / 3
	// MaxControlSubject bounds a control (ack) subject.
	MaxControlSubject = 256
)

// Errors of the decoders.
var (
	// ErrVersion: a request of another protocol version (CodeVersion).
	ErrVersion = errors.New("protocol version mismatch")
	// ErrBadRequest: a malformed request (CodeBad).
	ErrBadRequest = errors.New("malformed request")
	// ErrBadReply: a worker message the gateway will not relay.
	ErrBadReply = errors.New("malformed worker reply")
)

// ValidOp reports whether op is one of the operations workers serve.
func ValidOp(op string) bool {
	switch op {
	case OpChat, OpCompletions, OpEmbeddings, OpResponses:
		return true
	}
	return false
}

// Request is one inference request, gateway → worker: the exact client
// body and the metadata the worker needs.
type Request struct {
	ID     string
	Op     string
	Model  string
	Tenant string
	Stream bool
	// Deadline is when the gateway gives up; zero for none.
	Deadline time.Time
	// Nonce is the client's nonce for fresh mode, as sent ("" for none).
	Nonce string
	// Inline asks for the evidence bundle inline with the receipt.
	Inline bool
	// Window is a stream's flow-control window; 0 means DefaultWindow.
	Window int
	// Accept asks for a KindAccept message first (HdrAccept).
	Accept bool
	// Traceparent is passed through when the gateway does not trace
	// itself ("" for none).
	Traceparent string
	Body        []byte
}

// Msg is the request as a NATS message on subject. The caller sets the
// reply inbox (and may add trace headers).
func (r *Request) Msg(subject string) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Data = r.Body
	h := m.Header
	h.Set(HdrVersion, Version)
	h.Set(HdrRequestID, r.ID)
	h.Set(HdrOp, r.Op)
	h.Set(HdrModel, r.Model)
	if r.Tenant != "" {
		h.Set(HdrTenant, r.Tenant)
	}
	if !r.Deadline.IsZero() {
		SetDeadline(h, r.Deadline)
	}
	if r.Nonce != "" {
		h.Set(HdrNonce, r.Nonce)
	}
	if r.Inline {
		h.Set(HdrInline, "1")
	}
	if r.Stream {
		h.Set(HdrStream, "1")
		if r.Window > 0 {
			h.Set(HdrWindow, strconv.Itoa(r.Window))
		}
	}
	if r.Accept {
		h.Set(HdrAccept, "1")
	}
	if r.Traceparent != "" {
		h.Set(HdrTrace, r.Traceparent)
	}
	return m
}

// ParseRequest decodes a request's headers and body. A request of another
// version fails with ErrVersion, an unknown operation with ErrBadRequest;
// an id that is missing, too long or not one subject token is returned as
// "" (the worker makes one), and a bad deadline or window as none.
func ParseRequest(h nats.Header, body []byte) (Request, error) {
	if h.Get(HdrVersion) != Version {
		return Request{}, fmt.Errorf("%w: %q", ErrVersion, truncate(h.Get(HdrVersion), 16))
	}
	r := Request{
		ID: h.Get(HdrRequestID), Op: h.Get(HdrOp), Model: h.Get(HdrModel), Tenant: h.Get(HdrTenant),
		Stream: h.Get(HdrStream) == "1", Nonce: h.Get(HdrNonce), Inline: h.Get(HdrInline) != "",
		Accept: h.Get(HdrAccept) == "1", Traceparent: h.Get(HdrTrace), Body: body,
	}
	if !ValidOp(r.Op) {
		return Request{}, fmt.Errorf("%w: unknown operation", ErrBadRequest)
	}
	if r.ID == "" || len(r.ID) > MaxRequestID || Token(r.ID) != r.ID {
		r.ID = ""
	}
	r.Deadline, _ = Deadline(h)
	if r.Stream {
		r.Window = IntHeader(h, HdrWindow, DefaultWindow)
		if r.Window == 0 {
			r.Window = DefaultWindow
		}
	}
	return r, nil
}

// AttestRequest asks a worker serving Model for evidence produced now and
// bound to the client's Nonce (AttestSubject); the reply is a Reply whose
// body is canonical bundle bytes.
type AttestRequest struct {
	Model string
	Nonce string
}

// Msg is the request as a NATS message; the caller sets the reply inbox.
func (r AttestRequest) Msg() *nats.Msg {
	m := nats.NewMsg(AttestSubject(r.Model))
	m.Header.Set(HdrVersion, Version)
	m.Header.Set(HdrNonce, r.Nonce)
	return m
}

// ParseAttestRequest decodes an attestation request: ErrVersion for
// another protocol version. The model is the subject's, not read here.
func ParseAttestRequest(h nats.Header) (AttestRequest, error) {
	if h.Get(HdrVersion) != Version {
		return AttestRequest{}, fmt.Errorf("%w: %q", ErrVersion, truncate(h.Get(HdrVersion), 16))
	}
	return AttestRequest{Nonce: h.Get(HdrNonce)}, nil
}

// Accept is the worker's KindAccept message.
type Accept struct {
	Worker string
	// EvidenceID names the key whose inbox space Control lies in ("" on a
	// bus without admission).
	EvidenceID string
	// Control is the request's control subject.
	Control string
}

// Msg is the accept as a message to the request's inbox.
func (a Accept) Msg(inbox string) *nats.Msg {
	m := nats.NewMsg(inbox)
	m.Reply = a.Control
	m.Header.Set(HdrKind, KindAccept)
	m.Header.Set(HdrWorker, a.Worker)
	if a.EvidenceID != "" {
		m.Header.Set(HdrEvidenceID, a.EvidenceID)
	}
	return m
}

// ParseAccept decodes a KindAccept message. The control subject is only
// checked to be a literal subject; whose space it lies in is the caller's
// to check (AckSubjectOK).
func ParseAccept(m *nats.Msg) (Accept, error) {
	if m.Header.Get(HdrKind) != KindAccept {
		return Accept{}, fmt.Errorf("%w: not an accept", ErrBadReply)
	}
	a := Accept{Worker: m.Header.Get(HdrWorker), EvidenceID: m.Header.Get(HdrEvidenceID), Control: m.Reply}
	if !validWorkerID(a.Worker) || a.EvidenceID != "" && !HexID(a.EvidenceID) || !literalSubject(a.Control) {
		return Accept{}, fmt.Errorf("%w: accept", ErrBadReply)
	}
	return a, nil
}

// Reply is a non-stream answer, worker → gateway: KindResponse (a success:
// Body is the exact response) or KindError (Body is an OpenAI error body).
type Reply struct {
	Kind   string
	Status int
	// Code is the error code of a KindError (see the error table).
	Code        string
	ContentType string
	Worker      string
	// Attestation holds the receipt headers (HdrReceipt, HdrEvidence,
	// HdrEvidenceID) as the notary made them.
	Attestation nats.Header
	Body        []byte
}

// Header is the reply's NATS header.
func (r *Reply) Header() nats.Header {
	h := nats.Header{}
	for k, v := range r.Attestation {
		h[k] = v
	}
	h.Set(HdrKind, r.Kind)
	h.Set(HdrStatus, strconv.Itoa(r.Status))
	if r.Kind == KindError && r.Code != "" {
		h.Set(HdrError, r.Code)
	}
	ct := r.ContentType
	if ct == "" {
		ct = "application/json"
	}
	h.Set(HdrContentType, ct)
	h.Set(HdrWorker, r.Worker)
	return h
}

// ErrorReply is the reply carrying e.
func ErrorReply(worker string, e *Error) *Reply {
	return &Reply{Kind: KindError, Status: e.Status, Code: e.Wire, Worker: worker, Body: e.Body()}
}

// ParseReply decodes and bounds a non-stream reply: a known kind, a status
// in range for it (200–299 for a response, 400–599 for an error, the
// table's status for a code that has one), JSON content, and well-formed
// attestation and worker headers. It does not check the receipt itself.
func ParseReply(m *nats.Msg) (Reply, error) {
	if err := CheckHeaders(m.Header); err != nil {
		return Reply{}, err
	}
	r := Reply{Kind: m.Header.Get(HdrKind), Code: m.Header.Get(HdrError), Worker: m.Header.Get(HdrWorker), Body: m.Data}
	status, err := strconv.Atoi(m.Header.Get(HdrStatus))
	if err != nil {
		return Reply{}, fmt.Errorf("%w: status", ErrBadReply)
	}
	r.Status = status
	switch r.Kind {
	case KindResponse:
		if status < 200 || status > 299 {
			return Reply{}, fmt.Errorf("%w: response status %d", ErrBadReply, status)
		}
	case KindError:
		if status < 400 || status > 599 {
			return Reply{}, fmt.Errorf("%w: error status %d", ErrBadReply, status)
		}
		if s, ok := errorTable[r.Code]; ok && s.Fixed && s.Status != status {
			return Reply{}, fmt.Errorf("%w: code %q with status %d", ErrBadReply, r.Code, status)
		}
	default:
		return Reply{}, fmt.Errorf("%w: kind", ErrBadReply)
	}
	if r.ContentType, err = ReplyContentType(m.Header); err != nil {
		return Reply{}, err
	}
	r.Attestation = nats.Header{}
	for _, k := range []string{HdrReceipt, HdrEvidence, HdrEvidenceID} {
		if v := m.Header.Get(k); v != "" {
			r.Attestation.Set(k, v)
		}
	}
	return r, nil
}

// CheckHeaders bounds a worker message's headers and the values a gateway
// relays: names it does not know are ignored (never relayed), the known
// ones must be well formed and not repeated.
func CheckHeaders(h nats.Header) error {
	n := 0
	for k, vs := range h {
		n += len(k)
		for _, v := range vs {
			n += len(v)
		}
	}
	if n > MaxReplyHeaderBytes {
		return fmt.Errorf("%w: %d bytes of headers", ErrBadReply, n)
	}
	for _, k := range []string{HdrReceipt, HdrEvidence, HdrEvidenceID, HdrWorker, HdrContentType, HdrKind, HdrStatus, HdrSeq, HdrEvent} {
		if len(h.Values(k)) > 1 {
			return fmt.Errorf("%w: repeated %s", ErrBadReply, k)
		}
	}
	if v := h.Get(HdrReceipt); len(v) > MaxReceiptHeader || !IsBase64URL(v) {
		return fmt.Errorf("%w: receipt header", ErrBadReply)
	}
	if v := h.Get(HdrEvidence); len(v) > MaxEvidenceHeader || !IsBase64URL(v) {
		return fmt.Errorf("%w: evidence header", ErrBadReply)
	}
	if v := h.Get(HdrEvidenceID); v != "" && !HexID(v) {
		return fmt.Errorf("%w: evidence id header", ErrBadReply)
	}
	if !validWorkerID(h.Get(HdrWorker)) {
		return fmt.Errorf("%w: worker header", ErrBadReply)
	}
	return nil
}

// ReplyContentType is the content type a reply is relayed with: JSON only
// (every OpenAI response body is JSON), default application/json.
func ReplyContentType(h nats.Header) (string, error) {
	ct := h.Get(HdrContentType)
	if ct == "" {
		return "application/json", nil
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return "", fmt.Errorf("%w: content type", ErrBadReply)
	}
	for k, v := range params {
		if k != "charset" || !strings.EqualFold(v, "utf-8") {
			return "", fmt.Errorf("%w: content type", ErrBadReply)
		}
	}
	return ct, nil
}

// IsBase64URL reports whether s holds only base64url characters (no
// padding); "" passes.
func IsBase64URL(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// HexID reports whether s is a bundle id: 64 lower-case hex digits.
func HexID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// validWorkerID: "" or one subject token of at most MaxWorkerID bytes.
func validWorkerID(v string) bool {
	return v == "" || len(v) <= MaxWorkerID && Token(v) == v
}

// literalSubject: a subject of tokens of [A-Za-z0-9_-], at most
// MaxControlSubject bytes, no wildcards or empty tokens.
func literalSubject(s string) bool {
	return s != "" && len(s) <= MaxControlSubject && literalTokens(s)
}

// literalTokens: s is one or more non-empty tokens of [A-Za-z0-9_-]
// joined by '.'.
func literalTokens(s string) bool {
	for _, tok := range strings.Split(s, ".") {
		if tok == "" {
			return false
		}
		for i := 0; i < len(tok); i++ {
			if !tokenSafe(tok[i]) {
				return false
			}
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
