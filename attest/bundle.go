package attest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// BundleVersion is the only evidence bundle version this package produces
// and accepts (docs/attestation.md §15). Version 1 bundles, which did not
// state their epoch's validity, are refused by name (ErrUnsupportedVersion,
// "bundle version 1 ... no longer accepted").
const BundleVersion = 2

// MaxEpochGrace bounds a bundle's grace_seconds (30 days): far beyond any
// sane rotation, yet small enough that the erase time cannot overflow.
const MaxEpochGrace = 30 * 24 * time.Hour

// Bundle limits, generous for real evidence (a TDX quote with its PCK chain
// is ~5 KiB, a GPU report plus chain ~8 KiB) yet small enough that a hostile
// bundle cannot exhaust a verifier.
const (
	MaxBundleSize     = 1 << 20
	maxGPUs           = 64
	maxSimRoots       = 4
	maxIdentityString = 256
	maxModels         = 256
)

// TEE kinds a bundle's CPU evidence can be in. A simulated bundle uses one
// of these formats too (the simulated TEE produces real-format TDX quotes)
// and is recognised by its simulated roots.
var bundleTEEs = map[string]bool{"tdx": true, "sgx": true, "sev-snp": true}

// TimeLayout is the only accepted timestamp form: RFC 3339, UTC, second
// precision, with a literal Z.
const TimeLayout = "2006-01-02T15:04:05Z"

// GPU confidential-computing modes a bundle can report (GPUEvidence.CCMode).
// The GPU report does not carry the mode: the TEE reads it from the driver
// (NVML) and binds it through the GPU evidence digest.
const (
	// CCModeOn: confidential computing on, memory inaccessible to tools.
	CCModeOn = "on"
	// CCModeOff: confidential computing off; the GPU is not protected.
	CCModeOff = "off"
	// CCModeDevTools: confidential computing on in developer-tools mode,
	// where debuggers and profilers can read GPU memory.
	CCModeDevTools = "devtools"
	// CCModeUnknown is the claims value (claims.GPU.CCMode) for a bundle
	// that does not report the mode. It is never written in a bundle.
	CCModeUnknown = "unknown"
)

// GPUEvidence is one GPU's attestation: its architecture (lowercase, e.g.
// "hopper"), its confidential-computing mode, the raw SPDM measurement
// report and the certificate chain as the driver returned it (concatenated
// PEM for NVIDIA).
type GPUEvidence struct {
	Arch string
	// CCMode is CCModeOn, CCModeOff or CCModeDevTools as the driver inside
	// the TEE reported it; empty when the producer did not report it
	// (verifiers then claim CCModeUnknown, which production policies deny).
	CCMode    string
	Report    []byte
	CertChain []byte
}

// validCCMode reports whether m may appear in a bundle (empty: omitted).
func validCCMode(m string) bool {
	switch m {
	case "", CCModeOn, CCModeOff, CCModeDevTools:
		return true
	}
	return false
}

// EpochWindow is a key epoch's validity as its bundles state it
// (docs/attestation.md §2, §4.1): the epoch's keys sign from NotBefore,
// new work moves to the next epoch at NotAfter, and for Grace after that
// the keys still sign for requests in flight; then they are erased. So a
// receipt of the epoch is created within [NotBefore, ErasedAt()]. The
// window is in the report data the hardware evidence carries (ReportData),
// so it cannot be edited. Times are whole seconds, UTC.
type EpochWindow struct {
	NotBefore time.Time
	NotAfter  time.Time
	// Grace is a whole number of seconds, 0 to MaxEpochGrace.
	Grace time.Duration
}

// ErasedAt is when the epoch's keys are erased at the latest:
// NotAfter + Grace. No receipt of the epoch is created after it.
func (w EpochWindow) ErasedAt() time.Time { return w.NotAfter.Add(w.Grace) }

// Contains reports whether t lies in [NotBefore, ErasedAt()].
func (w EpochWindow) Contains(t time.Time) bool {
	return !t.Before(w.NotBefore) && !t.After(w.ErasedAt())
}

