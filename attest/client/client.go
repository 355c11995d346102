package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/teegate/teegate/attest"
)

// HTTP headers of the attestation exchange (DESIGN §3.2, §3.3).
const (
	// HeaderNonce carries the client's fresh-mode nonce on a request.
	HeaderNonce = attest.HeaderNonce
	// HeaderInlineEvidence: "1" asks for the evidence bundle inline.
	HeaderInlineEvidence = attest.HeaderInlineEvidence
	// HeaderEvidence is attest.HeaderEvidence, read when an older gateway
	// sends it.
	HeaderEvidence = attest.HeaderEvidence
)

// Defaults.
const (
	DefaultCacheSize       = 256
	DefaultMaxResponseSize = 64 << 20
)

// Config configures a Verifier.
type Config struct {
	Options
	// BaseURL is where bundles are fetched: {BaseURL}/v1/attestation/
	// evidence/{id}. A trailing "/v1" is accepted (the base URL OpenAI
	// SDKs take). Empty: the scheme, host and path prefix before "/v1/" of
	// each verified request.
	BaseURL string
	// HTTPClient fetches bundles and receipts. Nil: the transport being
	// wrapped (RoundTripper) or the SDK's next handler (Middleware).
	HTTPClient *http.Client
	// InlineEvidence asks the gateway to send the bundle with each answer
	// (Teegate-Inline-Evidence: 1), saving a fetch for unseen bundles.
	InlineEvidence bool
	// RequireNonce sends a fresh random nonce (Teegate-Nonce) with every
	// request that does not carry one, and then requires fresh-mode
	// evidence covering it. A nonce the caller set is always checked.
	RequireNonce bool
	// NonceFunc generates nonces (default: 32 random bytes, base64url).
	NonceFunc func() (string, error)
	// Transcripts, when set, receives every verified exchange.
	Transcripts TranscriptSink
	// CacheSize bounds the verdict cache (default DefaultCacheSize).
	CacheSize int
	// MaxResponseSize bounds a non-stream body read for verification
	// (default DefaultMaxResponseSize).
	MaxResponseSize int64
}

// Validate checks the config and fills defaults.
func (c *Config) Validate() error {
	if c.CacheSize < 0 || c.MaxResponseSize < 0 {
		return errors.New("client config: negative size")
	}
	if c.CacheSize == 0 {
		c.CacheSize = DefaultCacheSize
	}
	if c.MaxResponseSize == 0 {
		c.MaxResponseSize = DefaultMaxResponseSize
	}
	if c.BaseURL != "" {
		u, err := url.Parse(c.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("client config: base URL %q is not an http(s) URL", c.BaseURL)
		}
		c.BaseURL = strings.TrimSuffix(strings.TrimSuffix(c.BaseURL, "/"), "/v1")
	}
	return nil
}

// Verifier verifies teegate answers on an HTTP client. Safe for
// concurrent use; one Verifier per trust configuration, since it caches
// bundle verdicts reached under its options.
type Verifier struct {
	cfg Config
	chk *checker
}

// NewVerifier validates cfg and returns a Verifier.
func NewVerifier(cfg Config) (*Verifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Verifier{cfg: cfg, chk: newChecker(cfg.Options, cfg.CacheSize)}, nil
}

// Cache exposes the bundle verdict cache (to pre-load or inspect it).
func (v *Verifier) Cache() *attest.VerdictCache { return v.chk.av.Cache() }

type doFunc func(*http.Request) (*http.Response, error)

type roundTripper struct {
	v    *Verifier
	next http.RoundTripper
}

func (t roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.v.do(req, t.next.RoundTrip)
}

// RoundTripper wraps next (nil: http.DefaultTransport) so that every
// completion and embedding answer is verified before the caller sees it.
// Use it as an http.Client's Transport (openai-go: option.WithHTTPClient).
func (v *Verifier) RoundTripper(next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return roundTripper{v: v, next: next}
}

// Middleware is the same check as an openai-go middleware: pass it to
// option.WithMiddleware (its type is option.Middleware).
func (v *Verifier) Middleware() func(*http.Request, func(*http.Request) (*http.Response, error)) (*http.Response, error) {
	return func(req *http.Request, next func(*http.Request) (*http.Response, error)) (*http.Response, error) {
		return v.do(req, next)
	}
}

// verifiedEndpoint reports whether req is an OpenAI call whose answer
// carries a receipt.
func verifiedEndpoint(req *http.Request) bool {
	if req.Method != http.MethodPost || req.URL == nil {
		return false
	}
	p := strings.TrimSuffix(req.URL.Path, "/")
	return strings.HasSuffix(p, "/chat/completions") || strings.HasSuffix(p, "/completions") ||
		strings.HasSuffix(p, "/embeddings") || strings.HasSuffix(p, "/responses")
}

