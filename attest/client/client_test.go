package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/attest/claims"
	"github.com/teegate/teegate/enclave/sim"
)

// tamper is the network between client and gateway under an attacker's
// control: it may change the request on the way out and the answer (or a
// fetched bundle) on the way back.
type tamper struct {
	next     http.RoundTripper
	request  func(*http.Request)
	response func(*http.Request, *http.Response)
}

func (t *tamper) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.request != nil {
		t.request(req)
	}
	resp, err := t.next.RoundTrip(req)
	if err == nil && t.response != nil {
		t.response(req, resp)
	}
	return resp, err
}

// editBody replaces the body by edit(body).
func editBody(resp *http.Response, edit func([]byte) []byte) {
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	b = edit(b)
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	resp.Header.Del("Content-Length")
}

// flipAfter changes one byte: the first byte after the first occurrence of
// marker, to a different character of the same class (so JSON and base64
// stay well formed and only the meaning changes).
func flipAfter(b []byte, marker string) []byte {
	i := bytes.Index(b, []byte(marker))
	if i < 0 {
		panic("marker not found: " + marker)
	}
	out := bytes.Clone(b)
	j := i + len(marker)
	switch c := out[j]; {
	case c >= '0' && c <= '8':
		out[j] = c + 1
	case c == '9':
		out[j] = '0'
	case c == 'A':
		out[j] = 'B'
	default:
		out[j] = 'A'
	}
	return out
}

// flipReceiptHeader changes one byte of the envelope inside the header.
func flipReceiptHeader(resp *http.Response, marker string) {
	raw, err := base64.RawURLEncoding.DecodeString(resp.Header.Get(attest.HeaderReceipt))
	if err != nil {
		panic(err)
	}
	resp.Header.Set(attest.HeaderReceipt, base64.RawURLEncoding.EncodeToString(flipAfter(raw, marker)))
}

// flipBody is a tamper that flips the byte after marker in the body of
// every answer to a request that match accepts.
func flipBody(match func(*http.Request) bool, marker string) tamper {
	return tamper{response: func(req *http.Request, resp *http.Response) {
		if match(req) {
			editBody(resp, func(b []byte) []byte { return flipAfter(b, marker) })
		}
	}}
}

func isEvidence(req *http.Request) bool {
	return strings.Contains(req.URL.Path, "/attestation/evidence/")
}

func isChat(req *http.Request) bool { return strings.HasSuffix(req.URL.Path, "/chat/completions") }

type setup struct {
	cfg        Config
	middleware bool
	tamper     tamper
	forge      bool
	gpus       int
	shift      time.Duration // the gateway dates its receipts this far off
}

// newClient returns an openai client on a fake gateway, verified either by
// the RoundTripper or by the middleware.
func newClient(t *testing.T, s setup) (openai.Client, *fakeGateway) {
	t.Helper()
	g := newFakeGateway(t, s.gpus)
	g.shift = s.shift
	if s.forge {
		g.forge()
	}
	v, err := NewVerifier(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	tp := s.tamper
	tp.next = http.DefaultTransport
	opts := []option.RequestOption{option.WithBaseURL(g.srv.URL + "/v1/"), option.WithAPIKey("sk-test"), option.WithMaxRetries(0)}
	if s.middleware {
		opts = append(opts, option.WithMiddleware(v.Middleware()), option.WithHTTPClient(&http.Client{Transport: &tp}))
	} else {
		opts = append(opts, option.WithHTTPClient(&http.Client{Transport: v.RoundTripper(&tp)}))
	}
	return openai.NewClient(opts...), g
}

var chatParams = openai.ChatCompletionNewParams{
	Model:    "builtin",
	Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("say hello")},
}

func chat(ctx context.Context, c openai.Client) (string, error) {
	resp, err := c.Chat.Completions.New(ctx, chatParams)
	if err != nil {
		return "", err
	}
	return resp.Choices[0].Message.Content, nil
}

