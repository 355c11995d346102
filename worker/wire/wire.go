package wire

import (
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Version is the protocol version carried in HdrVersion. A worker refuses
// requests of another major version with CodeVersion.
const Version = "1"

// Subjects. Model ids become one subject token through Token.
const (
	SubjectPrefix = "teegate.v1"
	// QueueGroup is the queue group every worker joins per model subject.
	QueueGroup = "teegate-workers"
	// ServiceName is the nats micro service name of workers.
	ServiceName = "teegate-worker"
)

// InferSubject is the subject requests for model are sent to.
func InferSubject(model string) string {
	return SubjectPrefix + ".infer." + Token(model)
}

// InferWildcard matches every inference subject.
const InferWildcard = SubjectPrefix + ".infer.>"

// Token encodes s as one NATS subject token: bytes outside [A-Za-z0-9_-]
// become %XX (upper-case hex), so '.', '*', '>', spaces and '/' cannot
// split or widen a subject and distinct ids stay distinct.
func Token(s string) string {
	safe := true
	for i := 0; i < len(s); i++ {
		if !tokenSafe(s[i]) {
			safe = false
			break
		}
	}
	if safe && s != "" {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) * 3)
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if tokenSafe(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	if b.Len() == 0 {
		return "%"
	}
	return b.String()
}

func tokenSafe(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// Request headers (gateway → worker).
const (
	HdrVersion   = "Teegate-Version"
	HdrRequestID = "Teegate-Request-Id"
	HdrOp        = "Teegate-Op"
	HdrModel     = "Teegate-Model"
	HdrStream    = "Teegate-Stream"
	HdrDeadline  = "Teegate-Deadline" // unix milliseconds
	HdrTenant    = "Teegate-Tenant"
	HdrNonce     = "Teegate-Nonce" // client nonce for fresh mode, as sent
	HdrWindow    = "Teegate-Window"
	HdrInline    = "Teegate-Inline-Evidence"
	HdrTrace     = "traceparent"
)

// Reply headers (worker → gateway).
const (
	HdrKind        = "Teegate-Kind"
	HdrStatus      = "Teegate-Status"
	HdrContentType = "Teegate-Content-Type"
	HdrError       = "Teegate-Error"
	HdrSeq         = "Teegate-Seq"
	HdrReceipt     = "Teegate-Receipt"
	HdrEvidence    = "Teegate-Evidence"
	HdrEvidenceID  = "Teegate-Evidence-Id"
	HdrWorker      = "Teegate-Worker"
	// HdrEvent is the SSE event name of a stream chunk (data or end),
	// absent for chat and completions chunks; see ValidEventName. The
	// gateway frames the event with attest.AppendSSEEvent, the framing the
	// worker's stream digest hashes.
	HdrEvent = "Teegate-Event"
	// HdrAck and HdrCancel travel gateway → worker on a chunk's reply subject.
	HdrAck    = "Teegate-Ack"
	HdrCancel = "Teegate-Cancel"
)

// Message kinds in HdrKind.
const (
	KindResponse = "response" // non-stream success: data = response body
	KindData     = "data"     // stream: data = one SSE event's data; HdrEvent = its type, if any
	KindEnd      = "end"      // stream: finished; data = final payload (receipt chunk) or empty
	KindError    = "error"    // data = OpenAI error body; HdrStatus = HTTP status
)

// Error codes in HdrError: stable strings, mapped to HTTP once in the gateway.
const (
	CodeBusy     = "busy"     // worker at capacity: try another (503)
	CodeBad      = "bad"      // malformed protocol message (400/500)
	CodeVersion  = "version"  // protocol version mismatch (503)
	CodeEngine   = "engine"   // engine returned an OpenAI error: status in HdrStatus
	CodeInternal = "internal" // worker failure (500)
	CodeDeadline = "deadline" // deadline passed in the worker (504)
	CodeCanceled = "canceled"
)

// DefaultWindow is the stream flow-control window when the request has none.
const DefaultWindow = 64

// Ops carried in HdrOp (values of engine.Op).
const (
	OpChat        = "chat.completions"
	OpCompletions = "completions"
	OpEmbeddings  = "embeddings"
	OpResponses   = "responses"
)

// StatelessHint ends every refusal of what would need stored responses
// (previous_response_id, GET /v1/responses/{id}, …), on either side, so
// the client reads one explanation wherever the refusal is made.
const StatelessHint = "This gateway is stateless and stores no responses: send the whole conversation in 'input' " +
	"(earlier user and assistant messages as message items, and function_call / function_call_output items for tool use)."

// MaxEventName bounds an SSE event name in HdrEvent.
const MaxEventName = 128

// ValidEventName reports whether name may be written as an SSE "event:"
// field: 1 to MaxEventName bytes of [A-Za-z0-9._-], so it can neither end
// the line nor start another field.
func ValidEventName(name string) bool {
	if name == "" || len(name) > MaxEventName {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !tokenSafe(c) && c != '.' {
			return false
		}
	}
	return true
}

// SetDeadline stores t in h as unix milliseconds.
func SetDeadline(h nats.Header, t time.Time) {
	h.Set(HdrDeadline, strconv.FormatInt(t.UnixMilli(), 10))
}

// Deadline reads HdrDeadline; ok is false when absent or malformed.
func Deadline(h nats.Header) (time.Time, bool) {
	v := h.Get(HdrDeadline)
	if v == "" {
		return time.Time{}, false
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms <= 0 {
		return time.Time{}, false
	}
	return time.UnixMilli(ms), true
}

// IntHeader reads a non-negative integer header; def when absent or bad.
func IntHeader(h nats.Header, key string, def int) int {
	v := h.Get(key)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return def
	}
	return n
}

// IsNoResponders reports whether m is the server's no-responders status.
func IsNoResponders(m *nats.Msg) bool {
	return len(m.Data) == 0 && m.Header.Get("Status") == "503"
}

// TraceHeaders carries the W3C trace context (OpenTelemetry's
// propagation.TextMapCarrier) in NATS headers: traceparent and tracestate
// travel under their lowercase names, exactly as set, so the gateway's and
// the worker's spans of one request share a trace.
type TraceHeaders nats.Header

// Get returns the header's first value.
func (h TraceHeaders) Get(key string) string { return nats.Header(h).Get(strings.ToLower(key)) }

// Set sets the header.
func (h TraceHeaders) Set(key, value string) { nats.Header(h).Set(strings.ToLower(key), value) }

// Keys lists the header names.
func (h TraceHeaders) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}
