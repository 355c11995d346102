package pcs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/teegate/teegate/attest/claims"
)

// TEE is the kind of quote being verified.
type TEE int

// TEE kinds, with the tee_type values of the quote header.
const (
	TEESGX TEE = 0x00
	TEETDX TEE = 0x81
)

func (t TEE) String() string {
	if t == TEETDX {
		return "tdx"
	}
	return "sgx"
}

// PCK CA kinds, the "ca" parameter of the PCS PCK CRL request.
const (
	CAPlatform  = "platform"
	CAProcessor = "processor"
)

// QuoteAuth is the signature part shared by SGX v3 and TDX v4/v5 ECDSA
// quotes ("Intel SGX ECDSA Quote Library API" A.4 / "Intel TDX DCAP Quoting
// Library API" A.3.8-A.3.11), plus what TCB matching needs from the body.
type QuoteAuth struct {
	TEE          TEE
	QuoteVersion uint16
	// SignedData is the quote header and body, the bytes the attestation
	// key signs.
	SignedData []byte
	// Signature is the raw r||s ECDSA P-256 quote signature.
	Signature []byte
	// AttestationKey is the raw x||y P-256 attestation public key.
	AttestationKey    []byte
	QEReport          *EnclaveReport
	QEReportSignature []byte
	QEAuthData        []byte
	// PCKChain is the PEM PCK certificate chain (certification data type 5).
	PCKChain []byte
	// TDX is set for TDX quotes.
	TDX *TDXTCB
}

// TDXTCB is what TDX TCB matching reads from the TD report body.
type TDXTCB struct {
	TEETCBSVN [16]byte
	// TEETCBSVN2 is set for TDX 1.5 bodies (v5 body type 3).
	TEETCBSVN2     *[16]byte
	MRSIGNERSEAM   [48]byte
	SEAMAttributes [8]byte
}

// VerifyOptions control VerifyQuote.
type VerifyOptions struct {
	// Roots are the trust anchors for the PCK and collateral chains;
	// nil means the Intel SGX Root CA.
	Roots *x509.CertPool
	// Now is the verification time.
	Now time.Time
	// Collateral, when set, is used as is; otherwise Getter (if set) is
	// asked for it. With neither, no TCB evaluation happens.
	Collateral *Collateral
	Getter     Getter
	// CheckCRL requires both CRLs in the collateral. CRLs present are always
	// checked.
	CheckCRL bool
	// AllowExpiredCollateral reports a passed nextUpdate as
	// TCBResult.CollateralExpired instead of failing.
	AllowExpiredCollateral bool
}

// Verdict is what VerifyQuote established.
type Verdict struct {
	// PCKPath is the verified PCK chain, leaf first, ending at a root.
	PCKPath    []*x509.Certificate
	Extensions *PCKExtensions
	// TCB is nil when no collateral was used.
	TCB *TCBResult
}

// TCBResult is the outcome of matching the platform against collateral.
type TCBResult struct {
	Status      string
	AdvisoryIDs []string
	// TCBDate is the earliest date of the matched levels.
	TCBDate time.Time
	FMSPC   [6]byte
	// PlatformStatus, ModuleStatus and QEStatus are the statuses before
	// convergence; ModuleStatus is empty when the module is not evaluated.
	PlatformStatus    string
	ModuleStatus      string
	QEStatus          string
	CollateralExpired bool
	// NextUpdate is the earliest nextUpdate of the collateral used.
	NextUpdate time.Time
}

// Claims maps r to normalized TCB claims; the caller adds what comes from
// the quote body (TEETCBSVN for TDX).
func (r *TCBResult) Claims() *claims.TCB {
	c := &claims.TCB{
		Status:            r.Status,
		AdvisoryIDs:       r.AdvisoryIDs,
		FMSPC:             hex.EncodeToString(r.FMSPC[:]),
		CollateralExpired: r.CollateralExpired,
	}
	if !r.TCBDate.IsZero() {
		c.TCBDate = r.TCBDate.UTC().Format(time.RFC3339)
	}
	return c
}

