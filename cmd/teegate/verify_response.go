package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/attest/client"
	"github.com/teegate/teegate/attest/collateral"
	"github.com/teegate/teegate/policies"
)

// loadPolicy reads the --policy of `verify response|transcript`: a Rego
// file (with its data files) or a builtin name, evaluated by the same
// policies package the gateway's admission and the Go SDK use.
func loadPolicy(nameOrPath string) (client.Policy, error) {
	p, err := policies.Resolve(nameOrPath)
	if err != nil {
		return nil, err
	}
	return p, nil
}

const simulatedNote = `Evidence from the simulated TEE (what 'teegate dev' runs) verifies only with
--allow-simulated; its claims then say tee "simulated", which production
policies reject.`

// runVerifyResponse verifies one answer offline from the files a client
// kept: the request body it sent, the response body (or raw SSE stream)
// it got, the receipt and the evidence bundle.
func runVerifyResponse(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("verify response", stderr)
	reqPath := fs.String("request", "", "file with the request body exactly as sent (required)")
	respPath := fs.String("response", "", "file with the response body exactly as received, or the raw SSE stream (required)")
	rcptPath := fs.String("receipt", "", "file with the Teegate-Receipt header value, the receipt JSON, or the final receipt chunk of a stream\n(default for a stream: its receipt event)")
	evPath := fs.String("evidence", "", "file with the evidence bundle the receipt names: its JSON (GET /v1/attestation/evidence/{id})\nor the Teegate-Evidence header value (default: the bundle inline in the receipt chunk)")
	freshPath := fs.String("fresh-evidence", "", "file with the fresh-mode bundle named by the receipt's batch proof")
	nonce := fs.String("nonce", "", "the Teegate-Nonce value the request was sent with")
	stream := fs.Bool("stream", false, "the response is an SSE stream (implied when it starts with an SSE line)")
	vf := addVerifyFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: teegate verify response --request FILE --response FILE [--receipt FILE] [--evidence FILE]\n"+
			"         [--fresh-evidence FILE] [--nonce N] [--stream] [--policy FILE] [--allow-simulated [--sim-root PEMFILE]]\n"+
			"         [--max-age D] [--clock-skew D] [--ignore-epoch] [--now RFC3339] [--json]\n\n"+
			"Exits 0 only when the answer verifies; otherwise prints what failed.\n\n"+simulatedNote+"\n\nflags:")
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if *reqPath == "" || *respPath == "" {
		fmt.Fprintln(stderr, "teegate verify response: --request and --response are required")
		return errUsage
	}
	t := &client.Transcript{Version: client.TranscriptVersion, Nonce: *nonce, Stream: *stream}
	var err error
	if t.Request, err = os.ReadFile(*reqPath); err != nil {
		return fmt.Errorf("reading request: %w", err)
	}
	if t.Response, err = os.ReadFile(*respPath); err != nil {
		return fmt.Errorf("reading response: %w", err)
	}
	if *rcptPath != "" {
		raw, err := os.ReadFile(*rcptPath)
		if err != nil {
			return fmt.Errorf("reading receipt: %w", err)
		}
		sr, inline, err := attest.ParseReceiptChunk(raw)
		if err != nil {
			return fmt.Errorf("receipt: %w", err)
		}
		// Whether the answer is a stream is read from the answer, never
		// from the receipt's stream flag before its signature verified.
		t.Receipt, t.Evidence = sr, inline
		t.Stream = t.Stream || looksLikeSSE(t.Response)
	} else {
		if !t.Stream && !looksLikeSSE(t.Response) {
			fmt.Fprintln(stderr, "teegate verify response: --receipt is required unless the response is a stream")
			return errUsage
		}
		t.Stream = true
		res, err := attest.DigestSSE(bytes.NewReader(t.Response))
		if err != nil {
			return fmt.Errorf("receipt: %w", err)
		}
		t.Receipt = res.Receipt
	}
	if *evPath != "" {
		if t.Evidence, err = readBundle(*evPath); err != nil {
			return err
		}
	}
	if *freshPath != "" {
		if t.FreshEvidence, err = readBundle(*freshPath); err != nil {
			return err
		}
	}
	return verifyTranscript(ctx, t, vf, stdout)
}