// NewEpochWindow states the window of an epoch started at start that is
// current for epoch and signs for grace after that, rounded outwards to
// whole seconds (NotBefore down, NotAfter and Grace up) so that the stated
// window covers the real one.
func NewEpochWindow(start time.Time, epoch, grace time.Duration) EpochWindow {
	nb := start.UTC().Truncate(time.Second)
	na := start.UTC().Add(epoch)
	if t := na.Truncate(time.Second); !t.Equal(na) {
		na = t.Add(time.Second)
	}
	g := grace.Truncate(time.Second)
	if g != grace {
		g += time.Second
	}
	return EpochWindow{NotBefore: nb, NotAfter: na, Grace: g}
}

// Equal reports whether w and o state the same window.
func (w EpochWindow) Equal(o EpochWindow) bool {
	return w.NotBefore.Equal(o.NotBefore) && w.NotAfter.Equal(o.NotAfter) && w.Grace == o.Grace
}

func (w EpochWindow) validate() error {
	switch {
	case w.NotBefore.Year() < 2000 || w.NotBefore.Year() > 9999 || w.NotAfter.Year() < 2000 || w.NotAfter.Year() > 9999:
		return errors.New("epoch times out of range")
	case !w.NotBefore.Equal(w.NotBefore.Truncate(time.Second)) || !w.NotAfter.Equal(w.NotAfter.Truncate(time.Second)):
		return errors.New("epoch times not whole seconds")
	case !w.NotBefore.Before(w.NotAfter):
		return errors.New("epoch not_before not before not_after")
	case w.Grace < 0 || w.Grace > MaxEpochGrace || w.Grace%time.Second != 0:
		return errors.New("epoch grace out of range")
	}
	return nil
}

// WorkerIdentity names the worker that produced a bundle. Models is
// optional; it is informational (routing), not a security claim.
// Provider, optional, names who operates the machine (the party paid for
// what it serves); like ID it is the worker's own statement, covered by
// the bundle signature, which admission records and the usage ledger sums
// by (docs/attestation.md §2).
type WorkerIdentity struct {
	ID       string
	Models   []string
	Provider string
}

// Bundle is an evidence bundle (DESIGN §3.1). Treat a decoded Bundle as
// immutable: its ID is the hash of its canonical encoding.
type Bundle struct {
	Version int
	// TEE is the format of CPUEvidence: "tdx", "sgx" or "sev-snp".
	TEE         string
	CPUEvidence []byte
	GPUs        []GPUEvidence
	// SigningPub is the Ed25519 receipt-signing key born in the TEE.
	SigningPub []byte
	// HPKEPub is the X25519 HPKE public key born in the TEE.
	HPKEPub    []byte
	EpochNonce [32]byte
	// Created is the creation time, UTC, truncated to the second. It lies
	// within Epoch.
	Created time.Time
	// Epoch is the validity of the epoch whose keys the bundle binds (the
	// same in every bundle of the epoch: its own, fresh-mode and on-demand
	// ones).
	Epoch  EpochWindow
	Worker WorkerIdentity
	// Signature is the Ed25519 signature by SigningPub over SigningInput:
	// the TEE key vouches for the members the hardware evidence does not
	// cover (created, worker identity, simulated roots).
	Signature []byte
	// SimulatedRoots are DER certificates of the simulated root(s) the
	// evidence chains to. Non-empty only for simulated bundles; their mere
	// presence makes every verification result say "simulated".
	SimulatedRoots [][]byte
}

// Simulated reports whether the bundle claims a simulated root.
func (b *Bundle) Simulated() bool { return len(b.SimulatedRoots) > 0 }