// VerifyQuote runs the checks common to SGX and TDX quotes, in an order
// that makes each corruption fail with its own error: PCK chain, QE report
// signature, attestation-key binding, quote signature, then collateral and
// TCB evaluation.
func VerifyQuote(ctx context.Context, q *QuoteAuth, opts VerifyOptions) (*Verdict, error) {
	roots := opts.Roots
	if roots == nil {
		roots = IntelRoots()
	}
	path, err := VerifyPCKChain(q.PCKChain, roots, opts.Now)
	if err != nil {
		return nil, err
	}
	leaf := path[0]
	ext, err := ParsePCKExtensions(leaf)
	if err != nil {
		return nil, err
	}
	pckKey, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("reading PCK key: not ECDSA: %w", ErrPCKChain)
	}
	if q.QEReport == nil {
		return nil, fmt.Errorf("reading QE report: missing: %w", ErrQuoteFormat)
	}
	if err := verifyRaw(pckKey, q.QEReport.Marshal(), q.QEReportSignature); err != nil {
		return nil, fmt.Errorf("verifying QE report: %v: %w", err, ErrQEReportSignature)
	}
	if err := CheckAttestationKeyBinding(q.QEReport, q.AttestationKey, q.QEAuthData); err != nil {
		return nil, err
	}
	ak, err := ParseP256RawKey(q.AttestationKey)
	if err != nil {
		return nil, fmt.Errorf("reading attestation key: %v: %w", err, ErrQuoteSignature)
	}
	if err := verifyRaw(ak, q.SignedData, q.Signature); err != nil {
		return nil, fmt.Errorf("verifying quote: %v: %w", err, ErrQuoteSignature)
	}
	v := &Verdict{PCKPath: path, Extensions: ext}
	coll := opts.Collateral
	if coll == nil && opts.Getter != nil {
		coll, err = opts.Getter.GetCollateral(ctx, CollateralRequest{TEE: q.TEE, FMSPC: ext.FMSPC, CA: PCKCAKind(path[1])})
		if err != nil {
			return nil, fmt.Errorf("getting collateral: %w", err)
		}
	}
	if coll == nil {
		return v, nil
	}
	st, err := coll.Check(CheckOptions{Roots: opts.Roots, Now: opts.Now, AllowExpired: opts.AllowExpiredCollateral, RequireCRLs: opts.CheckCRL})
	if err != nil {
		return nil, err
	}
	if err := checkPCKRevocation(coll, path); err != nil {
		return nil, err
	}
	res, err := EvaluateTCB(coll, q, ext)
	if res != nil {
		res.CollateralExpired = st.Expired
		res.NextUpdate = st.NextUpdate
		v.TCB = res
	}
	if err != nil {
		return v, err
	}
	return v, nil
}

// VerifyPCKChain parses a PEM PCK chain and verifies its leaf to roots at
// now. The chain's own root, if any, is not trusted: only roots are.
func VerifyPCKChain(pemChain []byte, roots *x509.CertPool, now time.Time) ([]*x509.Certificate, error) {
	certs, err := ParseCertChain(pemChain)
	if err != nil {
		return nil, fmt.Errorf("parsing PCK chain: %v: %w", err, ErrPCKChain)
	}
	path, err := chainPath(certs, roots, now)
	if err != nil {
		return nil, fmt.Errorf("verifying PCK chain: %v: %w", err, ErrPCKChain)
	}
	if len(path) < 2 {
		return nil, fmt.Errorf("verifying PCK chain: leaf is a root: %w", ErrPCKChain)
	}
	return path, nil
}

// PCKCAKind tells the PCK CA kind from its common name.
func PCKCAKind(issuer *x509.Certificate) string {
	if strings.Contains(strings.ToLower(issuer.Subject.CommonName), "processor") {
		return CAProcessor
	}
	return CAPlatform
}

// CheckAttestationKeyBinding checks that the QE report data is
// SHA-256(attestation key || QE auth data) followed by 32 zero bytes, which
// makes the PCK-signed QE report vouch for the attestation key.
func CheckAttestationKeyBinding(qe *EnclaveReport, ak, authData []byte) error {
	h := sha256.New()
	h.Write(ak)
	h.Write(authData)
	var want [64]byte
	h.Sum(want[:0])
	if qe.ReportData != want {
		return fmt.Errorf("checking QE report data: %w", ErrAttestationKeyBinding)
	}
	return nil
}

