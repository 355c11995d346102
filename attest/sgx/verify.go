package sgx

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/teegate/teegate/attest/claims"
	"github.com/teegate/teegate/attest/pcs"
)

// Options control Verify; they mean what tdx.Options mean.
type Options struct {
	TrustedRoots           *x509.CertPool
	Collateral             *pcs.Collateral
	Getter                 pcs.Getter
	Now                    func() time.Time
	CheckCRL               bool
	AllowExpiredCollateral bool
}

// Source names recorded in Claims.Sources.
const (
	SourceQuote      = "sgx.quote_signature"
	SourcePCKChain   = "sgx.pck_chain"
	SourceCollateral = "sgx.collateral"
)

// Result is the full outcome of a verification.
type Result struct {
	Quote   *Quote
	Claims  *claims.Claims
	Verdict *pcs.Verdict
}

// Verify parses and verifies an SGX v3 quote and returns its claims.
func Verify(ctx context.Context, raw []byte, opts Options) (*claims.Claims, error) {
	res, err := VerifyDetailed(ctx, raw, opts)
	if err != nil {
		return nil, err
	}
	return res.Claims, nil
}

// VerifyOERemoteReport verifies an OE/EGo remote report (the wrapped quote).
func VerifyOERemoteReport(ctx context.Context, raw []byte, opts Options) (*claims.Claims, error) {
	rep, err := ParseOERemoteReport(raw)
	if err != nil {
		return nil, fmt.Errorf("verifying OE report: %w", err)
	}
	c, err := Verify(ctx, rep.RawQuote, opts)
	if err != nil {
		return nil, fmt.Errorf("verifying OE report: %w", err)
	}
	return c, nil
}

// VerifyDetailed is Verify returning the parsed quote and verdict too. On
// ErrTCBRevoked the result is returned along with the error.
func VerifyDetailed(ctx context.Context, raw []byte, opts Options) (*Result, error) {
	q, err := ParseQuote(raw)
	if err != nil {
		return nil, fmt.Errorf("verifying SGX quote: %w", err)
	}
	if q.Certification.Type != CertTypePCKChain {
		return nil, fmt.Errorf("verifying SGX quote: certification data type %d, want %d: %w",
			q.Certification.Type, CertTypePCKChain, ErrUnsupportedVersion)
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	v, err := pcs.VerifyQuote(ctx, &pcs.QuoteAuth{
		TEE:               pcs.TEESGX,
		QuoteVersion:      q.Header.Version,
		SignedData:        raw[:q.SignedLen()],
		Signature:         q.Signature[:],
		AttestationKey:    q.AttestationKey[:],
		QEReport:          &q.QEReport,
		QEReportSignature: q.QEReportSignature[:],
		QEAuthData:        q.QEAuthData,
		PCKChain:          q.Certification.Data,
	}, pcs.VerifyOptions{
		Roots:                  opts.TrustedRoots,
		Now:                    now(),
		Collateral:             opts.Collateral,
		Getter:                 opts.Getter,
		CheckCRL:               opts.CheckCRL,
		AllowExpiredCollateral: opts.AllowExpiredCollateral,
	})
	if err != nil && (v == nil || !errors.Is(err, ErrTCBRevoked)) {
		return nil, fmt.Errorf("verifying SGX quote: %w", err)
	}
	res := &Result{Quote: q, Claims: q.claims(v), Verdict: v}
	if err != nil {
		return res, fmt.Errorf("verifying SGX quote: %w", err)
	}
	return res, nil
}

func (q *Quote) claims(v *pcs.Verdict) *claims.Claims {
	r := &q.Report
	c := &claims.Claims{
		Version: claims.Version,
		TEE:     claims.TEESGX,
		Debug:   r.Debug(),
		Measurements: map[string]string{
			"mrenclave":  hex.EncodeToString(r.MRENCLAVE[:]),
			"mrsigner":   hex.EncodeToString(r.MRSIGNER[:]),
			"isvprodid":  strconv.Itoa(int(r.ISVProdID)),
			"isvsvn":     strconv.Itoa(int(r.ISVSVN)),
			"attributes": hex.EncodeToString(r.Attributes[:]),
			"miscselect": fmt.Sprintf("%08x", r.MiscSelect),
			"cpusvn":     hex.EncodeToString(r.CPUSVN[:]),
		},
		ReportData: hex.EncodeToString(r.ReportData[:]),
		GPUs:       []claims.GPU{},
		Sources: map[string]string{
			"tee":          SourcePCKChain,
			"debug":        SourceQuote,
			"measurements": SourceQuote,
			"report_data":  SourceQuote,
		},
	}
	if v != nil && v.TCB != nil {
		c.TCB = v.TCB.Claims()
		c.Sources["tcb"] = SourceCollateral
	}
	return c
}