// Validate checks the schema constraints the decoder enforces.
func (b *Bundle) Validate() error {
	switch {
	case b.Version == 1:
		return fmt.Errorf("bundle version 1 is no longer accepted (it does not state its epoch's validity): %w", ErrUnsupportedVersion)
	case b.Version != BundleVersion:
		return fmt.Errorf("bundle version %d: %w", b.Version, ErrUnsupportedVersion)
	case !bundleTEEs[b.TEE]:
		return fmt.Errorf("tee %q: %w", b.TEE, ErrMalformed)
	case len(b.CPUEvidence) == 0:
		return fmt.Errorf("empty cpu_evidence: %w", ErrMalformed)
	case len(b.SigningPub) != SigningKeySize:
		return fmt.Errorf("signing_pub of %d bytes: %w", len(b.SigningPub), ErrMalformed)
	case len(b.Signature) != ed25519.SignatureSize:
		return fmt.Errorf("signature of %d bytes: %w", len(b.Signature), ErrMalformed)
	case len(b.HPKEPub) != HPKEKeySize:
		return fmt.Errorf("hpke_pub of %d bytes: %w", len(b.HPKEPub), ErrMalformed)
	case b.Created.IsZero() || b.Created.Year() < 2000 || b.Created.Year() > 9999:
		return fmt.Errorf("created out of range: %w", ErrMalformed)
	case len(b.GPUs) > maxGPUs:
		return fmt.Errorf("%d GPUs: %w", len(b.GPUs), ErrMalformed)
	}
	if err := b.Epoch.validate(); err != nil {
		return fmt.Errorf("%w: %w", err, ErrMalformed)
	}
	if !b.Epoch.Contains(b.Created) {
		return fmt.Errorf("created outside its epoch: %w", ErrMalformed)
	}
	switch {
	case len(b.SimulatedRoots) > maxSimRoots:
		return fmt.Errorf("%d simulated roots: %w", len(b.SimulatedRoots), ErrMalformed)
	case b.Worker.ID == "" || len(b.Worker.ID) > maxIdentityString:
		return fmt.Errorf("worker id length %d: %w", len(b.Worker.ID), ErrMalformed)
	case len(b.Worker.Models) > maxModels:
		return fmt.Errorf("%d models: %w", len(b.Worker.Models), ErrMalformed)
	case len(b.Worker.Provider) > maxIdentityString:
		return fmt.Errorf("worker provider length %d: %w", len(b.Worker.Provider), ErrMalformed)
	}
	for i, g := range b.GPUs {
		if g.Arch == "" || len(g.Arch) > 32 || len(g.Report) == 0 {
			return fmt.Errorf("gpu %d: empty arch or report: %w", i, ErrMalformed)
		}
		if !validCCMode(g.CCMode) {
			return fmt.Errorf("gpu %d: cc_mode %q: %w", i, g.CCMode, ErrMalformed)
		}
	}
	for i, m := range b.Worker.Models {
		if m == "" || len(m) > maxIdentityString {
			return fmt.Errorf("model %d length %d: %w", i, len(m), ErrMalformed)
		}
	}
	for i, r := range b.SimulatedRoots {
		if len(r) == 0 {
			return fmt.Errorf("simulated root %d empty: %w", i, ErrMalformed)
		}
	}
	return nil
}

// Encode returns the canonical encoding of a valid bundle.
func (b *Bundle) Encode() ([]byte, error) {
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("encoding bundle: %w", err)
	}
	return b.appendCanonical(make([]byte, 0, b.sizeHint()), true), nil
}

// SigningInput is what Signature covers: "teegate/bundle/v1" || 0x00 ||
// the canonical encoding of the bundle without its signature member.
func (b *Bundle) SigningInput() []byte {
	dst := append(make([]byte, 0, b.sizeHint()), DomainBundle...)
	return b.appendCanonical(append(dst, 0), false)
}

// ID is the bundle's content id: lowercase hex of SHA-256 over its canonical
// encoding.
func (b *Bundle) ID() string {
	sum := sha256.Sum256(b.appendCanonical(make([]byte, 0, b.sizeHint()), true))
	return hex.EncodeToString(sum[:])
}

// BundleID is the id of canonical bundle bytes (what ID returns for the
// decoded bundle).
func BundleID(canonical []byte) string {
	sum := sha256.Sum256(canonical)
	return hex.EncodeToString(sum[:])
}

func (b *Bundle) sizeHint() int {
	n := 640 + len(b.CPUEvidence)*4/3
	for _, g := range b.GPUs {
		n += 64 + (len(g.Report)+len(g.CertChain))*4/3
	}
	for _, r := range b.SimulatedRoots {
		n += 4 + len(r)*4/3
	}
	return n
}