// ParseP256RawKey parses a 64-byte x||y P-256 public key.
func ParseP256RawKey(raw []byte) (*ecdsa.PublicKey, error) {
	if len(raw) != 64 {
		return nil, fmt.Errorf("key is %d bytes", len(raw))
	}
	uncompressed := append([]byte{4}, raw...)
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), uncompressed)
	if err != nil {
		return nil, err
	}
	return pub, nil
}

// RawP256Key encodes a P-256 public key as 64-byte x||y.
func RawP256Key(pub *ecdsa.PublicKey) ([]byte, error) {
	b, err := pub.Bytes()
	if err != nil || len(b) != 65 {
		return nil, fmt.Errorf("encoding P-256 key: %w", ErrQuoteFormat)
	}
	return b[1:], nil
}

// RawSignature converts an ASN.1 ECDSA signature to 64-byte r||s.
func RawSignature(r, s *big.Int) []byte {
	out := make([]byte, 64)
	r.FillBytes(out[:32])
	s.FillBytes(out[32:])
	return out
}

// checkPCKRevocation checks the PCK CRL (signed by the PCK's issuer, with
// the same issuer name) against the leaf, and the root CRL against the
// intermediates.
func checkPCKRevocation(c *Collateral, path []*x509.Certificate) error {
	issuer := path[1]
	if c.PCKCRL != nil {
		if !bytes.Equal(c.PCKCRL.RawIssuer, issuer.RawSubject) {
			return fmt.Errorf("checking PCK CRL: issued by %q, PCK issued by %q: %w",
				c.PCKCRL.Issuer.CommonName, issuer.Subject.CommonName, ErrCollateralMismatch)
		}
		c.mu.Lock()
		known := bytes.Equal(c.pckCRLSigner, issuer.Raw)
		c.mu.Unlock()
		if !known {
			if err := c.PCKCRL.CheckSignatureFrom(issuer); err != nil {
				return fmt.Errorf("checking PCK CRL: %v: %w", err, ErrCollateralSignature)
			}
			c.mu.Lock()
			c.pckCRLSigner = issuer.Raw
			c.mu.Unlock()
		}
		if err := checkRevoked(c.PCKCRL, path[0]); err != nil {
			return fmt.Errorf("checking PCK certificate: %w", err)
		}
	}
	if c.RootCRL != nil {
		if err := checkRevoked(c.RootCRL, path[1:len(path)-1]...); err != nil {
			return fmt.Errorf("checking PCK CA: %w", err)
		}
	}
	return nil
}