// verifyFlags are the trust and time flags of `verify response` and
// `verify transcript`.
type verifyFlags struct {
	policy, simRoot, now *string
	allowSim, asJSON     *bool
	maxAge, clockSkew    *time.Duration
	ignoreEpoch          *bool
	collateral           *string
	requireRevocation    *bool
}

func addVerifyFlags(fs *flag.FlagSet) *verifyFlags {
	return &verifyFlags{
		policy:   fs.String("policy", "", "policy file the evidence claims must satisfy"),
		allowSim: fs.Bool("allow-simulated", false, "accept evidence from the simulated TEE"),
		simRoot: fs.String("sim-root", "", "PEM file of the simulated root to pin ('teegate dev' prints where its root is):\n"+
			"simulated evidence must chain to it (implies --allow-simulated)"),
		maxAge: fs.Duration("max-age", client.DefaultMaxEvidenceAge, "refuse evidence older than this at --now (0: no limit)"),
		now:    fs.String("now", "", "verify as of this RFC 3339 time (default: now), e.g. the time a transcript was saved"),
		clockSkew: fs.Duration("clock-skew", attest.DefaultMaxClockSkew, "clock difference allowed wherever a time is compared with another clock's: evidence and\n"+
			"receipts from the future, a receipt against its bundle's epoch window"),
		ignoreEpoch: fs.Bool("ignore-epoch", false, "accept receipts created outside the key epoch their bundle states (before the key existed,\n"+
			"or after it was to be erased); for forensics only"),
		asJSON: fs.Bool("json", false, "print the verified result (claims, receipt) as JSON"),
		collateral: fs.String("collateral", "", "collateral `DIR` (teegate collateral fetch) to verify from offline: Intel TCB collateral,\n"+
			"AMD CRLs, NVIDIA OCSP responses and RIMs; revocation data it holds is checked"),
		requireRevocation: fs.Bool("require-revocation", false, "fail evidence whose chains the --collateral directory holds no revocation data for"),
	}
}

// options builds the SDK options the flags describe.
func (vf *verifyFlags) options() (client.Options, error) {
	opts := client.Options{AllowSimulated: *vf.allowSim || *vf.simRoot != "", IgnoreEpoch: *vf.ignoreEpoch}
	if *vf.clockSkew <= 0 {
		return opts, errors.New("--clock-skew must be positive")
	}
	opts.Verify.MaxClockSkew = *vf.clockSkew
	opts.Verify.MaxAge = *vf.maxAge
	if *vf.maxAge == 0 {
		opts.Verify.MaxAge = client.NoMaxAge
	}
	if *vf.simRoot != "" {
		b, err := os.ReadFile(*vf.simRoot)
		if err != nil {
			return opts, fmt.Errorf("reading --sim-root: %w", err)
		}
		roots, err := client.SimulatedRootsPEM(b)
		if err != nil {
			return opts, fmt.Errorf("--sim-root %s: %w", *vf.simRoot, err)
		}
		opts.Verify.PinnedSimulatedRoots = roots
	}
	if *vf.now != "" {
		at, err := parseNow(*vf.now)
		if err != nil {
			return opts, err
		}
		opts.Now = func() time.Time { return at }
	}
	if *vf.requireRevocation && *vf.collateral == "" {
		return opts, errors.New("--require-revocation needs --collateral")
	}
	if *vf.collateral != "" {
		set, err := collateral.Load(*vf.collateral)
		if err != nil {
			return opts, fmt.Errorf("--collateral: %w", err)
		}
		opts.Collateral, opts.RequireRevocation = set, *vf.requireRevocation
	}
	if *vf.policy != "" {
		p, err := loadPolicy(*vf.policy)
		if err != nil {
			return opts, fmt.Errorf("loading policy: %w", err)
		}
		opts.Policy = p
	}
	return opts, nil
}

