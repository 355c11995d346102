package nvidia

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/ocsp"
)

// maxOCSPResponse bounds one DER OCSP response (NVIDIA's are under 2 KiB
// with the responder certificate).
const maxOCSPResponse = 64 << 10

// OCSP revocation reason codes (RFC 5280 §5.3.1) that NVIDIA uses.
const reasonCertificateHold = 6

// ParseOCSPResponse reads a DER OCSPResponse as NVIDIA's OCSP service
// (https://ocsp.ndis.nvidia.com) returns it, without checking its
// signature: that needs the certificate and its issuer (CheckOCSP).
func ParseOCSPResponse(der []byte) (*ocsp.Response, error) {
	if len(der) == 0 || len(der) > maxOCSPResponse {
		return nil, fmt.Errorf("%w: %d bytes", ErrOCSP, len(der))
	}
	r, err := ocsp.ParseResponse(der, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrOCSP, err)
	}
	return r, nil
}

// OCSPOptions configure CheckOCSP.
type OCSPOptions struct {
	// Responses are DER OCSP responses; the one for each certificate is
	// found by serial number and verified against the certificate's issuer.
	Responses [][]byte
	// Now is the verification time: each used response must satisfy
	// thisUpdate <= Now < nextUpdate.
	Now time.Time
	// Require fails when a certificate has no response. Without it a
	// certificate without a response is skipped (revocation not checked);
	// a response that is present is always checked.
	Require bool
	// AllowHold accepts certificateHold (a temporary suspension) as not
	// revoked. NVIDIA's SDK fails on it by default; so does CheckOCSP.
	AllowHold bool
}

// CheckOCSP checks the revocation status of path (leaf first, ending with
// the trusted root) with OCSP responses. It checks every certificate but
// the root and, for device identity chains (skipLeaf), but the leaf, which
// the device itself issues and NVIDIA's OCSP service does not know (the
// attestation SDK skips it too). Each response must verify (signed by the
// certificate's issuer, or by a responder certificate the issuer issued
// with the OCSP-signing extended key usage, valid at Now: RFC 6960
// §4.2.2.2), name the certificate's serial, be fresh at Now, and say good.
func CheckOCSP(path []*x509.Certificate, skipLeaf bool, opts OCSPOptions) error {
	if len(opts.Responses) == 0 && !opts.Require {
		return nil
	}
	bySerial := map[string][][]byte{}
	for i, der := range opts.Responses {
		r, err := ParseOCSPResponse(der)
		if err != nil {
			return fmt.Errorf("OCSP response %d: %w", i, err)
		}
		k := r.SerialNumber.Text(16)
		bySerial[k] = append(bySerial[k], der)
	}
	start := 0
	if skipLeaf {
		start = 1
	}
	for i := start; i < len(path)-1; i++ {
		cert, issuer := path[i], path[i+1]
		ders := bySerial[cert.SerialNumber.Text(16)]
		if len(ders) == 0 {
			if opts.Require {
				return fmt.Errorf("%w: no OCSP response for %q (serial %x)", ErrOCSP, cert.Subject.CommonName, cert.SerialNumber)
			}
			continue
		}
		var errs []error
		ok := false
		for _, der := range ders {
			err := checkOneOCSP(der, cert, issuer, opts)
			if err == nil {
				ok = true
				break
			}
			if errors.Is(err, ErrCertRevoked) || errors.Is(err, ErrOCSPStale) {
				return err
			}
			errs = append(errs, err)
		}
		if !ok {
			return errors.Join(errs...)
		}
	}
	return nil
}

func checkOneOCSP(der []byte, cert, issuer *x509.Certificate, opts OCSPOptions) error {
	name := cert.Subject.CommonName
	// RFC 6960 §4.2.2.2: signed by the issuer itself, or by a delegated
	// responder the issuer certified for OCSP signing.
	r, err := ocsp.ParseResponseForCert(der, cert, issuer)
	if err != nil {
		return fmt.Errorf("%w: response for %q: %w", ErrOCSP, name, err)
	}
	if rc := r.Certificate; rc != nil && !rc.Equal(issuer) {
		eku := false
		for _, u := range rc.ExtKeyUsage {
			eku = eku || u == x509.ExtKeyUsageOCSPSigning
		}
		if !eku || opts.Now.Before(rc.NotBefore) || opts.Now.After(rc.NotAfter) {
			return fmt.Errorf("%w: response for %q: responder %q is not a valid OCSP signer", ErrOCSP, name, rc.Subject.CommonName)
		}
	}
	if opts.Now.Before(r.ThisUpdate) || r.NextUpdate.IsZero() || !opts.Now.Before(r.NextUpdate) {
		return fmt.Errorf("%w: response for %q valid %s..%s, now %s", ErrOCSPStale, name,
			r.ThisUpdate.UTC().Format(time.RFC3339), r.NextUpdate.UTC().Format(time.RFC3339), opts.Now.UTC().Format(time.RFC3339))
	}
	switch r.Status {
	case ocsp.Good:
		return nil
	case ocsp.Revoked:
		if r.RevocationReason == reasonCertificateHold && opts.AllowHold {
			return nil
		}
		return fmt.Errorf("%w: %q (serial %x) revoked at %s, reason %d", ErrCertRevoked, name, cert.SerialNumber,
			r.RevokedAt.UTC().Format(time.RFC3339), r.RevocationReason)
	default:
		return fmt.Errorf("%w: status of %q is unknown to the responder", ErrOCSP, name)
	}
}
