package gateway

import (
	"bytes"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
)

// HTTP limits the edge enforces before any handler runs.
const (
	// maxHeaderBytes bounds the request line and headers together
	// (fasthttp's read buffer): beyond it, 431.
	maxHeaderBytes = 32 << 10
	// maxURL bounds the request target: beyond it, 414.
	maxURL = 8 << 10
	// writeSlack is how long past the request deadline a response may
	// still be written (the deadline error event itself).
	writeSlack = 5 * time.Second
)

func errHeadersTooLarge() *APIError {
	return &APIError{Status: http.StatusRequestHeaderFieldsTooLarge, Type: "invalid_request_error", Code: "headers_too_large",
		Message: "The request headers are larger than the limit of 32768 bytes."}
}

func errURLTooLong() *APIError {
	return &APIError{Status: http.StatusRequestURITooLong, Type: "invalid_request_error", Code: "url_too_long",
		Message: "The request URL is longer than the limit of 8192 bytes."}
}

// hygiene refuses requests whose framing a proxy in front could read
// differently from us: Content-Length given twice with different values
// (request smuggling), and over-long URLs. The connection is closed after
// the answer, since where the next request starts is in doubt.
func hygiene(c *fiber.Ctx) *APIError {
	if len(c.Request().RequestURI()) > maxURL {
		c.Set(fiber.HeaderConnection, "close")
		return errURLTooLong()
	}
	bad := contentLengths(c.Request().Header.RawHeaders())
	if bad {
		c.Set(fiber.HeaderConnection, "close")
		return errInvalid("Content-Length", "The request carries conflicting Content-Length headers.")
	}
	return nil
}

// contentLengths reports whether raw header lines hold two Content-Length
// values that differ (fasthttp keeps only the last one it parsed).
func contentLengths(raw []byte) bool {
	var seen []byte
	found := false
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok || !bytes.EqualFold(bytes.TrimSpace(k), []byte(fiber.HeaderContentLength)) {
			continue
		}
		v = bytes.TrimSpace(v)
		if found && !bytes.Equal(v, seen) {
			return true
		}
		seen, found = v, true
	}
	return false
}

// streamSet tracks the connections of streams being written, so Shutdown
// can cut those that outlast its grace.
type streamSet struct {
	mu sync.Mutex
	m  map[net.Conn]struct{}
}

func (s *streamSet) init() { s.m = map[net.Conn]struct{}{} }

func (s *streamSet) add(c net.Conn) {
	s.mu.Lock()
	s.m[c] = struct{}{}
	s.mu.Unlock()
}

func (s *streamSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.m, c)
	s.mu.Unlock()
}

// cut closes the connections of the streams still running.
func (s *streamSet) cut() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.m {
		_ = c.Close()
	}
}