func chatStream(ctx context.Context, c openai.Client) (string, error) {
	st := c.Chat.Completions.NewStreaming(ctx, chatParams)
	defer st.Close()
	var sb strings.Builder
	for st.Next() {
		for _, ch := range st.Current().Choices {
			sb.WriteString(ch.Delta.Content)
		}
	}
	return sb.String(), st.Err()
}

func allowSim() Config { return Config{Options: Options{AllowSimulated: true}} }

// inFuture verifies as of d from now (the receipts of a gateway shifted by
// d are then not from the future).
func inFuture(d time.Duration) Config {
	return Config{Options: Options{AllowSimulated: true, Now: func() time.Time { return time.Now().Add(d) }}}
}

// TestIgnoreEpoch: Options.IgnoreEpoch lifts the epoch bound, and only it:
// a receipt dated after its epoch's keys were erased then verifies; one
// from the future still does not.
func TestIgnoreEpoch(t *testing.T) {
	for _, stream := range []bool{false, true} {
		cfg := inFuture(3 * time.Hour)
		cfg.IgnoreEpoch = true
		c, _ := newClient(t, setup{cfg: cfg, shift: 3 * time.Hour})
		var res Result
		ctx := WithResult(context.Background(), &res)
		var err error
		if stream {
			_, err = chatStream(ctx, c)
		} else {
			_, err = chat(ctx, c)
		}
		if err != nil || !res.Verified {
			t.Fatalf("stream %t: IgnoreEpoch: %v", stream, err)
		}
		cfg = allowSim()
		cfg.IgnoreEpoch = true
		c, _ = newClient(t, setup{cfg: cfg, shift: 3 * time.Hour})
		if _, err := chat(context.Background(), c); !errors.Is(err, attest.ErrReceiptTime) || errors.Is(err, attest.ErrReceiptEpoch) {
			t.Fatalf("stream %t: receipt from the future with IgnoreEpoch: %v", stream, err)
		}
	}
}

func TestVerifiedAnswers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stream bool
		s      setup
	}{
		{"unary fetch", false, setup{cfg: allowSim()}},
		{"unary inline", false, setup{cfg: Config{Options: Options{AllowSimulated: true}, InlineEvidence: true}}},
		{"unary nonce", false, setup{cfg: Config{Options: Options{AllowSimulated: true}, RequireNonce: true}}},
		{"unary nonce inline middleware", false, setup{cfg: Config{Options: Options{AllowSimulated: true}, RequireNonce: true, InlineEvidence: true}, middleware: true}},
		{"unary with GPU", false, setup{cfg: allowSim(), gpus: 1}},
		{"unary middleware", false, setup{cfg: allowSim(), middleware: true}},
		{"stream fetch", true, setup{cfg: allowSim()}},
		{"stream inline", true, setup{cfg: Config{Options: Options{AllowSimulated: true}, InlineEvidence: true}, gpus: 1}},
		{"stream nonce", true, setup{cfg: Config{Options: Options{AllowSimulated: true}, RequireNonce: true}}},
		{"stream nonce inline middleware", true, setup{cfg: Config{Options: Options{AllowSimulated: true}, RequireNonce: true, InlineEvidence: true}, middleware: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newClient(t, tc.s)
			var res Result
			ctx := WithResult(context.Background(), &res)
			var text string
			var err error
			if tc.stream {
				text, err = chatStream(ctx, c)
			} else {
				text, err = chat(ctx, c)
			}
			if err != nil {
				t.Fatalf("verified answer failed: %v", err)
			}
			if text != completionText {
				t.Fatalf("text %q", text)
			}
			if !res.Verified || res.Claims == nil || !res.Claims.Simulated || res.Claims.TEE != claims.TEESimulated {
				t.Fatalf("result %+v", res)
			}
			if res.Receipt.Receipt.Stream != tc.stream || res.EvidenceID == "" || res.RequestID == "" {
				t.Fatalf("receipt %+v", res.Receipt.Receipt)
			}
			if fresh := tc.s.cfg.RequireNonce; fresh != (res.FreshEvidenceID != "") || fresh != (res.Receipt.Receipt.Nonce != "") {
				t.Fatalf("fresh mode: nonce %q, fresh evidence %q", res.Receipt.Receipt.Nonce, res.FreshEvidenceID)
			}
			if tc.s.gpus > 0 && (len(res.Claims.GPUs) != tc.s.gpus || !res.Claims.GPUs[0].NonceMatched) {
				t.Fatalf("GPU claims %+v", res.Claims.GPUs)
			}
		})
	}
}