// appendCanonical writes the RFC 8785 form with members in sorted order:
// cpu_evidence, created, epoch[grace_seconds, not_after, not_before],
// epoch_nonce, gpus[arch, cc_mode (omitted when
// empty), cert_chain, report],
// hpke_pub, signature (omitted when withSig is false), signing_pub,
// simulated_roots (omitted when empty), tee, version, worker[id, models
// (omitted when empty), provider (omitted when empty)].
func (b *Bundle) appendCanonical(dst []byte, withSig bool) []byte {
	dst = append(dst, '{')
	dst = appendKey(dst, "cpu_evidence", true)
	dst = appendB64(dst, b.CPUEvidence)
	dst = appendKey(dst, "created", false)
	dst = appendJSONString(dst, b.Created.UTC().Format(TimeLayout))
	dst = appendKey(dst, "epoch", false)
	dst = append(dst, '{')
	dst = appendKey(dst, "grace_seconds", true)
	dst = appendJSONUint(dst, uint64(b.Epoch.Grace/time.Second))
	dst = appendKey(dst, "not_after", false)
	dst = appendJSONString(dst, b.Epoch.NotAfter.UTC().Format(TimeLayout))
	dst = appendKey(dst, "not_before", false)
	dst = appendJSONString(dst, b.Epoch.NotBefore.UTC().Format(TimeLayout))
	dst = append(dst, '}')
	dst = appendKey(dst, "epoch_nonce", false)
	dst = appendB64(dst, b.EpochNonce[:])
	dst = appendKey(dst, "gpus", false)
	dst = append(dst, '[')
	for i, g := range b.GPUs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '{')
		dst = appendKey(dst, "arch", true)
		dst = appendJSONString(dst, g.Arch)
		if g.CCMode != "" {
			dst = appendKey(dst, "cc_mode", false)
			dst = appendJSONString(dst, g.CCMode)
		}
		dst = appendKey(dst, "cert_chain", false)
		dst = appendB64(dst, g.CertChain)
		dst = appendKey(dst, "report", false)
		dst = appendB64(dst, g.Report)
		dst = append(dst, '}')
	}
	dst = append(dst, ']')
	dst = appendKey(dst, "hpke_pub", false)
	dst = appendB64(dst, b.HPKEPub)
	if withSig {
		dst = appendKey(dst, "signature", false)
		dst = appendB64(dst, b.Signature)
	}
	dst = appendKey(dst, "signing_pub", false)
	dst = appendB64(dst, b.SigningPub)
	if len(b.SimulatedRoots) > 0 {
		dst = appendKey(dst, "simulated_roots", false)
		dst = append(dst, '[')
		for i, r := range b.SimulatedRoots {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendB64(dst, r)
		}
		dst = append(dst, ']')
	}
	dst = appendKey(dst, "tee", false)
	dst = appendJSONString(dst, b.TEE)
	dst = appendKey(dst, "version", false)
	dst = appendJSONUint(dst, uint64(b.Version))
	dst = appendKey(dst, "worker", false)
	dst = append(dst, '{')
	dst = appendKey(dst, "id", true)
	dst = appendJSONString(dst, b.Worker.ID)
	if len(b.Worker.Models) > 0 {
		dst = appendKey(dst, "models", false)
		dst = append(dst, '[')
		for i, m := range b.Worker.Models {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, m)
		}
		dst = append(dst, ']')
	}
	if b.Worker.Provider != "" {
		dst = appendKey(dst, "provider", false)
		dst = appendJSONString(dst, b.Worker.Provider)
	}
	dst = append(dst, '}', '}')
	return dst
}

// b64 is a JSON string of base64url without padding, decoded strictly.
type b64 []byte

func (b *b64) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	v, err := DecodeBase64URL(s)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

