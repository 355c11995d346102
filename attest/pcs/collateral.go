package pcs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// Collateral is the Intel collateral needed to evaluate one quote's TCB:
// TCB info and QE identity with their issuer chains, and the PCK and root
// CRLs. The raw forms are kept so the collateral can be written back out
// (MarshalJSON) byte-exact.
type Collateral struct {
	TCBInfo               *SignedTCBInfo
	TCBInfoIssuerChain    []*x509.Certificate
	QEIdentity            *SignedQEIdentity
	QEIdentityIssuerChain []*x509.Certificate
	// PCKCRL is issued by the PCK Platform or Processor CA; optional.
	PCKCRL            *x509.RevocationList
	PCKCRLIssuerChain []*x509.Certificate
	// RootCRL is issued by the Intel SGX Root CA; optional.
	RootCRL *x509.RevocationList

	// mu guards the memo of signature checks. Signatures over immutable
	// collateral do not change with time, so Check verifies them once per
	// trust-anchor pool and only re-checks validity windows afterwards.
	// Callers must not modify a Collateral after its first Check.
	mu           sync.Mutex
	checked      map[*x509.CertPool]checkedChains
	pckCRLSigner []byte
}

// checkedChains records a successful signature check under one pool: the
// window in which every issuer certificate was valid.
type checkedChains struct {
	notBefore, notAfter time.Time
}

// collateralJSON is the offline file shape, the one of Phala-Network
// dcap-qvl's sample collateral: PEM chains, the signed JSON objects as
// strings, hex signatures and hex DER CRLs. tcb_info and qe_identity may
// also hold a whole PCS response body (then the signature fields may be
// empty).
type collateralJSON struct {
	PCKCRLIssuerChain     string `json:"pck_crl_issuer_chain"`
	RootCACRL             string `json:"root_ca_crl"`
	PCKCRL                string `json:"pck_crl"`
	TCBInfoIssuerChain    string `json:"tcb_info_issuer_chain"`
	TCBInfo               string `json:"tcb_info"`
	TCBInfoSignature      string `json:"tcb_info_signature"`
	QEIdentityIssuerChain string `json:"qe_identity_issuer_chain"`
	QEIdentity            string `json:"qe_identity"`
	QEIdentitySignature   string `json:"qe_identity_signature"`
}

// LoadCollateralFile reads an offline collateral file (see ParseCollateralJSON).
func LoadCollateralFile(path string) (*Collateral, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("loading collateral: %w", err)
	}
	return ParseCollateralJSON(b)
}

// ParseCollateralJSON parses the offline collateral JSON shape: keys
// tcb_info, tcb_info_signature, tcb_info_issuer_chain, qe_identity,
// qe_identity_signature, qe_identity_issuer_chain, pck_crl, pck_crl_issuer_chain,
// root_ca_crl.
func ParseCollateralJSON(b []byte) (*Collateral, error) {
	var j collateralJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("parsing collateral file: %v: %w", err, ErrCollateralFormat)
	}
	p := PCSResponses{
		TCBInfoIssuerChain:    []byte(j.TCBInfoIssuerChain),
		QEIdentityIssuerChain: []byte(j.QEIdentityIssuerChain),
		PCKCRLIssuerChain:     []byte(j.PCKCRLIssuerChain),
		PCKCRL:                []byte(j.PCKCRL),
		RootCRL:               []byte(j.RootCACRL),
	}
	var err error
	if p.TCBInfo, err = envelope("tcbInfo", j.TCBInfo, j.TCBInfoSignature); err != nil {
		return nil, err
	}
	if p.QEIdentity, err = envelope("enclaveIdentity", j.QEIdentity, j.QEIdentitySignature); err != nil {
		return nil, err
	}
	return CollateralFromPCS(p)
}

// envelope rebuilds a PCS response body around a bare signed object, so both
// stored forms go through one parser. The object bytes stay untouched.
func envelope(key, obj, sigHex string) ([]byte, error) {
	trimmed := strings.TrimSpace(obj)
	if strings.HasPrefix(trimmed, `{"`+key+`"`) || sigHex == "" {
		return []byte(obj), nil
	}
	sig, err := json.Marshal(sigHex)
	if err != nil {
		return nil, fmt.Errorf("parsing collateral file: %w", ErrCollateralFormat)
	}
	return []byte(`{"` + key + `":` + obj + `,"signature":` + string(sig) + `}`), nil
}

