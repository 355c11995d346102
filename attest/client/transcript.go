package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/teegate/teegate/attest"
)

// TranscriptVersion is the transcript format this package writes and reads.
const TranscriptVersion = 1

// MaxTranscriptSize bounds a transcript file read by LoadTranscript.
const MaxTranscriptSize = 256 << 20

// Transcript is one exchange as the client saw it, enough to verify it
// again offline: the exact request and response bytes (base64 in JSON, so
// not one byte changes), the signed receipt and the bundles it relies on.
// Transcripts hold prompts and completions: store them like the data they
// are.
type Transcript struct {
	Version int `json:"version"`
	// Saved is when the client saved it (informational, unsigned).
	Saved time.Time `json:"saved"`
	// Endpoint is the request path, e.g. /v1/chat/completions.
	Endpoint string `json:"endpoint,omitempty"`
	// Stream: Response is the raw SSE body (up to at least the receipt
	// event) instead of a JSON body.
	Stream bool `json:"stream"`
	// Nonce is the client nonce sent with the request ("" for none).
	Nonce    string                `json:"nonce,omitempty"`
	Request  []byte                `json:"request"`
	Response []byte                `json:"response"`
	Receipt  *attest.SignedReceipt `json:"receipt"`
	// Evidence and FreshEvidence are canonical bundle bytes: the bundle
	// the receipt names and, in fresh mode, the batch's bundle.
	Evidence      []byte `json:"evidence"`
	FreshEvidence []byte `json:"fresh_evidence,omitempty"`
}

// errTranscript marks a transcript that is not well formed.
var errTranscript = errors.New("malformed transcript")

// Encode returns the transcript's JSON.
func (t *Transcript) Encode() ([]byte, error) {
	if t.Receipt == nil {
		return nil, fmt.Errorf("encoding transcript: no receipt: %w", errTranscript)
	}
	b, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding transcript: %w", err)
	}
	return append(b, '\n'), nil
}

// DecodeTranscript decodes a transcript strictly: known members only, one
// JSON value, a supported version, a receipt, request and response.
func DecodeTranscript(b []byte) (*Transcript, error) {
	if len(b) > MaxTranscriptSize {
		return nil, fmt.Errorf("decoding transcript of %d bytes: %w", len(b), errTranscript)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var t Transcript
	if err := dec.Decode(&t); err != nil {
		return nil, fmt.Errorf("decoding transcript: %w: %w", errTranscript, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("decoding transcript: trailing data: %w", errTranscript)
	}
	switch {
	case t.Version != TranscriptVersion:
		return nil, fmt.Errorf("decoding transcript version %d: %w", t.Version, attest.ErrUnsupportedVersion)
	case t.Receipt == nil:
		return nil, fmt.Errorf("decoding transcript: no receipt: %w", errTranscript)
	case t.Request == nil || t.Response == nil:
		return nil, fmt.Errorf("decoding transcript: no request or response: %w", errTranscript)
	}
	return &t, nil
}

// SaveTranscript writes t to path atomically (a temporary file renamed
// into place), readable by its owner only.
func SaveTranscript(path string, t *Transcript) error {
	b, err := t.Encode()
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".transcript-*")
	if err != nil {
		return fmt.Errorf("saving transcript: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("saving transcript: %w", err)
	}
	return nil
}

// LoadTranscript reads and decodes a transcript file.
func LoadTranscript(path string) (*Transcript, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("loading transcript: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxTranscriptSize+1))
	if err != nil {
		return nil, fmt.Errorf("loading transcript: %w", err)
	}
	return DecodeTranscript(b)
}

// TranscriptSink receives verified exchanges. An error fails the answer:
// a client that must keep an audit trail does not accept what it cannot
// keep.
type TranscriptSink interface {
	SaveTranscript(ctx context.Context, t *Transcript) error
}

// TranscriptDir is a TranscriptSink writing one file per exchange,
// <dir>/<request_id>.json.
type TranscriptDir string

// SaveTranscript implements TranscriptSink.
func (d TranscriptDir) SaveTranscript(_ context.Context, t *Transcript) error {
	id := t.Receipt.Receipt.RequestID
	// Request ids come from the gateway: never let one name a path.
	if id == "" || strings.ContainsAny(id, `/\`) || id == "." || id == ".." {
		id = fmt.Sprintf("%x", t.Receipt.Receipt.RequestSHA256[:8])
	}
	return SaveTranscript(filepath.Join(string(d), id+".json"), t)
}

// VerifyTranscript verifies a transcript offline: evidence, binding,
// receipt signature, request and response hashes, nonce and batch proof,
// and the policy. For a stream, the response is re-digested from the raw
// SSE, whose receipt event must be the transcript's receipt.
func VerifyTranscript(ctx context.Context, t *Transcript, opts Options) (*Result, error) {
	if t == nil || t.Receipt == nil {
		return nil, fail("receipt", ErrNoReceipt)
	}
	ex := &exchange{request: t.Request, stream: t.Stream, receipt: t.Receipt, nonce: t.Nonce, model: requestModel(t.Request)}
	for _, b := range [][]byte{t.Evidence, t.FreshEvidence} {
		if len(b) > 0 {
			ex.candidates = append(ex.candidates, b)
		}
	}
	if t.Stream {
		sres, err := attest.DigestSSE(bytes.NewReader(t.Response))
		if err != nil {
			return nil, fail("stream", err)
		}
		if !sameReceipt(sres.Receipt, t.Receipt) {
			return nil, fail("receipt", fmt.Errorf("stream's receipt event differs from the transcript's receipt: %w", attest.ErrMalformed))
		}
		ex.digest = &sres.Digest
		if sres.Evidence != nil {
			ex.candidates = append(ex.candidates, sres.Evidence)
		}
	} else {
		ex.response = t.Response
	}
	return newChecker(opts, 4).verify(ctx, ex)
}

func sameReceipt(a, b *attest.SignedReceipt) bool {
	return bytes.Equal(a.AppendJSON(nil), b.AppendJSON(nil))
}
