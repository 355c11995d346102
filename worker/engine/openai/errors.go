package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/teegate/teegate/worker/engine"
)

// Sentinel errors. Client-facing failures are returned as an error chain that
// holds both an *engine.Error (for the worker to relay) and one of these (for
// callers and tests to tell failures apart with errors.Is).
var (
	// ErrInvalidConfig: Config failed validation.
	ErrInvalidConfig = errors.New("invalid openai engine config")
	// ErrUnknownOp: the call names an operation this adapter does not serve.
	ErrUnknownOp = errors.New("unknown operation")
	// ErrUnavailable: the engine could not be reached (refused, reset,
	// closed before answering). Client-facing as 503 engine_unavailable.
	ErrUnavailable = errors.New("engine unavailable")
	// ErrTimeout: the engine did not answer within Config.Timeout.
	// Client-facing as 504 engine_timeout.
	ErrTimeout = errors.New("engine timed out")
	// ErrStreamIdle: a stream went longer than Config.StreamIdleTimeout
	// without an event. It wraps ErrTimeout.
	ErrStreamIdle = fmt.Errorf("stream idle: %w", ErrTimeout)
	// ErrStreamTruncated: the engine's stream ended (or broke) before
	// "data: [DONE]".
	ErrStreamTruncated = errors.New("engine stream ended before [DONE]")
	// ErrStreamClosed: Next was called on a stream after Close.
	ErrStreamClosed = errors.New("stream closed")
	// ErrBadResponse: the engine answered 2xx (or 3xx) with something this
	// adapter cannot use: too large, not an event stream, unparsable models.
	ErrBadResponse = errors.New("bad response from engine")
)

// Codes of the client-facing errors this adapter creates itself.
const (
	CodeEngineUnavailable = "engine_unavailable"
	CodeEngineTimeout     = "engine_timeout"
	CodeBadResponse       = "engine_bad_response"
	CodeStreamTruncated   = "engine_stream_truncated"
	CodeEngineAuth        = "engine_auth_failed"
	CodeModelNotFound     = "model_not_found"
)

const (
	typeInvalidRequest = "invalid_request_error"
	typeServer         = "server_error"

	// maxMessageBytes caps an upstream error message we pass on. Engines put
	// short sentences there; the cap keeps a verbose one (or one that echoes
	// input) from growing the error body.
	maxMessageBytes = 1024
	// maxDetailItems caps how many FastAPI validation items are summarized.
	maxDetailItems = 5
)

// clientError chains a client-facing *engine.Error with a sentinel and,
// optionally, the underlying cause (kept for the worker's logs; it never
// reaches the client because the worker relays only the *engine.Error).
func clientError(prefix string, e *engine.Error, sentinel, cause error) error {
	if cause == nil {
		return fmt.Errorf("%s: %w: %w", prefix, e, sentinel)
	}
	return fmt.Errorf("%s: %w: %w: %w", prefix, e, sentinel, cause)
}

// NormalizeError turns a non-2xx answer from an OpenAI-compatible server into
// an OpenAI-shaped *engine.Error that keeps the upstream status. It accepts
// the wrapped OpenAI body {"error":{"message","type","param","code"}}, vLLM's
// flat {"object":"error","message",...}, {"error":"text"} (Ollama native,
// TGI), FastAPI's {"detail":...} and plain text. Only the upstream message
// (and param/code) is carried over, cleaned and capped; other body content,
// which may echo the prompt, is dropped. code and param may be strings,
// numbers or null upstream; they become strings or nil.
//
// Statuses are kept except where keeping them would mislead the client:
// 401/403 mean the engine rejected the worker's own credentials (the client
// was already authenticated by the gateway), so they become 502
// engine_auth_failed; a status outside 400-599 becomes 502
// engine_bad_response. A 404 whose message mentions a model gets code
// model_not_found, as OpenAI reports an unknown model.
func NormalizeError(status int, body []byte) *engine.Error {
	if status < 400 || status > 599 {
		return engine.Errorf(http.StatusBadGateway, typeServer, "", CodeBadResponse,
			"inference engine answered with unexpected status %d", status)
	}
	if status == http.StatusUnauthorized || status == http.StatusForbidden {
		return engine.Errorf(http.StatusBadGateway, typeServer, "", CodeEngineAuth,
			"inference engine rejected the worker's credentials (status %d)", status)
	}
	f := parseErrorBody(body)
	e := &engine.Error{
		Status:  status,
		Message: cleanMessage(f.message),
		Type:    normalizeType(status, f.typ),
		Param:   f.param,
		Code:    f.code,
	}
	if e.Message == "" {
		e.Message = "inference engine error: " + strings.ToLower(http.StatusText(status))
		if http.StatusText(status) == "" {
			e.Message = "inference engine error " + strconv.Itoa(status)
		}
	}
	if status == http.StatusNotFound && strings.Contains(strings.ToLower(e.Message), "model") {
		code := CodeModelNotFound
		e.Code = &code
		e.Type = typeInvalidRequest
	}
	return e
}