type bundleJSON struct {
	CPUEvidence b64    `json:"cpu_evidence"`
	Created     string `json:"created"`
	Epoch       struct {
		GraceSeconds uint64 `json:"grace_seconds"`
		NotAfter     string `json:"not_after"`
		NotBefore    string `json:"not_before"`
	} `json:"epoch"`
	EpochNonce     b64       `json:"epoch_nonce"`
	GPUs           []gpuJSON `json:"gpus"`
	HPKEPub        b64       `json:"hpke_pub"`
	Signature      b64       `json:"signature"`
	SigningPub     b64       `json:"signing_pub"`
	SimulatedRoots []b64     `json:"simulated_roots"`
	TEE            string    `json:"tee"`
	Version        int       `json:"version"`
	Worker         struct {
		ID       string   `json:"id"`
		Models   []string `json:"models"`
		Provider string   `json:"provider"`
	} `json:"worker"`
}

type gpuJSON struct {
	Arch      string `json:"arch"`
	CCMode    string `json:"cc_mode"`
	CertChain b64    `json:"cert_chain"`
	Report    b64    `json:"report"`
}

// epoch reads the epoch member. Its absence (a version 1 bundle) leaves the
// zero window, which Validate refuses after the version check.
func (w *bundleJSON) epoch() (EpochWindow, error) {
	if w.Version == 1 && w.Epoch.NotBefore == "" && w.Epoch.NotAfter == "" && w.Epoch.GraceSeconds == 0 {
		return EpochWindow{}, nil
	}
	nb, err1 := parseTime(w.Epoch.NotBefore)
	na, err2 := parseTime(w.Epoch.NotAfter)
	g := w.Epoch.GraceSeconds
	if err1 != nil || err2 != nil || g > uint64(MaxEpochGrace/time.Second) {
		return EpochWindow{}, ErrMalformed
	}
	return EpochWindow{NotBefore: nb, NotAfter: na, Grace: time.Duration(g) * time.Second}, nil
}

// DecodeBundle decodes canonical bundle bytes. It rejects anything that is
// not exactly the canonical encoding of the bundle it describes (unknown or
// duplicate members, other member order, whitespace, padding, escapes), so
// raw bytes and bundle id correspond one to one.
func DecodeBundle(raw []byte) (*Bundle, error) {
	if len(raw) > MaxBundleSize {
		return nil, fmt.Errorf("decoding bundle of %d bytes: %w", len(raw), ErrMalformed)
	}
	var w bundleJSON
	if err := strictUnmarshal(raw, &w); err != nil {
		return nil, fmt.Errorf("decoding bundle: %w", err)
	}
	created, err := time.Parse(TimeLayout, w.Created)
	if err != nil {
		return nil, fmt.Errorf("decoding bundle created: %w", ErrMalformed)
	}
	win, err := w.epoch()
	if err != nil {
		return nil, fmt.Errorf("decoding bundle epoch: %w", err)
	}
	if len(w.EpochNonce) != NonceSize {
		return nil, fmt.Errorf("decoding bundle epoch_nonce of %d bytes: %w", len(w.EpochNonce), ErrMalformed)
	}
	b := &Bundle{
		Version:     w.Version,
		TEE:         w.TEE,
		CPUEvidence: w.CPUEvidence,
		SigningPub:  w.SigningPub,
		HPKEPub:     w.HPKEPub,
		Signature:   w.Signature,
		Created:     created,
		Epoch:       win,
		Worker:      WorkerIdentity{ID: w.Worker.ID, Models: w.Worker.Models, Provider: w.Worker.Provider},
	}
	copy(b.EpochNonce[:], w.EpochNonce)
	if len(w.GPUs) > 0 {
		b.GPUs = make([]GPUEvidence, len(w.GPUs))
		for i, g := range w.GPUs {
			b.GPUs[i] = GPUEvidence{Arch: g.Arch, CCMode: g.CCMode, Report: g.Report, CertChain: g.CertChain}
		}
	}
	for _, r := range w.SimulatedRoots {
		b.SimulatedRoots = append(b.SimulatedRoots, r)
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("decoding bundle: %w", err)
	}
	if !bytes.Equal(b.appendCanonical(make([]byte, 0, len(raw)), true), raw) {
		return nil, fmt.Errorf("decoding bundle: %w", ErrNonCanonical)
	}
	return b, nil
}

// strictUnmarshal decodes exactly one JSON value with no unknown members and
// nothing after it.
func strictUnmarshal(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("trailing data: %w", ErrMalformed)
	}
	return nil
}
