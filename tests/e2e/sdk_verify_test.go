package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/teegate/teegate/attest/client"
	"github.com/teegate/teegate/internal/stacktest"
)

func verifyingClient(t *testing.T, base string, cfg client.Config) (openai.Client, *client.Verifier) {
	t.Helper()
	cfg.AllowSimulated = true
	v, err := client.NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := openai.NewClient(option.WithBaseURL(base+"/v1"), option.WithAPIKey(stacktest.APIKey),
		option.WithMaxRetries(0), option.WithMiddleware(v.Middleware()))
	return c, v
}

// The SDK middleware verifies 1,000 mixed streamed and non-stream
// completions through the real stack and exposes their claims.
func TestSDKVerifiesThousandCompletions(t *testing.T) {
	s := stacktest.Start(t)
	c, _ := verifyingClient(t, s.URL, client.Config{})
	ctx := context.Background()
	const n = 1000
	for i := range n {
		var res client.Result
		rctx := client.WithResult(ctx, &res)
		msgs := []openai.ChatCompletionMessageParamUnion{openai.UserMessage(fmt.Sprintf("Tell me about lighthouse %d.", i))}
		if i%2 == 0 {
			r, err := c.Chat.Completions.New(rctx, openai.ChatCompletionNewParams{Model: model, Messages: msgs, MaxTokens: openai.Int(8)})
			if err != nil {
				t.Fatalf("completion %d: %v", i, err)
			}
			if r.Choices[0].Message.Content == "" {
				t.Fatalf("completion %d empty", i)
			}
		} else {
			st := c.Chat.Completions.NewStreaming(rctx, openai.ChatCompletionNewParams{Model: model, Messages: msgs, MaxTokens: openai.Int(8)})
			for st.Next() {
			}
			if err := st.Err(); err != nil {
				t.Fatalf("stream %d: %v", i, err)
			}
		}
		if !res.Verified || res.Claims == nil || !res.Claims.Simulated || res.EvidenceID == "" {
			t.Fatalf("answer %d not verified: %+v", i, res)
		}
	}
}

// tamperingProxy sits between client and gateway and flips one byte of
// chosen responses, the way a compromised gateway or network would.
func tamperingProxy(t *testing.T, target string, tamper func(path string, body []byte) []byte) *httptest.Server {
	t.Helper()
	return tamperingProxyFor(t, target, "/chat/completions", tamper)
}

// tamperingProxyFor tampers with the answers to paths containing path.
func tamperingProxyFor(t *testing.T, target, path string, tamper func(path string, body []byte) []byte) *httptest.Server {
	t.Helper()
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1
	rp.ModifyResponse = func(r *http.Response) error {
		if r.StatusCode != 200 || !strings.Contains(r.Request.URL.Path, path) {
			return nil
		}
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return err
		}
		r.Body.Close()
		b = tamper(r.Request.URL.Path, b)
		r.Body = io.NopCloser(bytes.NewReader(b))
		r.ContentLength = int64(len(b))
		r.Header.Del("Content-Length")
		return nil
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	return srv
}

func TestSDKRejectsTamperedResponses(t *testing.T) {
	s := stacktest.Start(t)
	var armed atomic.Bool
	flip := func(_ string, b []byte) []byte {
		if !armed.Load() {
			return b
		}
		// Change one letter of the completion text, keeping valid JSON
		// (in a stream: the first non-empty content delta).
		key := []byte(`"content":"`)
		for off := 0; ; {
			i := bytes.Index(b[off:], key)
			if i < 0 {
				return b
			}
			j := off + i + len(key)
			c := b[j]
			if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' {
				b = bytes.Clone(b)
				b[j] ^= 0x20 // swap its case
				return b
			}
			off = j
		}
	}
	proxy := tamperingProxy(t, s.URL, flip)
	c, _ := verifyingClient(t, proxy.URL, client.Config{})
	ctx := context.Background()
	msgs := []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Tell me about bread.")}
	params := openai.ChatCompletionNewParams{Model: model, Messages: msgs, MaxTokens: openai.Int(12)}

	// Untouched traffic through the proxy verifies.
	if _, err := c.Chat.Completions.New(ctx, params); err != nil {
		t.Fatalf("clean answer through the proxy: %v", err)
	}
	armed.Store(true)
	_, err := c.Chat.Completions.New(ctx, params)
	if !errors.Is(err, client.ErrVerification) {
		t.Fatalf("tampered answer: err = %v, want ErrVerification", err)
	}
	st := c.Chat.Completions.NewStreaming(ctx, params)
	for st.Next() {
	}
	if !errors.Is(st.Err(), client.ErrVerification) {
		t.Fatalf("tampered stream: err = %v, want ErrVerification", st.Err())
	}
	// Without the middleware the same tampering goes unnoticed: the check
	// is what catches it.
	plain := openai.NewClient(option.WithBaseURL(proxy.URL+"/v1"), option.WithAPIKey(stacktest.APIKey), option.WithMaxRetries(0))
	if _, err := plain.Chat.Completions.New(ctx, params); err != nil {
		t.Fatalf("plain client: %v", err)
	}
}
