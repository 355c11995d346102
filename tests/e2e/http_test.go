package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/teegate/teegate/internal/stacktest"
)

// send makes one request with key as its bearer token (none when empty),
// a JSON body when body is not empty and header as name, value pairs, and
// reads the whole answer. It does not fail the test, for polling loops.
func send(method, url, key, body string, header ...string) (*http.Response, []byte, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return nil, nil, err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// mustSend is send failing the test when no answer came. A body cut short
// is returned as read: the callers check status and content themselves.
func mustSend(t *testing.T, method, url, key, body string, header ...string) (*http.Response, []byte) {
	t.Helper()
	resp, b, err := send(method, url, key, body, header...)
	if resp == nil {
		t.Fatal(err)
	}
	return resp, b
}

// post sends a JSON body with key; header is name, value pairs.
func post(t *testing.T, url, key, body string, header ...string) (*http.Response, []byte) {
	t.Helper()
	return mustSend(t, "POST", url, key, body, header...)
}

// getAs sends a GET with key.
func getAs(t *testing.T, url, key string) (*http.Response, []byte) {
	t.Helper()
	return mustSend(t, "GET", url, key, "")
}

// get sends a GET with the test stack's API key.
func get(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	return getAs(t, url, stacktest.APIKey)
}