func TestEvidenceCached(t *testing.T) {
	c, g := newClient(t, setup{cfg: allowSim()})
	for i := range 3 {
		if _, err := chat(context.Background(), c); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if _, err := chatStream(context.Background(), c); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	if n := g.fetches.Load(); n != 1 {
		t.Fatalf("%d evidence fetches for one bundle, want 1", n)
	}
}

func TestEmbeddingsVerified(t *testing.T) {
	c, _ := newClient(t, setup{cfg: allowSim()})
	var res Result
	_, err := c.Embeddings.New(WithResult(context.Background(), &res), openai.EmbeddingNewParams{
		Model: "builtin", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("x")},
	})
	if err != nil || !res.Verified {
		t.Fatalf("embeddings: %v, %+v", err, res)
	}
}

func TestErrorAnswersPassThrough(t *testing.T) {
	c, _ := newClient(t, setup{cfg: allowSim()})
	p := chatParams
	p.Model = "nope"
	_, err := c.Chat.Completions.New(context.Background(), p)
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest || errors.Is(err, ErrVerification) {
		t.Fatalf("want the gateway's 400 unverified, got %v", err)
	}
}

// TestTamperingFails flips one byte of each thing the network carries and
// expects the named failure, for the RoundTripper and the middleware.
func TestTamperingFails(t *testing.T) {
	denySimulated := PolicyFunc(func(_ context.Context, c *claims.Claims, _ time.Time) (bool, []string, error) {
		if c.Simulated {
			return false, []string{"simulated evidence"}, nil
		}
		return true, nil, nil
	})
	for _, tc := range []struct {
		name   string
		stream bool
		s      setup
		want   error
		cause  string
	}{
		{"unary body", false, setup{cfg: allowSim(), tamper: flipBody(isChat, `"content":"`)}, attest.ErrResponseHash, "response hash"},
		{"unary request", false, setup{cfg: allowSim(), tamper: tamper{request: func(req *http.Request) {
			if isChat(req) {
				b, _ := io.ReadAll(req.Body)
				b = flipAfter(b, `"content":"`)
				req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
			}
		}}}, attest.ErrRequestHash, "request hash"},
		{"unary receipt signature", false, setup{cfg: allowSim(), tamper: tamper{response: func(req *http.Request, resp *http.Response) {
			if isChat(req) {
				flipReceiptHeader(resp, `"signature":"`)
			}
		}}}, attest.ErrReceiptSignature, "signature"},
		{"unary receipt usage", false, setup{cfg: allowSim(), tamper: tamper{response: func(req *http.Request, resp *http.Response) {
			if isChat(req) {
				flipReceiptHeader(resp, `"completion_tokens":`)
			}
		}}}, attest.ErrReceiptSignature, "signature"},
		{"unary receipt missing", false, setup{cfg: allowSim(), tamper: tamper{response: func(req *http.Request, resp *http.Response) {
			resp.Header.Del(attest.HeaderReceipt)
		}}}, ErrNoReceipt, "receipt"},
		{"unary inline evidence", false, setup{cfg: Config{Options: Options{AllowSimulated: true}, InlineEvidence: true}, tamper: tamper{response: func(req *http.Request, resp *http.Response) {
			if isChat(req) {
				raw, _ := base64.RawURLEncoding.DecodeString(resp.Header.Get(HeaderEvidence))
				resp.Header.Set(HeaderEvidence, base64.RawURLEncoding.EncodeToString(flipAfter(raw, `"cpu_evidence":"`)))
			}
		}}}, attest.ErrBundleSignature, "evidence"},
		{"unary fetched evidence", false, setup{cfg: allowSim(), tamper: flipBody(isEvidence, `"cpu_evidence":"`)}, attest.ErrBundleSignature, "evidence"},
		{"unary evidence not served", false, setup{cfg: allowSim(), tamper: tamper{response: func(req *http.Request, resp *http.Response) {
			if isEvidence(req) {
				resp.StatusCode = http.StatusNotFound
			}
		}}}, ErrEvidenceFetch, "evidence"},
		{"unary nonce", false, setup{cfg: Config{Options: Options{AllowSimulated: true}, RequireNonce: true}, tamper: tamper{request: func(req *http.Request) {
			if isChat(req) {
				req.Header.Set(HeaderNonce, "attacker-chosen")
			}
		}}}, attest.ErrNonceMismatch, "nonce"},
		{"unary nonce dropped", false, setup{cfg: Config{Options: Options{AllowSimulated: true}, RequireNonce: true}, tamper: tamper{request: func(req *http.Request) {
			req.Header.Del(HeaderNonce)
		}}}, attest.ErrNonceMismatch, "nonce"},
		{"unary batch proof", false, setup{cfg: Config{Options: Options{AllowSimulated: true}, RequireNonce: true}, tamper: tamper{response: func(req *http.Request, resp *http.Response) {
			if isChat(req) {
				flipReceiptHeader(resp, `"root":"`)
			}
		}}}, attest.ErrBatchProof, "batch proof"},
		{"unary batch tree size (issue 11 finding 4)", false, setup{cfg: Config{Options: Options{AllowSimulated: true}, RequireNonce: true}, tamper: tamper{response: func(req *http.Request, resp *http.Response) {
			if isChat(req) {
				flipReceiptHeader(resp, `"tree_size":`)
			}
		}}}, attest.ErrBatchProof, "batch proof"},
		{"unary batch leaf index", false, setup{cfg: Config{Options: Options{AllowSimulated: true}, RequireNonce: true}, tamper: tamper{response: func(req *http.Request, resp *http.Response) {
			if isChat(req) {
				flipReceiptHeader(resp, `"leaf_index":`)
			}
		}}}, attest.ErrBatchProof, "batch proof"},
		{"unary unbound key", false, setup{cfg: allowSim(), forge: true}, attest.ErrBindingReportData, "binding"},
		{"unary simulated not allowed", false, setup{}, attest.ErrSimulatedNotAllowed, "evidence"},
		{"unary policy", false, setup{cfg: Config{Options: Options{AllowSimulated: true, Policy: denySimulated}}}, ErrPolicy, "policy"},
		{"stream chunk", true, setup{cfg: allowSim(), tamper: flipBody(isChat, `"content":"`)}, attest.ErrResponseHash, "response hash"},
		{"stream rechunked", true, setup{cfg: allowSim(), tamper: tamper{response: func(req *http.Request, resp *http.Response) {
			if isChat(req) {
				// Same bytes, but one payload split into two data lines.
				editBody(resp, func(b []byte) []byte {
					return bytes.Replace(b, []byte(`"delta":`), []byte("\ndata: \"delta\":"), 1)
				})
			}
		}}}, attest.ErrResponseHash, "response hash"},
		{"stream receipt signature", true, setup{cfg: allowSim(), tamper: flipBody(isChat, `"signature":"`)}, attest.ErrReceiptSignature, "signature"},
		{"stream receipt missing", true, setup{cfg: allowSim(), tamper: tamper{response: func(req *http.Request, resp *http.Response) {
			if isChat(req) {
				editBody(resp, func(b []byte) []byte {
					i := bytes.Index(b, []byte(`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"builtin","choices":[],`))
					j := bytes.Index(b, []byte("data: [DONE]"))
					return append(b[:i:i], b[j:]...)
				})
			}
		}}}, attest.ErrNoReceiptEvent, "receipt"},
		{"stream data after receipt", true, setup{cfg: allowSim(), tamper: tamper{response: func(req *http.Request, resp *http.Response) {
			if isChat(req) {
				editBody(resp, func(b []byte) []byte {
					return bytes.Replace(b, []byte("data: [DONE]"), []byte(`data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"builtin","choices":[{"index":0,"delta":{"content":" unsigned"}}]}`+"\n\ndata: [DONE]"), 1)
				})
			}
		}}}, ErrDataAfterReceipt, "stream"},
		{"stream event line (issue 11 finding 2)", true, setup{cfg: allowSim(), tamper: tamper{response: func(req *http.Request, resp *http.Response) {
			if isChat(req) {
				editBody(resp, func(b []byte) []byte { return append([]byte("event: error\n"), b...) })
			}
		}}}, attest.ErrResponseHash, "response hash"},
		{"stream blank lines removed (issue 11 finding 2)", true, setup{cfg: allowSim(), tamper: tamper{response: func(req *http.Request, resp *http.Response) {
			if isChat(req) {
				// The blank line ending the last content event: the
				// receipt line would join that event. (Removing one
				// between content events makes the SDK fail on the
				// joined JSON before the receipt arrives.)
				editBody(resp, func(b []byte) []byte {
					i := bytes.Index(b, []byte(`"teegate_receipt"`))
					j := bytes.LastIndex(b[:i], []byte("\n\n"))
					return append(b[:j:j], b[j+1:]...)
				})
			}
		}}}, attest.ErrResponseHash, "response hash"},
		{"unary receipt dated before its epoch (issue 11 finding 3)", false, setup{cfg: allowSim(), shift: -2 * time.Hour}, attest.ErrReceiptEpoch, "receipt epoch"},
		{"unary receipt dated after its epoch's keys were erased", false, setup{cfg: inFuture(3 * time.Hour), shift: 3 * time.Hour}, attest.ErrReceiptEpoch, "receipt epoch"},
		{"unary receipt in the future", false, setup{cfg: allowSim(), shift: 2 * time.Hour}, attest.ErrReceiptTime, "receipt time"},
		{"unary evidence from the future", false, setup{cfg: inFuture(-2 * time.Hour)}, attest.ErrEvidenceExpired, "evidence"},
		{"stream evidence from the future", true, setup{cfg: inFuture(-2 * time.Hour)}, attest.ErrEvidenceExpired, "evidence"},
		{"stream receipt dated before its epoch", true, setup{cfg: allowSim(), shift: -2 * time.Hour}, attest.ErrReceiptEpoch, "receipt epoch"},
		{"stream receipt dated after its epoch's keys were erased", true, setup{cfg: inFuture(3 * time.Hour), shift: 3 * time.Hour}, attest.ErrReceiptEpoch, "receipt epoch"},
		{"stream receipt in the future", true, setup{cfg: allowSim(), shift: 2 * time.Hour}, attest.ErrReceiptTime, "receipt time"},
		{"stream inline evidence", true, setup{cfg: Config{Options: Options{AllowSimulated: true}, InlineEvidence: true}, tamper: flipBody(isChat, `"cpu_evidence":"`)}, attest.ErrBundleSignature, "evidence"},
		{"stream fetched evidence", true, setup{cfg: allowSim(), tamper: flipBody(isEvidence, `"signature":"`)}, attest.ErrBundleSignature, "evidence"},
		{"stream nonce", true, setup{cfg: Config{Options: Options{AllowSimulated: true}, RequireNonce: true}, tamper: tamper{request: func(req *http.Request) {
			if isChat(req) {
				req.Header.Set(HeaderNonce, "attacker-chosen")
			}
		}}}, attest.ErrNonceMismatch, "nonce"},
		{"stream unbound key", true, setup{cfg: allowSim(), forge: true}, attest.ErrBindingReportData, "binding"},
		{"stream as unary", false, setup{cfg: allowSim(), tamper: tamper{response: func(req *http.Request, resp *http.Response) {
			if isChat(req) {
				// A forged stream receipt on a unary answer: its
				// unverified stream flag is not acted on, it fails on
				// the evidence it names (issue 11, finding 7).
				resp.Header.Set(attest.HeaderReceipt, streamReceiptHeader)
			}
		}}}, ErrEvidenceFetch, "evidence"},
	} {
		for _, mw := range []bool{false, true} {
			name := tc.name
			if mw {
				name += " middleware"
			}
			t.Run(name, func(t *testing.T) {
				s := tc.s
				s.middleware = mw
				c, _ := newClient(t, s)
				var res Result
				ctx := WithResult(context.Background(), &res)
				var text string
				var err error
				if tc.stream {
					text, err = chatStream(ctx, c)
				} else {
					text, err = chat(ctx, c)
				}
				if err == nil {
					t.Fatalf("tampered answer accepted: %q", text)
				}
				if !errors.Is(err, ErrVerification) || (tc.want != nil && !errors.Is(err, tc.want)) {
					t.Fatalf("error %v, want %v", err, tc.want)
				}
				if got := Cause(err); got != tc.cause {
					t.Fatalf("cause %q, want %q (%v)", got, tc.cause, err)
				}
				if res.Verified {
					t.Fatal("result says verified")
				}
				if !tc.stream && text != "" {
					t.Fatal("unary content delivered")
				}
			})
		}
	}
}