// looksLikeSSE reports whether a response file holds an SSE stream rather
// than a JSON body: its first line is an SSE field or comment.
func looksLikeSSE(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	for _, p := range []string{"data:", "event:", "id:", "retry:", ":"} {
		if bytes.HasPrefix(b, []byte(p)) {
			return true
		}
	}
	return false
}

// runVerifyTranscript verifies a transcript the Go client saved.
func runVerifyTranscript(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("verify transcript", stderr)
	vf := addVerifyFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: teegate verify transcript FILE [--policy FILE] [--allow-simulated [--sim-root PEMFILE]]\n"+
			"         [--max-age D] [--clock-skew D] [--ignore-epoch] [--now RFC3339] [--json]\n\n"+
			"Verifies a transcript saved by the Go client (attest/client) offline.\n\n"+simulatedNote+"\n\nflags:")
		fs.PrintDefaults()
	}
	// The file may come before or after the flags.
	var path string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		path, args = args[0], args[1:]
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if path == "" && fs.NArg() > 0 {
		path = fs.Arg(0)
		if err := parseFlags(fs, fs.Args()[1:]); err != nil {
			return err
		}
	}
	if path == "" || fs.NArg() > 0 {
		fs.Usage()
		return errUsage
	}
	t, err := client.LoadTranscript(path)
	if err != nil {
		return err
	}
	return verifyTranscript(ctx, t, vf, stdout)
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	return nil
}

// readBundle reads a bundle file: canonical JSON, or base64url as in the
// Teegate-Evidence header. Surrounding whitespace (a trailing newline from
// an editor or echo) is dropped: canonical bundles have none.
func readBundle(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading evidence: %w", err)
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] != '{' {
		dec, err := attest.DecodeBase64URL(string(raw))
		if err != nil {
			return nil, fmt.Errorf("evidence: %s is neither bundle JSON nor base64url: %w", path, attest.ErrMalformed)
		}
		raw = dec
	}
	return raw, nil
}

// verifyTranscript runs the offline verification and reports it: one line
// naming the failed check, or the result.
func verifyTranscript(ctx context.Context, t *client.Transcript, vf *verifyFlags, stdout io.Writer) error {
	opts, err := vf.options()
	if err != nil {
		return err
	}
	asJSON := *vf.asJSON
	res, err := client.VerifyTranscript(ctx, t, opts)
	if err != nil {
		var ve *client.VerificationError
		if !errors.As(err, &ve) {
			return err
		}
		if errors.Is(err, attest.ErrSimulatedNotAllowed) {
			return fmt.Errorf("%s: %w (pass --allow-simulated to accept the simulated TEE)", ve.Cause, ve.Err)
		}
		return fmt.Errorf("%s: %w", ve.Cause, ve.Err)
	}
	if asJSON {
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return fmt.Errorf("encoding result: %w", err)
		}
		_, err = fmt.Fprintf(stdout, "%s\n", b)
		return err
	}
	r := res.Receipt.Receipt
	tee := res.Claims.TEE
	if res.Claims.Simulated {
		tee += " (SIMULATED: not a real TEE)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "verified: request %s, model %s, stream %t\n", r.RequestID, r.Model, r.Stream)
	fmt.Fprintf(&b, "  evidence %s, tee %s, gpus %d\n", res.EvidenceID, tee, len(res.Claims.GPUs))
	if res.FreshEvidenceID != "" {
		fmt.Fprintf(&b, "  fresh evidence %s for nonce %q\n", res.FreshEvidenceID, r.Nonce)
	}
	for _, reason := range res.Reasons {
		fmt.Fprintf(&b, "  policy: %s\n", reason)
	}
	_, err = io.WriteString(stdout, b.String())
	return err
}
