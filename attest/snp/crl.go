package snp

import (
	"crypto/x509"
	"fmt"
	"time"
)

// maxCRL bounds one DER CRL (AMD's are about 1 KiB; Intel's PCK CRLs, for
// scale, reach a few hundred KiB).
const maxCRL = 4 << 20

// ParseCRL parses a DER CRL as AMD KDS serves it from
// /vcek/v1/{product}/crl and /vlek/v1/{product}/crl: an X.509 v2 CRL
// signed by the product line's ARK (RSASSA-PSS, SHA-384).
func ParseCRL(der []byte) (*x509.RevocationList, error) {
	if len(der) == 0 || len(der) > maxCRL {
		return nil, fmt.Errorf("%w: %d bytes", ErrCRL, len(der))
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCRL, err)
	}
	return crl, nil
}

// checkCRLs finds the CRLs signed by the chain's ARK and checks each: its
// thisUpdate..nextUpdate covers now, and the intermediate that certified
// the endorsement key (ASK/ASVK) is not listed. A CRL that does not parse
// fails verification (it was given to be checked); one signed by another
// ARK is skipped. require fails when no CRL is the chain's.
func checkCRLs(ders [][]byte, require bool, chain *Chain, now time.Time) error {
	found := false
	for i, der := range ders {
		crl, err := ParseCRL(der)
		if err != nil {
			return fmt.Errorf("CRL %d: %w", i, err)
		}
		if crl.CheckSignatureFrom(chain.ARK) != nil {
			continue
		}
		found = true
		if now.Before(crl.ThisUpdate) || crl.NextUpdate.IsZero() || !now.Before(crl.NextUpdate) {
			return fmt.Errorf("%w: CRL of ARK-%s valid %s..%s, now %s", ErrCRLExpired, chain.ProductLine,
				crl.ThisUpdate.UTC().Format(time.RFC3339), crl.NextUpdate.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
		// Serial numbers are unique per issuer, and the ARK issues only
		// the ASK and ASVK: those are what its CRL can name.
		ica := chain.ICA
		for _, e := range crl.RevokedCertificateEntries {
			if ica != nil && e.SerialNumber != nil && e.SerialNumber.Cmp(ica.SerialNumber) == 0 {
				return fmt.Errorf("%w: %s serial %x (revoked %s)", ErrRevoked, ica.Subject.CommonName, ica.SerialNumber, e.RevocationTime.UTC().Format(time.RFC3339))
			}
		}
	}
	if require && !found {
		return fmt.Errorf("%w: no CRL signed by ARK-%s", ErrCRL, chain.ProductLine)
	}
	return nil
}