// streamReceiptHeader is a syntactically valid, unsigned receipt header
// that says stream and names a bundle nobody has.
var streamReceiptHeader = func() string {
	sr := attest.SignedReceipt{
		Receipt: attest.Receipt{
			Version: attest.ReceiptVersion, RequestID: "r", EvidenceID: strings.Repeat("ab", 32), Model: "builtin", Stream: true,
			Created: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		},
		Signature: make([]byte, 64),
	}
	return sr.HeaderValue()
}()

// TestSimRootPinning: an SDK that pins the dev box's simulated root refuses
// a gateway whose simulated TEE chains to any other root by name, and
// accepts the pinned one (issue 11, finding 5).
func TestSimRootPinning(t *testing.T) {
	other, err := sim.NewRoot()
	if err != nil {
		t.Fatal(err)
	}
	pinned, err := SimulatedRootsPEM(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.Cert.Raw}))
	if err != nil {
		t.Fatal(err)
	}
	for _, mw := range []bool{false, true} {
		c, _ := newClient(t, setup{middleware: mw, cfg: Config{Options: Options{AllowSimulated: true, Verify: attest.VerifyOptions{PinnedSimulatedRoots: pinned}}}})
		_, err := chat(context.Background(), c)
		if !errors.Is(err, attest.ErrSimulatedRootUntrusted) || Cause(err) != "evidence" {
			t.Fatalf("middleware %t: forged simulated bundle against a pinned root: %v", mw, err)
		}
	}
	// The gateway's own root pinned: verifies.
	g := newFakeGateway(t, 0)
	v, err := NewVerifier(Config{Options: Options{AllowSimulated: true, Verify: attest.VerifyOptions{PinnedSimulatedRoots: [][]byte{g.root.Cert.Raw}}}})
	if err != nil {
		t.Fatal(err)
	}
	c := openai.NewClient(option.WithBaseURL(g.srv.URL+"/v1/"), option.WithAPIKey("sk-test"), option.WithMaxRetries(0),
		option.WithHTTPClient(&http.Client{Transport: v.RoundTripper(nil)}))
	if _, err := chat(context.Background(), c); err != nil {
		t.Fatalf("pinned genuine root: %v", err)
	}
}