// do sends req through next and verifies the answer.
func (v *Verifier) do(req *http.Request, next doFunc) (*http.Response, error) {
	if !verifiedEndpoint(req) {
		return next(req)
	}
	ctx := req.Context()
	// The body is read once and these very bytes are both sent and
	// hashed, so what is verified is what went on the wire.
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("reading request body: %w", err)
		}
		body = b
	}
	out := req.Clone(ctx)
	out.Body = io.NopCloser(bytes.NewReader(body))
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	out.ContentLength = int64(len(body))
	nonce := out.Header.Get(HeaderNonce)
	if nonce == "" && v.cfg.RequireNonce {
		n, err := v.newNonce()
		if err != nil {
			return nil, err
		}
		nonce = n
		out.Header.Set(HeaderNonce, nonce)
	}
	if v.cfg.InlineEvidence {
		out.Header.Set(HeaderInlineEvidence, "1")
	}

	resp, err := next(out)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 400 {
		return resp, nil
	}
	ex := &exchange{request: body, nonce: nonce, model: requestModel(body), fetch: v.fetcher(out, next)}
	tr := &Transcript{Endpoint: out.URL.Path, Nonce: nonce, Request: body}
	if isEventStream(resp) {
		resp.Body = newStreamReader(resp.Body, v.cfg.Transcripts != nil, func(sr *attest.SignedReceipt, inline []byte, digest [32]byte, raw []byte) error {
			ex.stream, ex.digest, ex.receipt = true, &digest, sr
			if inline != nil {
				ex.candidates = [][]byte{inline}
			}
			tr.Stream, tr.Response = true, raw
			return v.finish(ctx, ex, tr)
		}, func() {
			if r := resultFrom(ctx); r != nil {
				r.Verified = false
			}
		})
		return resp, nil
	}

	data, err := readLimited(resp.Body, v.cfg.MaxResponseSize)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	hv := resp.Header.Get(attest.HeaderReceipt)
	if hv == "" {
		return nil, fail("receipt", ErrNoReceipt)
	}
	sr, err := attest.ParseReceiptHeader(hv)
	if err != nil {
		return nil, fail("receipt", err)
	}
	if ev := resp.Header.Get(HeaderEvidence); ev != "" {
		raw, err := attest.DecodeBase64URL(ev)
		if err != nil {
			return nil, fail("evidence", fmt.Errorf("decoding %s header: %w", HeaderEvidence, attest.ErrMalformed))
		}
		ex.candidates = [][]byte{raw}
	}
	ex.response, ex.receipt = data, sr
	tr.Response = data
	if err := v.finish(ctx, ex, tr); err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(data))
	resp.ContentLength = int64(len(data))
	return resp, nil
}

// finish verifies the exchange, hands the result to the caller's Result
// and the transcript to the sink.
func (v *Verifier) finish(ctx context.Context, ex *exchange, tr *Transcript) error {
	res, err := v.chk.verify(ctx, ex)
	if err != nil {
		return err
	}
	if r := resultFrom(ctx); r != nil {
		*r = *res
	}
	if v.cfg.Transcripts == nil {
		return nil
	}
	tr.Version = TranscriptVersion
	tr.Saved = v.chk.now().UTC()
	tr.Receipt = res.Receipt
	if b, ok := v.chk.av.Known(res.EvidenceID); ok {
		tr.Evidence = b.Raw
	}
	if res.FreshEvidenceID != "" {
		if b, ok := v.chk.av.Known(res.FreshEvidenceID); ok {
			tr.FreshEvidence = b.Raw
		}
	}
	if err := v.cfg.Transcripts.SaveTranscript(ctx, tr); err != nil {
		return fail("transcript", fmt.Errorf("saving transcript: %w", err))
	}
	return nil
}

func (v *Verifier) newNonce() (string, error) {
	if v.cfg.NonceFunc != nil {
		n, err := v.cfg.NonceFunc()
		if err != nil {
			return "", fmt.Errorf("generating nonce: %w", err)
		}
		return n, nil
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generating nonce: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

func isEventStream(resp *http.Response) bool {
	ct := resp.Header.Get("Content-Type")
	return strings.HasPrefix(strings.ToLower(strings.TrimSpace(ct)), "text/event-stream")
}

func readLimited(r io.Reader, max int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, fmt.Errorf("reading response body: %w", err)
	}
	if int64(len(b)) > max {
		return nil, fail("response", fmt.Errorf("body over %d bytes: %w", max, ErrTooLarge))
	}
	return b, nil
}