// EvaluateTCB matches the platform (PCK TCB, and for TDX the TEE TCB SVN
// and module) and the QE against the collateral, following the TCB level
// selection and status convergence of Intel's Quote Verification Library
// (TcbLevelCheck, TdxModuleCheck, TDRelaunchCheck). It returns the result
// even with ErrTCBRevoked so the caller can still show it.
func EvaluateTCB(c *Collateral, q *QuoteAuth, ext *PCKExtensions) (*TCBResult, error) {
	info := &c.TCBInfo.TCBInfo
	isTDX := q.TEE == TEETDX
	switch {
	case info.Version >= 3 && info.ID == TCBInfoTDX && !isTDX,
		info.Version >= 3 && info.ID == TCBInfoSGX && isTDX,
		info.Version < 3 && isTDX:
		return nil, fmt.Errorf("evaluating TCB: TCB info %q v%d for a %s quote: %w", info.ID, info.Version, q.TEE, ErrCollateralMismatch)
	}
	if ext.FMSPC != info.FMSPC {
		return nil, fmt.Errorf("evaluating TCB: PCK FMSPC %X, TCB info %X: %w", ext.FMSPC, info.FMSPC, ErrFMSPCMismatch)
	}
	if ext.PCEID != info.PCEID {
		return nil, fmt.Errorf("evaluating TCB: PCE ID %X, TCB info %X: %w", ext.PCEID, info.PCEID, ErrCollateralMismatch)
	}
	var module *TDXModuleIdentity
	if isTDX {
		if q.TDX == nil {
			return nil, fmt.Errorf("evaluating TCB: TDX body missing: %w", ErrQuoteFormat)
		}
		var err error
		if module, err = checkModuleIdentity(info, q.TDX); err != nil {
			return nil, err
		}
	}
	wantQE := QEIDSGX
	if isTDX {
		wantQE = QEIDTDX
	}
	if c.QEIdentity.ID != wantQE {
		return nil, fmt.Errorf("evaluating TCB: QE identity %q for a %s quote: %w", c.QEIdentity.ID, q.TEE, ErrQEIdentityMismatch)
	}
	qeLevel, err := c.QEIdentity.Match(q.QEReport)
	if err != nil {
		return nil, fmt.Errorf("evaluating TCB: %w", err)
	}
	res := &TCBResult{FMSPC: ext.FMSPC, QEStatus: qeLevel.Status}

	var sgxLevel, tdxLevel *TCBLevel
	for i := range info.TCBLevels {
		l := &info.TCBLevels[i]
		if !sgxComponentsAtLeast(&ext.TCB, l) {
			continue
		}
		if sgxLevel == nil {
			sgxLevel = l
		}
		if !isTDX {
			break
		}
		if tdxComponentsAtLeast(&q.TDX.TEETCBSVN, l) {
			tdxLevel = l
			break
		}
	}
	if sgxLevel == nil || (isTDX && tdxLevel == nil) {
		return nil, fmt.Errorf("evaluating TCB: platform older than every TCB level: %w", ErrTCBNotSupported)
	}
	platform := sgxLevel
	if isTDX {
		platform = tdxLevel
	}
	res.PlatformStatus = platform.Status
	res.TCBDate = platform.TCBDate
	addAdvisories(res, platform.AdvisoryIDs)
	status := platform.Status
	if isTDX && module != nil && q.TDX.TEETCBSVN[1] > 0 {
		ml, err := moduleLevel(module, q.TDX.TEETCBSVN[0])
		if err != nil {
			return nil, err
		}
		res.ModuleStatus = ml.Status
		addAdvisories(res, ml.AdvisoryIDs)
		if ml.TCBDate.Before(res.TCBDate) {
			res.TCBDate = ml.TCBDate
		}
		status = convergeWithOutOfDate(status, ml.Status)
	}
	if isTDX && q.TDX.TEETCBSVN2 != nil && status != StatusRevoked {
		status = relaunchAdvice(info, q.TDX.TEETCBSVN2, sgxLevel.Status, status, res.ModuleStatus, qeLevel.Status)
	}
	status = convergeWithOutOfDate(status, qeLevel.Status)
	addAdvisories(res, qeLevel.AdvisoryIDs)
	if qeLevel.TCBDate.Before(res.TCBDate) {
		res.TCBDate = qeLevel.TCBDate
	}
	res.Status = status
	if status == StatusRevoked {
		return res, fmt.Errorf("evaluating TCB: %w", ErrTCBRevoked)
	}
	return res, nil
}

func sgxComponentsAtLeast(t *PCKTCB, l *TCBLevel) bool {
	for i := range t.CompSVN {
		if t.CompSVN[i] < l.SGXComponents[i] {
			return false
		}
	}
	return t.PCESVN >= l.PCESVN
}

// tdxComponentsAtLeast compares TEE_TCB_SVN with a level's tdxtcbcomponents.
// With a TDX module major version (byte 1) above zero, bytes 0 and 1 are the
// module's and are judged by the module identity instead.
func tdxComponentsAtLeast(svn *[16]byte, l *TCBLevel) bool {
	start := 0
	if svn[1] > 0 {
		start = 2
	}
	for i := start; i < 16; i++ {
		if svn[i] < l.TDXComponents[i] {
			return false
		}
	}
	return true
}

// checkModuleIdentity picks the TDX module identity (TDX_<major version> for
// module versions above zero, else the default tdxModule) and checks
// MRSIGNERSEAM and SEAM attributes against it.
func checkModuleIdentity(info *TCBInfo, t *TDXTCB) (*TDXModuleIdentity, error) {
	var want *TDXModule
	var ident *TDXModuleIdentity
	if major := t.TEETCBSVN[1]; major > 0 {
		id := fmt.Sprintf("TDX_%02X", major)
		for i := range info.TDXModuleIdentities {
			if strings.EqualFold(info.TDXModuleIdentities[i].ID, id) {
				ident = &info.TDXModuleIdentities[i]
				break
			}
		}
		if ident == nil {
			return nil, fmt.Errorf("evaluating TCB: no TDX module identity %s: %w", id, ErrTDXModuleMismatch)
		}
		want = &ident.TDXModule
	} else {
		want = info.TDXModule
	}
	if want == nil {
		return nil, fmt.Errorf("evaluating TCB: TCB info has no TDX module: %w", ErrTDXModuleMismatch)
	}
	if t.MRSIGNERSEAM != want.MRSIGNER {
		return nil, fmt.Errorf("evaluating TCB: MRSIGNERSEAM: %w", ErrTDXModuleMismatch)
	}
	for i := range t.SEAMAttributes {
		if t.SEAMAttributes[i]&want.AttributesMask[i] != want.Attributes[i] {
			return nil, fmt.Errorf("evaluating TCB: SEAM attributes: %w", ErrTDXModuleMismatch)
		}
	}
	return ident, nil
}

