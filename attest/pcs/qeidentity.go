package pcs

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// QE identity ids ("Intel PCS API", enclave identity v2).
const (
	QEIDSGX = "QE"
	QEIDTDX = "TD_QE"
)

// QEIdentity is the expected identity of Intel's quoting enclave and its
// ISVSVN levels.
type QEIdentity struct {
	ID                      string
	Version                 int
	IssueDate               time.Time
	NextUpdate              time.Time
	TCBEvaluationDataNumber int
	MiscSelect              [4]byte
	MiscSelectMask          [4]byte
	Attributes              [16]byte
	AttributesMask          [16]byte
	MRSIGNER                [32]byte
	ISVProdID               uint16
	// TCBLevels in the order Intel serves them: highest ISVSVN first.
	TCBLevels []IdentityLevel
}

// SignedQEIdentity is a QE identity with the exact bytes Intel signed.
type SignedQEIdentity struct {
	QEIdentity
	Raw       []byte
	Signature []byte
}

type jsonQEIdentity struct {
	ID                      string              `json:"id"`
	Version                 int                 `json:"version"`
	IssueDate               string              `json:"issueDate"`
	NextUpdate              string              `json:"nextUpdate"`
	TCBEvaluationDataNumber int                 `json:"tcbEvaluationDataNumber"`
	MiscSelect              string              `json:"miscselect"`
	MiscSelectMask          string              `json:"miscselectMask"`
	Attributes              string              `json:"attributes"`
	AttributesMask          string              `json:"attributesMask"`
	MRSIGNER                string              `json:"mrsigner"`
	ISVProdID               *int                `json:"isvprodid"`
	TCBLevels               []jsonIdentityLevel `json:"tcbLevels"`
}

// ParseQEIdentity parses a PCS QE identity response body:
// {"enclaveIdentity":{...},"signature":"<hex r||s>"}.
func ParseQEIdentity(body []byte) (*SignedQEIdentity, error) {
	var env struct {
		EnclaveIdentity json.RawMessage `json:"enclaveIdentity"`
		Signature       string          `json:"signature"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("parsing QE identity response: %v: %w", err, ErrCollateralFormat)
	}
	sig, err := hex.DecodeString(env.Signature)
	if err != nil || len(env.EnclaveIdentity) == 0 {
		return nil, fmt.Errorf("parsing QE identity response: missing enclaveIdentity or signature: %w", ErrCollateralFormat)
	}
	return NewSignedQEIdentity(env.EnclaveIdentity, sig)
}

// NewSignedQEIdentity parses the signed identity object raw (the value of
// "enclaveIdentity") with its separately stored signature.
func NewSignedQEIdentity(raw, sig []byte) (*SignedQEIdentity, error) {
	var j jsonQEIdentity
	if err := json.Unmarshal(raw, &j); err != nil {
		return nil, fmt.Errorf("parsing QE identity: %v: %w", err, ErrCollateralFormat)
	}
	if len(sig) != 64 {
		return nil, fmt.Errorf("parsing QE identity: signature is %d bytes: %w", len(sig), ErrCollateralFormat)
	}
	if j.Version != 2 || (j.ID != QEIDSGX && j.ID != QEIDTDX) {
		return nil, fmt.Errorf("parsing QE identity: id %q version %d: %w", j.ID, j.Version, ErrCollateralFormat)
	}
	q := QEIdentity{ID: j.ID, Version: j.Version, TCBEvaluationDataNumber: j.TCBEvaluationDataNumber}
	var err error
	if q.IssueDate, err = parseTime(j.IssueDate); err != nil {
		return nil, fmt.Errorf("parsing QE identity: %w", err)
	}
	if q.NextUpdate, err = parseTime(j.NextUpdate); err != nil {
		return nil, fmt.Errorf("parsing QE identity: %w", err)
	}
	for _, f := range []struct {
		dst []byte
		s   string
	}{
		{q.MiscSelect[:], j.MiscSelect}, {q.MiscSelectMask[:], j.MiscSelectMask},
		{q.Attributes[:], j.Attributes}, {q.AttributesMask[:], j.AttributesMask},
		{q.MRSIGNER[:], j.MRSIGNER},
	} {
		if err := decodeHexInto(f.dst, f.s); err != nil {
			return nil, fmt.Errorf("parsing QE identity: %w", err)
		}
	}
	if j.ISVProdID == nil || *j.ISVProdID < 0 || *j.ISVProdID > 65535 {
		return nil, fmt.Errorf("parsing QE identity: isvprodid: %w", ErrCollateralFormat)
	}
	q.ISVProdID = uint16(*j.ISVProdID)
	if q.TCBLevels, err = convertIdentityLevels(j.TCBLevels); err != nil {
		return nil, fmt.Errorf("parsing QE identity: %w", err)
	}
	if len(q.TCBLevels) == 0 {
		return nil, fmt.Errorf("parsing QE identity: no TCB levels: %w", ErrCollateralFormat)
	}
	return &SignedQEIdentity{QEIdentity: q, Raw: bytes.Clone(raw), Signature: bytes.Clone(sig)}, nil
}

// Match checks a QE report against the identity ("Intel SGX ECDSA QVL",
// enclave report verification: miscselect and attributes under their
// masks, MRSIGNER, ISVPRODID) and returns the level its ISVSVN falls in.
// A report older than every level yields ErrTCBNotSupported.
func (q *QEIdentity) Match(r *EnclaveReport) (*IdentityLevel, error) {
	var ms [4]byte
	ms[0], ms[1], ms[2], ms[3] = byte(r.MiscSelect), byte(r.MiscSelect>>8), byte(r.MiscSelect>>16), byte(r.MiscSelect>>24)
	for i := range ms {
		if ms[i]&q.MiscSelectMask[i] != q.MiscSelect[i] {
			return nil, fmt.Errorf("matching QE identity: miscselect: %w", ErrQEIdentityMismatch)
		}
	}
	for i := range r.Attributes {
		if r.Attributes[i]&q.AttributesMask[i] != q.Attributes[i] {
			return nil, fmt.Errorf("matching QE identity: attributes: %w", ErrQEIdentityMismatch)
		}
	}
	if r.MRSIGNER != q.MRSIGNER {
		return nil, fmt.Errorf("matching QE identity: mrsigner: %w", ErrQEIdentityMismatch)
	}
	if r.ISVProdID != q.ISVProdID {
		return nil, fmt.Errorf("matching QE identity: isvprodid %d, want %d: %w", r.ISVProdID, q.ISVProdID, ErrQEIdentityMismatch)
	}
	for i := range q.TCBLevels {
		if r.ISVSVN >= q.TCBLevels[i].ISVSVN {
			return &q.TCBLevels[i], nil
		}
	}
	return nil, fmt.Errorf("matching QE identity: isvsvn %d below every level: %w", r.ISVSVN, ErrTCBNotSupported)
}
