package openai

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/teegate/teegate/worker/engine"
)

func TestNormalizeError(t *testing.T) {
	long := strings.Repeat("é", maxMessageBytes) // 2 bytes each: must be cut on a rune boundary
	for _, tc := range []struct {
		name                string
		status              int
		body                string
		wantStatus          int
		wantType, wantMsg   string
		wantParam, wantCode string // "<nil>" for null
	}{
		{"openai wrapped", 400, `{"error":{"message":"m","type":"invalid_request_error","param":"temperature","code":"c"}}`,
			400, "invalid_request_error", "m", "temperature", "c"},
		{"numeric code", 400, `{"error":{"message":"m","code":400}}`, 400, "invalid_request_error", "m", "<nil>", "400"},
		{"float code", 400, `{"error":{"message":"m","code":1.5e2}}`, 400, "invalid_request_error", "m", "<nil>", "1.5e2"},
		{"null code", 400, `{"error":{"message":"m","code":null,"param":null}}`, 400, "invalid_request_error", "m", "<nil>", "<nil>"},
		{"bool code dropped", 400, `{"error":{"message":"m","code":true}}`, 400, "invalid_request_error", "m", "<nil>", "<nil>"},
		{"object code dropped", 400, `{"error":{"message":"m","code":{"x":1}}}`, 400, "invalid_request_error", "m", "<nil>", "<nil>"},
		{"vllm flat", 400, `{"object":"error","message":"m","type":"BadRequestError","param":"p","code":400}`,
			400, "invalid_request_error", "m", "p", "400"},
		{"error string", 500, `{"error":"llama runner process has terminated"}`, 500, "server_error", "llama runner process has terminated", "<nil>", "<nil>"},
		{"detail string", 400, `{"detail":"Bad things"}`, 400, "invalid_request_error", "Bad things", "<nil>", "<nil>"},
		{"detail object", 400, `{"detail":{"msg":"x"}}`, 400, "invalid_request_error", "x", "<nil>", "<nil>"},
		{"detail list", 422, `{"detail":[{"loc":["body","a"],"msg":"m1","input":"secret"},{"loc":["query",2],"msg":"m2"},{"msg":"m3"}]}`,
			422, "invalid_request_error", "a: m1; query.2: m2; m3", "<nil>", "<nil>"},
		{"detail list capped", 422, `{"detail":[{"msg":"1"},{"msg":"2"},{"msg":"3"},{"msg":"4"},{"msg":"5"},{"msg":"6"},{"msg":"7"}]}`,
			422, "invalid_request_error", "1; 2; 3; 4; 5; and 2 more", "<nil>", "<nil>"},
		{"plain text", 503, "  Service Unavailable \n", 503, "server_error", "Service Unavailable", "<nil>", "<nil>"},
		{"html", 502, "<html><body>bad gateway</body></html>", 502, "server_error", "inference engine error: bad gateway", "<nil>", "<nil>"},
		{"empty", 500, "", 500, "server_error", "inference engine error: internal server error", "<nil>", "<nil>"},
		{"broken json", 400, `{"error":{"message":"cut`, 400, "invalid_request_error", "inference engine error: bad request", "<nil>", "<nil>"},
		{"json array", 400, `[1,2]`, 400, "invalid_request_error", "inference engine error: bad request", "<nil>", "<nil>"},
		{"unknown status text", 499, "", 499, "invalid_request_error", "inference engine error 499", "<nil>", "<nil>"},
		{"control chars", 400, "{\"error\":{\"message\":\"a\\u0000b\\u001bc\\nd\"}}", 400, "invalid_request_error", "a b c\nd", "<nil>", "<nil>"},
		{"invalid utf8", 400, "bad \xff byte", 400, "invalid_request_error", "bad \uFFFD byte", "<nil>", "<nil>"},
		{"long message", 400, `{"error":{"message":"` + long + `"}}`, 400, "invalid_request_error", strings.Repeat("é", maxMessageBytes/2), "<nil>", "<nil>"},
		{"known 4xx type kept", 404, `{"error":{"message":"no such file","type":"not_found_error"}}`, 404, "not_found_error", "no such file", "<nil>", "<nil>"},
		{"server type on 4xx", 400, `{"error":{"message":"m","type":"server_error"}}`, 400, "invalid_request_error", "m", "<nil>", "<nil>"},
		{"client type on 5xx", 500, `{"error":{"message":"m","type":"invalid_request_error"}}`, 500, "server_error", "m", "<nil>", "<nil>"},
		{"404 without model", 404, `{"detail":"Not Found"}`, 404, "invalid_request_error", "Not Found", "<nil>", "<nil>"},
		{"404 model", 404, `{"error":{"message":"Model x not found","code":"nf"}}`, 404, "invalid_request_error", "Model x not found", "<nil>", CodeModelNotFound},
		{"429", 429, `{"error":"busy"}`, 429, "rate_limit_error", "busy", "<nil>", "<nil>"},
		{"401", 401, `{"error":"bad key"}`, 502, "server_error", "inference engine rejected the worker's credentials (status 401)", "<nil>", CodeEngineAuth},
		{"403", 403, ``, 502, "server_error", "inference engine rejected the worker's credentials (status 403)", "<nil>", CodeEngineAuth},
		{"3xx", 307, ``, 502, "server_error", "inference engine answered with unexpected status 307", "<nil>", CodeBadResponse},
		{"200", 200, `{}`, 502, "server_error", "inference engine answered with unexpected status 200", "<nil>", CodeBadResponse},
		{"long param dropped", 400, `{"error":{"message":"m","param":"` + strings.Repeat("p", 200) + `"}}`, 400, "invalid_request_error", "m", "<nil>", "<nil>"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := NormalizeError(tc.status, []byte(tc.body))
			if e.Status != tc.wantStatus || e.Type != tc.wantType || e.Message != tc.wantMsg {
				t.Errorf("got %d %q %q, want %d %q %q", e.Status, e.Type, e.Message, tc.wantStatus, tc.wantType, tc.wantMsg)
			}
			if deref(e.Param) != tc.wantParam || deref(e.Code) != tc.wantCode {
				t.Errorf("param %s code %s, want %s %s", deref(e.Param), deref(e.Code), tc.wantParam, tc.wantCode)
			}
			if strings.Contains(e.Message, "secret") {
				t.Errorf("message holds body content beyond the message: %q", e.Message)
			}
		})
	}
}