// PCSResponses are the raw bodies and issuer-chain headers as an Intel PCS
// or a PCCS serves them. Chains may be PEM or URL-encoded PEM (as in the
// HTTP headers); CRLs may be DER, PEM or hex DER. Empty CRL fields are
// allowed.
type PCSResponses struct {
	TCBInfo               []byte
	TCBInfoIssuerChain    []byte
	QEIdentity            []byte
	QEIdentityIssuerChain []byte
	PCKCRL                []byte
	PCKCRLIssuerChain     []byte
	RootCRL               []byte
}

// CollateralFromPCS parses collateral from raw PCS responses.
func CollateralFromPCS(p PCSResponses) (*Collateral, error) {
	c := &Collateral{}
	var err error
	if c.TCBInfo, err = ParseTCBInfo(p.TCBInfo); err != nil {
		return nil, err
	}
	if c.QEIdentity, err = ParseQEIdentity(p.QEIdentity); err != nil {
		return nil, err
	}
	if c.TCBInfoIssuerChain, err = ParseCertChain(p.TCBInfoIssuerChain); err != nil {
		return nil, fmt.Errorf("parsing TCB info issuer chain: %w", err)
	}
	if c.QEIdentityIssuerChain, err = ParseCertChain(p.QEIdentityIssuerChain); err != nil {
		return nil, fmt.Errorf("parsing QE identity issuer chain: %w", err)
	}
	if len(p.PCKCRLIssuerChain) > 0 {
		if c.PCKCRLIssuerChain, err = ParseCertChain(p.PCKCRLIssuerChain); err != nil {
			return nil, fmt.Errorf("parsing PCK CRL issuer chain: %w", err)
		}
	}
	if c.PCKCRL, err = parseCRL(p.PCKCRL); err != nil {
		return nil, fmt.Errorf("parsing PCK CRL: %w", err)
	}
	if c.RootCRL, err = parseCRL(p.RootCRL); err != nil {
		return nil, fmt.Errorf("parsing root CA CRL: %w", err)
	}
	return c, nil
}

// MarshalJSON writes the offline collateral file shape.
func (c *Collateral) MarshalJSON() ([]byte, error) {
	j := collateralJSON{
		TCBInfoIssuerChain:    chainPEM(c.TCBInfoIssuerChain),
		QEIdentityIssuerChain: chainPEM(c.QEIdentityIssuerChain),
		PCKCRLIssuerChain:     chainPEM(c.PCKCRLIssuerChain),
	}
	if c.TCBInfo != nil {
		j.TCBInfo, j.TCBInfoSignature = string(c.TCBInfo.Raw), hex.EncodeToString(c.TCBInfo.Signature)
	}
	if c.QEIdentity != nil {
		j.QEIdentity, j.QEIdentitySignature = string(c.QEIdentity.Raw), hex.EncodeToString(c.QEIdentity.Signature)
	}
	if c.PCKCRL != nil {
		j.PCKCRL = hex.EncodeToString(c.PCKCRL.Raw)
	}
	if c.RootCRL != nil {
		j.RootCACRL = hex.EncodeToString(c.RootCRL.Raw)
	}
	return json.Marshal(j)
}

func chainPEM(certs []*x509.Certificate) string {
	var b strings.Builder
	for _, c := range certs {
		b.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	return b.String()
}

// ParseCertChain parses concatenated PEM certificates, leaf first. It
// accepts the URL-encoded form of PCS headers and ignores trailing NULs
// (PCK chains in quotes end with one).
func ParseCertChain(b []byte) ([]*x509.Certificate, error) {
	if bytes.Contains(b, []byte("%2D")) || bytes.Contains(b, []byte("%0A")) {
		s, err := url.PathUnescape(string(b))
		if err != nil {
			return nil, fmt.Errorf("unescaping chain: %w", ErrCollateralFormat)
		}
		b = []byte(s)
	}
	var out []*x509.Certificate
	rest := b
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate %d: %v: %w", len(out), err, ErrCollateralFormat)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no certificates: %w", ErrCollateralFormat)
	}
	return out, nil
}

