package tdx

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/teegate/teegate/attest/claims"
	"github.com/teegate/teegate/attest/pcs"
)

// Options control Verify.
type Options struct {
	// TrustedRoots anchor the PCK and collateral chains; nil means the
	// embedded Intel SGX Root CA. Simulated quotes pass their sim root.
	TrustedRoots *x509.CertPool
	// Collateral, when set, is used for TCB evaluation; otherwise Getter is
	// asked (when set). With neither, claims carry no TCB.
	Collateral *pcs.Collateral
	Getter     pcs.Getter
	// Now is the verification clock; nil means time.Now.
	Now func() time.Time
	// CheckCRL requires the PCK and root CRLs in the collateral (CRLs
	// present are always checked).
	CheckCRL bool
	// AllowExpiredCollateral accepts collateral past its nextUpdate and
	// reports it as tcb.collateral_expired.
	AllowExpiredCollateral bool
}

// Source names recorded in Claims.Sources.
const (
	SourceQuote      = "tdx.quote_signature"
	SourcePCKChain   = "tdx.pck_chain"
	SourceCollateral = "tdx.collateral"
)

// Result is the full outcome of a verification: the parsed quote, the
// claims, and the verdict of the shared checks (PCK path, TCB details).
type Result struct {
	Quote   *Quote
	Claims  *claims.Claims
	Verdict *pcs.Verdict
}

// Verify parses and verifies a TDX quote and returns its claims.
func Verify(ctx context.Context, raw []byte, opts Options) (*claims.Claims, error) {
	res, err := VerifyDetailed(ctx, raw, opts)
	if err != nil {
		return nil, err
	}
	return res.Claims, nil
}

// VerifyDetailed is Verify returning the parsed quote and verdict too.
// On ErrTCBRevoked the result is returned along with the error.
func VerifyDetailed(ctx context.Context, raw []byte, opts Options) (*Result, error) {
	q, err := ParseQuote(raw)
	if err != nil {
		return nil, fmt.Errorf("verifying TDX quote: %w", err)
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	auth := &pcs.QuoteAuth{
		TEE:               pcs.TEETDX,
		QuoteVersion:      q.Header.Version,
		SignedData:        raw[:q.SignedLen()],
		Signature:         q.Signature[:],
		AttestationKey:    q.AttestationKey[:],
		QEReport:          &q.Certification.QEReport,
		QEReportSignature: q.Certification.QEReportSignature[:],
		QEAuthData:        q.Certification.QEAuthData,
		TDX: &pcs.TDXTCB{
			TEETCBSVN:      q.Body.TEETCBSVN,
			MRSIGNERSEAM:   q.Body.MRSIGNERSEAM,
			SEAMAttributes: q.Body.SEAMAttributes,
		},
	}
	if q.BodyType == BodyTypeTD15 {
		svn2 := q.Body.TEETCBSVN2
		auth.TDX.TEETCBSVN2 = &svn2
	}
	if q.Certification.PCK.Type != CertTypePCKChain {
		return nil, fmt.Errorf("verifying TDX quote: inner certification data type %d, want %d: %w",
			q.Certification.PCK.Type, CertTypePCKChain, ErrUnsupportedVersion)
	}
	auth.PCKChain = q.Certification.PCK.Data
	v, err := pcs.VerifyQuote(ctx, auth, pcs.VerifyOptions{
		Roots:                  opts.TrustedRoots,
		Now:                    now(),
		Collateral:             opts.Collateral,
		Getter:                 opts.Getter,
		CheckCRL:               opts.CheckCRL,
		AllowExpiredCollateral: opts.AllowExpiredCollateral,
	})
	if err != nil && (v == nil || !errors.Is(err, ErrTCBRevoked)) {
		return nil, fmt.Errorf("verifying TDX quote: %w", err)
	}
	res := &Result{Quote: q, Claims: q.claims(v), Verdict: v}
	if err != nil {
		return res, fmt.Errorf("verifying TDX quote: %w", err)
	}
	return res, nil
}

func hexs(b []byte) string { return hex.EncodeToString(b) }

// claims maps a verified quote to normalized claims.
func (q *Quote) claims(v *pcs.Verdict) *claims.Claims {
	b := &q.Body
	m := map[string]string{
		"mrtd":            hexs(b.MRTD[:]),
		"rtmr0":           hexs(b.RTMR[0][:]),
		"rtmr1":           hexs(b.RTMR[1][:]),
		"rtmr2":           hexs(b.RTMR[2][:]),
		"rtmr3":           hexs(b.RTMR[3][:]),
		"mrseam":          hexs(b.MRSEAM[:]),
		"mrsignerseam":    hexs(b.MRSIGNERSEAM[:]),
		"mrconfigid":      hexs(b.MRCONFIGID[:]),
		"mrowner":         hexs(b.MROWNER[:]),
		"mrownerconfig":   hexs(b.MROWNERCONFIG[:]),
		"td_attributes":   hexs(b.TDAttributes[:]),
		"xfam":            hexs(b.XFAM[:]),
		"seam_attributes": hexs(b.SEAMAttributes[:]),
	}
	if q.BodyType == BodyTypeTD15 {
		m["mrservicetd"] = hexs(b.MRSERVICETD[:])
	}
	c := &claims.Claims{
		Version:      claims.Version,
		TEE:          claims.TEETDX,
		Debug:        q.Debug(),
		Measurements: m,
		ReportData:   hexs(b.ReportData[:]),
		GPUs:         []claims.GPU{},
		Sources: map[string]string{
			"tee":          SourcePCKChain,
			"debug":        SourceQuote,
			"measurements": SourceQuote,
			"report_data":  SourceQuote,
		},
	}
	if v != nil && v.TCB != nil {
		c.TCB = v.TCB.Claims()
		c.TCB.TEETCBSVN = hexs(b.TEETCBSVN[:])
		c.Sources["tcb"] = SourceCollateral
	}
	return c
}