func FuzzNormalizeError(f *testing.F) {
	for _, tr := range loadTranscripts(f) {
		if tr.status >= 400 {
			f.Add(tr.status, tr.body)
		}
	}
	for _, s := range []string{
		`{"object":"error","message":"m","type":"BadRequestError","param":null,"code":400}`,
		`{"error":"x"}`,
		`{"detail":[{"loc":["body",0],"msg":"m","input":"in"}]}`,
		`{"detail":{"message":3}}`,
		"plain",
		"<html>",
	} {
		f.Add(400, []byte(s))
	}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		e := NormalizeError(status, body)
		if e == nil {
			t.Fatal("nil error")
		}
		if e.Status < 400 || e.Status > 599 {
			t.Fatalf("status %d is not an error status", e.Status)
		}
		if status >= 400 && status <= 599 && status != 401 && status != 403 && e.Status != status {
			t.Fatalf("status %d not kept: %d", status, e.Status)
		}
		switch e.Type {
		case "invalid_request_error", "not_found_error", "rate_limit_error", "insufficient_quota", "server_error":
		default:
			t.Fatalf("type %q is not an OpenAI error type", e.Type)
		}
		if (e.Status >= 500) != (e.Type == "server_error") {
			t.Fatalf("type %q for status %d", e.Type, e.Status)
		}
		if e.Message == "" || len(e.Message) > maxMessageBytes || !utf8.ValidString(e.Message) {
			t.Fatalf("bad message %q", e.Message)
		}
		for _, p := range []*string{e.Param, e.Code} {
			if p != nil && (*p == "" || !utf8.ValidString(*p)) {
				t.Fatalf("bad param/code %q", *p)
			}
		}
		var back struct{ Error engine.Error }
		if err := json.Unmarshal(e.Body(), &back); err != nil || back.Error.Message != e.Message {
			t.Fatalf("body does not round-trip: %s (%v)", e.Body(), err)
		}
	})
}