func parseCRL(b []byte) (*x509.RevocationList, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil, nil
	}
	der := b
	if blk, _ := pem.Decode(b); blk != nil {
		der = blk.Bytes
	} else if h, err := hex.DecodeString(string(b)); err == nil {
		der = h
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, ErrCollateralFormat)
	}
	return crl, nil
}

// CollateralStatus is what checking the collateral established.
type CollateralStatus struct {
	// Expired is set when a nextUpdate is past and the caller allowed it.
	Expired bool
	// NextUpdate is the earliest nextUpdate among the parts checked.
	NextUpdate time.Time
}

// CheckOptions control Collateral.Check.
type CheckOptions struct {
	Roots *x509.CertPool
	Now   time.Time
	// AllowExpired reports a passed nextUpdate in CollateralStatus instead
	// of failing. Certificates must still be valid at Now.
	AllowExpired bool
	// RequireCRLs fails when the PCK or root CRL is absent.
	RequireCRLs bool
}

// Check verifies the collateral's own integrity at opts.Now: issuer chains
// to the roots, the TCB info and QE identity signatures, the root CRL's
// signature and that no issuer certificate is revoked by it, and every
// validity window. The PCK CRL is checked against the quote's PCK issuer
// in VerifyQuote, because that is the certificate that must have signed it.
func (c *Collateral) Check(opts CheckOptions) (*CollateralStatus, error) {
	if c.TCBInfo == nil || c.QEIdentity == nil {
		return nil, fmt.Errorf("checking collateral: TCB info and QE identity are required: %w", ErrCollateralFormat)
	}
	if opts.RequireCRLs && (c.PCKCRL == nil || c.RootCRL == nil) {
		return nil, fmt.Errorf("checking collateral: CRLs required: %w", ErrCollateralFormat)
	}
	st := &CollateralStatus{NextUpdate: c.TCBInfo.NextUpdate}
	c.mu.Lock()
	memo, ok := c.checked[opts.Roots]
	c.mu.Unlock()
	if !ok || opts.Now.Before(memo.notBefore) || opts.Now.After(memo.notAfter) {
		var err error
		if memo, err = c.checkSignatures(opts); err != nil {
			return nil, err
		}
		c.mu.Lock()
		if c.checked == nil {
			c.checked = make(map[*x509.CertPool]checkedChains)
		}
		c.checked[opts.Roots] = memo
		c.mu.Unlock()
	}
	windows := []struct {
		name       string
		issue, nxt time.Time
	}{
		{"TCB info", c.TCBInfo.IssueDate, c.TCBInfo.NextUpdate},
		{"QE identity", c.QEIdentity.IssueDate, c.QEIdentity.NextUpdate},
	}
	if c.PCKCRL != nil {
		windows = append(windows, struct {
			name       string
			issue, nxt time.Time
		}{"PCK CRL", c.PCKCRL.ThisUpdate, c.PCKCRL.NextUpdate})
	}
	if c.RootCRL != nil {
		windows = append(windows, struct {
			name       string
			issue, nxt time.Time
		}{"root CA CRL", c.RootCRL.ThisUpdate, c.RootCRL.NextUpdate})
	}
	for _, w := range windows {
		if opts.Now.Before(w.issue) {
			return nil, fmt.Errorf("checking %s: issued %s, after verification time: %w", w.name, w.issue.Format(time.RFC3339), ErrCollateralExpired)
		}
		if !w.nxt.IsZero() && w.nxt.Before(st.NextUpdate) {
			st.NextUpdate = w.nxt
		}
		if !w.nxt.IsZero() && opts.Now.After(w.nxt) {
			if !opts.AllowExpired {
				return nil, fmt.Errorf("checking %s: next update %s passed: %w", w.name, w.nxt.Format(time.RFC3339), ErrCollateralExpired)
			}
			st.Expired = true
		}
	}
	return st, nil
}

