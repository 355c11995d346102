package wire

import (
	"encoding/json"
	"net/http"
)

// Error codes of the gateway's own failures on the data path (the worker's
// are in wire.go). They never travel in HdrError; they are in the table so
// that every failure of a request has one code, one HTTP status and one
// OpenAI error type.
const (
	CodeNoCapacity = "no_capacity" // no worker can take the request (503)
	CodeWorkerGone = "worker_gone" // the worker went away after the first byte (502)
	CodeBusDown    = "bus_down"    // the gateway's own bus connection went (503)
	CodeBadReply   = "bad_reply"   // the worker's reply is malformed (502)
	CodeNoReceipt  = "no_receipt"  // a success without a valid receipt (502)
)

// ErrorSpec is one row of the error table.
type ErrorSpec struct {
	// Status is the HTTP status. Fixed: a worker reply with this code
	// must carry exactly this status (else it may carry any 4xx/5xx and
	// Status is the default).
	Status int
	Fixed  bool
	// Type and OpenAICode are the OpenAI error "type" and default "code"
	// ("" for null).
	Type       string
	OpenAICode string
	// Retry: the gateway may send the request to another worker.
	Retry bool
	// RetryAfter, in seconds, is sent to the client as Retry-After when
	// positive.
	RetryAfter int
}

// errorTable: wire code ↔ HTTP status ↔ OpenAI error type. Both the
// worker (what it replies) and the gateway (what it accepts, retries and
// answers) read it.
var errorTable = map[string]ErrorSpec{
	CodeBusy:     {Status: http.StatusServiceUnavailable, Fixed: true, Type: "server_error", OpenAICode: "worker_busy", Retry: true, RetryAfter: 1},
	CodeBad:      {Status: http.StatusBadRequest, Type: "invalid_request_error"},
	CodeVersion:  {Status: http.StatusServiceUnavailable, Fixed: true, Type: "server_error", OpenAICode: "protocol_version", RetryAfter: 1},
	CodeEngine:   {Status: http.StatusInternalServerError, Type: "server_error"},
	CodeInternal: {Status: http.StatusInternalServerError, Type: "server_error"},
	CodeDeadline: {Status: http.StatusGatewayTimeout, Fixed: true, Type: "timeout", OpenAICode: "deadline_exceeded", RetryAfter: 1},
	CodeCanceled: {Status: 499, Fixed: true, Type: "server_error", OpenAICode: "canceled"},

	CodeNoCapacity: {Status: http.StatusServiceUnavailable, Type: "server_error", OpenAICode: "no_capacity", RetryAfter: 1},
	CodeWorkerGone: {Status: http.StatusBadGateway, Type: "server_error", OpenAICode: "worker_gone", RetryAfter: 1},
	CodeBusDown:    {Status: http.StatusServiceUnavailable, Type: "server_error", OpenAICode: "bus_unavailable", RetryAfter: 1},
	CodeBadReply:   {Status: http.StatusBadGateway, Type: "server_error", OpenAICode: "bad_worker_reply"},
	CodeNoReceipt:  {Status: http.StatusBadGateway, Type: "server_error", OpenAICode: "missing_receipt"},
}

// Spec returns the table's row for code.
func Spec(code string) (ErrorSpec, bool) {
	s, ok := errorTable[code]
	return s, ok
}

// Retryable reports whether a worker error with code lets the gateway try
// another worker.
func Retryable(code string) bool { return errorTable[code].Retry }

// Error is an error in OpenAI's shape: what a client reads, and (with its
// wire code) what a worker replies. The message is for the client who sent
// the request and may quote it: it never goes into a log.
type Error struct {
	// Wire is the wire code ("" for errors that never cross the bus).
	Wire    string
	Status  int
	Message string
	Type    string
	Param   string
	// Code is the OpenAI error "code" ("" for null).
	Code string
	// RetryAfter, in seconds, is sent as Retry-After when positive.
	RetryAfter int
}

// Errorf is the error with wire code and message, its status, type, OpenAI
// code and Retry-After from the table.
func Errorf(code, message string) *Error {
	s := errorTable[code]
	return &Error{Wire: code, Status: s.Status, Type: s.Type, Code: s.OpenAICode, RetryAfter: s.RetryAfter, Message: message}
}

func (e *Error) Error() string { return e.Message }

// Body is the JSON error body {"error":{"message","type","param","code"}},
// param and code null when empty.
func (e *Error) Body() []byte {
	type inner struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	}
	in := inner{Message: e.Message, Type: e.Type}
	if e.Param != "" {
		in.Param = &e.Param
	}
	if e.Code != "" {
		in.Code = &e.Code
	}
	b, _ := json.Marshal(struct {
		Error inner `json:"error"`
	}{in})
	return b
}
