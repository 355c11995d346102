package openai

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

// Engine configs come from flags and files: validation never panics, what
// it accepts is an http(s) base URL without a trailing slash, and
// normalizing it again changes nothing.
func FuzzConfigBaseURL(f *testing.F) {
	for _, s := range []string{"http://127.0.0.1:8000", "http://127.0.0.1:8000/v1/", "https://h/ollama/", "ftp://x", "",
		"http://", "http://user:pw@h", "http://h/v1/v1", "http://h?x=1", "http://h#f", "http://[::1]:80/", " http://h", "HTTP://H/V1"} {
		f.Add(s, "")
	}
	f.Add("http://h", "key\r\nX: y")
	f.Fuzz(func(t *testing.T, base, key string) {
		c, err := Config{BaseURL: base, APIKey: key}.normalized()
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("config error not ErrInvalidConfig: %v", err)
			}
			return
		}
		u, err := url.Parse(c.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			t.Fatalf("accepted base %q as %q", base, c.BaseURL)
		}
		if strings.HasSuffix(c.BaseURL, "/") {
			t.Fatalf("normalized %q to %q", base, c.BaseURL)
		}
		if strings.ContainsAny(c.APIKey, "\r\n") {
			t.Fatalf("accepted API key %q", c.APIKey)
		}
		if strings.HasSuffix(strings.ToLower(c.BaseURL), "/v1") {
			return // one "/v1" is removed, so "…/v1/v1" keeps the first: a prefix
		}
		again, err := Config{BaseURL: c.BaseURL, APIKey: c.APIKey}.normalized()
		if err != nil || again.BaseURL != c.BaseURL {
			t.Fatalf("normalizing %q again: %q, %v", c.BaseURL, again.BaseURL, err)
		}
	})
}