// checkSignatures verifies the issuer chains, the TCB info and QE identity
// signatures and the root CRL, and returns the window in which all the
// certificates involved are valid.
func (c *Collateral) checkSignatures(opts CheckOptions) (checkedChains, error) {
	roots := opts.Roots
	if roots == nil {
		roots = IntelRoots()
	}
	w := checkedChains{notAfter: time.Unix(1<<62, 0)}
	var root *x509.Certificate
	for _, part := range []struct {
		name  string
		chain []*x509.Certificate
		raw   []byte
		sig   []byte
	}{
		{"TCB info", c.TCBInfoIssuerChain, c.TCBInfo.Raw, c.TCBInfo.Signature},
		{"QE identity", c.QEIdentityIssuerChain, c.QEIdentity.Raw, c.QEIdentity.Signature},
	} {
		chain, err := verifyChain(part.chain, roots, opts.Now)
		if err != nil {
			return w, fmt.Errorf("checking %s issuer chain: %w", part.name, err)
		}
		for _, cert := range chain {
			if cert.NotBefore.After(w.notBefore) {
				w.notBefore = cert.NotBefore
			}
			if cert.NotAfter.Before(w.notAfter) {
				w.notAfter = cert.NotAfter
			}
		}
		root = chain[len(chain)-1]
		if err := VerifyRawSignature(chain[0], part.raw, part.sig); err != nil {
			return w, fmt.Errorf("checking %s signature: %w", part.name, ErrCollateralSignature)
		}
		if c.RootCRL != nil {
			// Only certificates the root issued are in its CRL's scope;
			// checkRevoked skips the others by issuer name.
			if err := checkRevoked(c.RootCRL, chain[:len(chain)-1]...); err != nil {
				return w, fmt.Errorf("checking %s issuer chain: %w", part.name, err)
			}
		}
	}
	if c.RootCRL != nil {
		if err := c.RootCRL.CheckSignatureFrom(root); err != nil {
			return w, fmt.Errorf("checking root CA CRL: %w", ErrCollateralSignature)
		}
	}
	return w, nil
}

// verifyChain verifies chain[0] to roots with the rest as intermediates and
// returns the verified path, leaf first. Validity failures map to
// ErrCollateralExpired, the rest to ErrCollateralSignature.
func verifyChain(chain []*x509.Certificate, roots *x509.CertPool, now time.Time) ([]*x509.Certificate, error) {
	if len(chain) == 0 {
		return nil, fmt.Errorf("empty chain: %w", ErrCollateralFormat)
	}
	path, err := chainPath(chain, roots, now)
	if err != nil {
		if ie, ok := err.(x509.CertificateInvalidError); ok && ie.Reason == x509.Expired {
			return nil, fmt.Errorf("%v: %w", err, ErrCollateralExpired)
		}
		return nil, fmt.Errorf("%v: %w", err, ErrCollateralSignature)
	}
	return path, nil
}

// chainPath verifies chain[0] to roots at now with the rest of chain as
// intermediates (never as roots) and returns the first path, leaf first.
// The error is crypto/x509's, for the caller to classify.
func chainPath(chain []*x509.Certificate, roots *x509.CertPool, now time.Time) ([]*x509.Certificate, error) {
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	paths, err := chain[0].Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, err
	}
	return paths[0], nil
}

// checkRevoked fails with ErrCertificateRevoked when crl lists any cert
// issued by the CRL's issuer.
func checkRevoked(crl *x509.RevocationList, certs ...*x509.Certificate) error {
	for _, c := range certs {
		if !bytes.Equal(c.RawIssuer, crl.RawIssuer) {
			continue
		}
		for _, e := range crl.RevokedCertificateEntries {
			if e.SerialNumber != nil && e.SerialNumber.Cmp(c.SerialNumber) == 0 {
				return fmt.Errorf("%q serial %s: %w", c.Subject.CommonName, c.SerialNumber, ErrCertificateRevoked)
			}
		}
	}
	return nil
}

// VerifyRawSignature checks an Intel-style raw r||s ECDSA signature over
// SHA-256(msg) with the certificate's P-256 key.
func VerifyRawSignature(cert *x509.Certificate, msg, sig []byte) error {
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return fmt.Errorf("signer key is not ECDSA: %w", ErrCollateralSignature)
	}
	return verifyRaw(pub, msg, sig)
}

func verifyRaw(pub *ecdsa.PublicKey, msg, sig []byte) error {
	if len(sig) != 64 {
		return fmt.Errorf("signature is %d bytes", len(sig))
	}
	h := sha256.Sum256(msg)
	r := new(big.Int).SetBytes(sig[:32])
	s := new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(pub, h[:], r, s) {
		return fmt.Errorf("ECDSA verification failed")
	}
	return nil
}