func moduleLevel(m *TDXModuleIdentity, isvsvn uint8) (*IdentityLevel, error) {
	for i := range m.TCBLevels {
		if uint16(isvsvn) >= m.TCBLevels[i].ISVSVN {
			return &m.TCBLevels[i], nil
		}
	}
	return nil, fmt.Errorf("evaluating TCB: TDX module ISVSVN %d below every level of %s: %w", isvsvn, m.ID, ErrTCBNotSupported)
}

// convergeWithOutOfDate folds a QE or TDX module status into the platform
// status: an out-of-date component makes the whole TCB out of date (keeping
// "configuration needed"), a revoked one revokes it.
func convergeWithOutOfDate(platform, component string) string {
	switch component {
	case StatusRevoked:
		return StatusRevoked
	case StatusOutOfDate:
		switch platform {
		case StatusUpToDate, StatusSWHardeningNeeded:
			return StatusOutOfDate
		case StatusConfigurationNeeded, StatusConfigurationAndSWHardeningNeeded:
			return StatusOutOfDateConfigurationNeeded
		}
	}
	return platform
}

func configNeeded(s string) bool {
	switch s {
	case StatusConfigurationNeeded, StatusOutOfDateConfigurationNeeded,
		StatusConfigurationAndSWHardeningNeeded, StatusTDRelaunchAdvisedConfigNeeded:
		return true
	}
	return false
}

// relaunchAdvice implements the TDX 1.5 check: when only the TDX module
// makes the TCB out of date and TEE_TCB_SVN2 (the module a relaunched TD
// would get) already meets the newest level, the TD should be relaunched
// rather than the platform updated.
func relaunchAdvice(info *TCBInfo, svn2 *[16]byte, sgxStatus, tdxStatus, moduleStatus, qeStatus string) string {
	if qeStatus != StatusUpToDate {
		return tdxStatus
	}
	switch sgxStatus {
	case StatusUpToDate, StatusSWHardeningNeeded, StatusConfigurationNeeded, StatusConfigurationAndSWHardeningNeeded:
	default:
		return tdxStatus
	}
	if (tdxStatus != StatusOutOfDate && tdxStatus != StatusOutOfDateConfigurationNeeded) || moduleStatus != StatusOutOfDate {
		return tdxStatus
	}
	latest := &info.TCBLevels[0]
	var moduleOK bool
	if svn2[1] == 0 {
		moduleOK = svn2[0] >= latest.TDXComponents[0]
	} else {
		var ident *TDXModuleIdentity
		id := fmt.Sprintf("TDX_%02X", svn2[1])
		for i := range info.TDXModuleIdentities {
			if strings.EqualFold(info.TDXModuleIdentities[i].ID, id) {
				ident = &info.TDXModuleIdentities[i]
			}
		}
		if ident == nil || len(ident.TCBLevels) == 0 {
			return tdxStatus
		}
		moduleOK = uint16(svn2[0]) >= ident.TCBLevels[0].ISVSVN
	}
	if !moduleOK || svn2[2] < latest.TDXComponents[2] {
		return tdxStatus
	}
	if configNeeded(sgxStatus) || configNeeded(tdxStatus) {
		return StatusTDRelaunchAdvisedConfigNeeded
	}
	return StatusTDRelaunchAdvised
}

func addAdvisories(r *TCBResult, ids []string) {
	for _, id := range ids {
		if !slices.Contains(r.AdvisoryIDs, id) {
			r.AdvisoryIDs = append(r.AdvisoryIDs, id)
		}
	}
}