type errorFields struct {
	message string
	typ     string
	param   *string
	code    *string
}

func parseErrorBody(body []byte) errorFields {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return errorFields{}
	}
	switch trimmed[0] {
	case '{':
		var top map[string]json.RawMessage
		if err := json.Unmarshal(trimmed, &top); err != nil {
			// Not JSON after all (or cut by the read bound): we cannot tell
			// the message from the rest, so say nothing.
			return errorFields{}
		}
		if raw, ok := top["error"]; ok {
			switch firstByte(raw) {
			case '{':
				var obj map[string]json.RawMessage
				if json.Unmarshal(raw, &obj) == nil {
					return fieldsFrom(obj)
				}
			case '"':
				return errorFields{message: jsonString(raw)}
			}
		}
		if _, ok := top["message"]; ok {
			return fieldsFrom(top) // vLLM flat shape
		}
		if raw, ok := top["detail"]; ok {
			return errorFields{message: detailMessage(raw)}
		}
		return errorFields{}
	case '[', '<':
		// A JSON array or an HTML page (a proxy's error page): no message.
		return errorFields{}
	}
	return errorFields{message: string(trimmed)}
}

func fieldsFrom(obj map[string]json.RawMessage) errorFields {
	return errorFields{
		message: jsonScalar(obj["message"]),
		typ:     jsonString(obj["type"]),
		param:   optionalScalar(obj["param"]),
		code:    optionalScalar(obj["code"]),
	}
}

// detailMessage summarizes FastAPI's "detail": a string, an object with
// msg/message, or a list of validation items. From items it keeps only "loc"
// and "msg": "input" and "ctx" may hold the request's own text.
func detailMessage(raw json.RawMessage) string {
	switch firstByte(raw) {
	case '"':
		return jsonString(raw)
	case '{':
		var obj map[string]json.RawMessage
		if json.Unmarshal(raw, &obj) != nil {
			return ""
		}
		if m := jsonScalar(obj["msg"]); m != "" {
			return m
		}
		return jsonScalar(obj["message"])
	case '[':
		var items []struct {
			Loc []json.RawMessage `json:"loc"`
			Msg json.RawMessage   `json:"msg"`
		}
		if json.Unmarshal(raw, &items) != nil {
			return ""
		}
		var parts []string
		for i, it := range items {
			if i == maxDetailItems {
				parts = append(parts, fmt.Sprintf("and %d more", len(items)-i))
				break
			}
			msg := jsonScalar(it.Msg)
			if msg == "" {
				continue
			}
			var loc []string
			for j, l := range it.Loc {
				s := jsonScalar(l)
				if j == 0 && s == "body" {
					continue
				}
				loc = append(loc, s)
			}
			if len(loc) > 0 {
				msg = strings.Join(loc, ".") + ": " + msg
			}
			parts = append(parts, msg)
		}
		return strings.Join(parts, "; ")
	}
	return ""
}

func firstByte(raw json.RawMessage) byte {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return 0
	}
	return raw[0]
}

// jsonString returns raw's value when it is a JSON string, else "".
func jsonString(raw json.RawMessage) string {
	if firstByte(raw) != '"' {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// jsonScalar returns a JSON string's value or a number's text, else "".
func jsonScalar(raw json.RawMessage) string {
	switch b := firstByte(raw); {
	case b == '"':
		return jsonString(raw)
	case b == '-' || (b >= '0' && b <= '9'):
		var n json.Number
		if json.Unmarshal(raw, &n) != nil {
			return ""
		}
		return n.String()
	}
	return ""
}

// optionalScalar is jsonScalar for the nullable param and code fields: null,
// absent and non-scalar values become nil.
func optionalScalar(raw json.RawMessage) *string {
	s := jsonScalar(raw)
	if s == "" {
		return nil
	}
	s = cleanMessage(s)
	if len(s) > 128 {
		return nil
	}
	return &s
}

// cleanMessage makes an upstream message safe to relay: valid UTF-8, no
// control characters except newline and tab, trimmed, at most
// maxMessageBytes long (cut on a rune boundary).
func cleanMessage(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if (r < 0x20 && r != '\n' && r != '\t') || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > maxMessageBytes {
		cut := maxMessageBytes
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = strings.TrimSpace(s[:cut])
	}
	return s
}

// normalizeType maps the upstream type onto OpenAI's. Engines use their own
// names (Ollama "api_error", vLLM "BadRequestError"), so the status decides,
// except that a known OpenAI client-error type is kept for a 4xx.
func normalizeType(status int, upstream string) string {
	if status >= 500 {
		return typeServer
	}
	switch upstream {
	case typeInvalidRequest, "not_found_error", "rate_limit_error", "insufficient_quota":
		return upstream
	}
	if status == http.StatusTooManyRequests {
		return "rate_limit_error"
	}
	return typeInvalidRequest
}
