package engine

import (
	"strings"
	"testing"
)

// An engine error's message may quote the request; its Error string, which
// ends up in logs, must not carry it. The body the client gets does.
func TestErrorStringOmitsMessage(t *testing.T) {
	e := InvalidRequest("messages", "Invalid content: 'zanzibarquokka'")
	if strings.Contains(e.Error(), "zanzibarquokka") {
		t.Fatalf("Error() = %q leaks the message", e.Error())
	}
	if !strings.Contains(string(e.Body()), "zanzibarquokka") {
		t.Fatal("the client's body lost the message")
	}
}
