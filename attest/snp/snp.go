package snp

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha512"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"

	"github.com/teegate/teegate/attest/claims"
)

// ReportSize is the size of an SEV-SNP ATTESTATION_REPORT (SEV-SNP ABI
// specification, AMD 56860, Table 23: 0x4A0 bytes).
const ReportSize = abi.ReportSize

// Errors returned by Verify, wrapped with context. Test with errors.Is.
var (
	// ErrReportFormat: the bytes are not a well-formed SEV-SNP report (size,
	// version, reserved bits, signer info, certificate table layout).
	ErrReportFormat = errors.New("malformed SEV-SNP report")
	// ErrMissingCertificate: no VCEK/VLEK was given and the report carries
	// none in its certificate table.
	ErrMissingCertificate = errors.New("SEV-SNP endorsement key certificate missing")
	// ErrCertChain: the VCEK/VLEK does not chain to the trusted ASK/ASVK and
	// ARK, is not valid at Options.Now, or the given chain cannot be parsed.
	ErrCertChain = errors.New("SEV-SNP certificate chain invalid")
	// ErrSignature: the report signature does not verify with the VCEK/VLEK
	// (any change to the signed bytes of the report lands here).
	ErrSignature = errors.New("SEV-SNP report signature invalid")
	// ErrTCB: the report is inconsistent with its endorsement key: the
	// reported TCB differs from the TCB the VCEK/VLEK certifies, or CHIP_ID
	// is not the VCEK's HWID.
	ErrTCB = errors.New("SEV-SNP report does not match its endorsement key")
	// ErrRevoked: the AMD CRL of the product line lists the ASK/ASVK or the
	// VCEK/VLEK.
	ErrRevoked = errors.New("SEV-SNP certificate revoked")
	// ErrCRL: a CRL given in Options.CRLs is malformed or not signed by the
	// ARK of the chain, or no CRL was given for the chain's ARK although
	// Options.RequireCRL is set.
	ErrCRL = errors.New("SEV-SNP CRL invalid or missing")
	// ErrCRLExpired: the CRL's nextUpdate is before Options.Now (stale
	// collateral), or its thisUpdate after it.
	ErrCRLExpired = errors.New("SEV-SNP CRL is stale")
)

// Options configures Verify. The zero value verifies a report that carries
// its certificate table against the embedded AMD roots at the current time;
// nothing is ever fetched from the network.
type Options struct {
	// VCEK is the DER certificate of the key that signed the report: the VCEK,
	// or the VLEK for VLEK-signed reports. Optional when the report carries
	// a certificate table holding it; when both are present this one wins.
	VCEK []byte
	// VCEKCandidates are DER VCEKs (a collateral directory's) tried when
	// neither VCEK nor the certificate table provides one: the one whose
	// HWID is the report's CHIP_ID and whose TCB is its REPORTED_TCB.
	VCEKCandidates [][]byte
	// CertChain is the PEM ASK (or ASVK) and ARK of the product line, as
	// AMD KDS serves them from /vcek/v1/{product}/cert_chain (or
	// /vlek/v1/{product}/cert_chain). It replaces the embedded roots, so
	// pass only a chain you trust. Default: the embedded AMD VCEK and VLEK
	// chains of Milan, Genoa and Turin (see Roots).
	CertChain []byte
	// Now is the time at which certificates must be valid; zero means
	// time.Now().
	Now time.Time
	// MinimumTCB states, per product line ("Milan", "Genoa", "Turin"), the
	// lowest TCB a report may have to be UpToDate. With no entry for the
	// report's product line the claimed status is Unknown.
	MinimumTCB map[string]TCBParts
	// CRLs are DER AMD CRLs (KDS /vcek/v1/{product}/crl and
	// /vlek/v1/{product}/crl). The one signed by the chain's ARK is checked:
	// fresh at Now, not listing the ASK/ASVK or the VCEK/VLEK.
	CRLs [][]byte
	// RequireCRL fails verification when no CRL of CRLs is signed by the
	// chain's ARK.
	RequireCRL bool
}

// TCBParts are the security patch levels (SPLs) of a TCB_VERSION. FMC is
// zero before Turin.
type TCBParts struct {
	FMC        uint8 `json:"fmc"`
	BootLoader uint8 `json:"boot_loader"`
	TEE        uint8 `json:"tee"`
	SNP        uint8 `json:"snp"`
	Microcode  uint8 `json:"microcode"`
}

// below reports whether any component of p is lower than min's.
func (p TCBParts) below(min TCBParts) bool {
	return p.FMC < min.FMC || p.BootLoader < min.BootLoader || p.TEE < min.TEE || p.SNP < min.SNP || p.Microcode < min.Microcode
}

// decomposeTCB splits a little-endian TCB_VERSION by product line: Milan and
// Genoa are {boot loader, TEE, 4 reserved, SNP, microcode}; Turin (AMD 56860
// rev 1.57, Table 3) is {FMC, boot loader, TEE, SNP, 3 reserved, microcode}.
func decomposeTCB(productLine string, v uint64) TCBParts {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, v)
	if productLine == "Turin" {
		return TCBParts{FMC: b[0], BootLoader: b[1], TEE: b[2], SNP: b[3], Microcode: b[7]}
	}
	return TCBParts{BootLoader: b[0], TEE: b[1], SNP: b[6], Microcode: b[7]}
}

// Sources names, per claim, the check that established it.
const (
	sourceSignature = "snp.report_signature"
	sourceChain     = "snp.vcek_chain"
	sourceTCB       = "snp.tcb_minimum"
)

// policyDebugBit is bit 19 of the guest policy: DEBUG (AMD 56860, Table 9).
const policyDebugBit = 19

// Verify checks an SEV-SNP attestation report and returns its claims. report
// is the raw 0x4A0-byte ATTESTATION_REPORT, optionally followed by the
// certificate table of an extended guest request (GHCB specification, AMD
// 56421, §4.1.8.1: GUID/offset/length entries, then the DER certificates).
//
// Verify checks, offline and in order: the report format; that the VCEK
// (or VLEK) chains through the ASK (or ASVK) to the ARK of Options.CertChain
// or of the embedded AMD roots and is valid at Options.Now; the AMD CRL of
// that ARK when given (Options.CRLs); the ECDSA P-384 signature over the
// report; and that the report's reported TCB and CHIP_ID agree with the
// VCEK. The claimed TCB status is derived from the reported and committed
// TCB against Options.MinimumTCB (OutOfDate when any SPL of either is below
// the minimum, UpToDate otherwise), and is Unknown without a minimum for the
// product line. The guest policy and measurement are left to policies.
func Verify(ctx context.Context, report []byte, opts Options) (*claims.Claims, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("verifying SEV-SNP report: %w", err)
	}
	att, raw, err := parse(report)
	if err != nil {
		return nil, err
	}
	info, err := abi.ParseSignerInfo(att.GetReport().GetSignerInfo())
	if err != nil {
		return nil, fmt.Errorf("parsing signer info: %w: %w", ErrReportFormat, err)
	}
	if len(opts.VCEK) > 0 {
		switch info.SigningKey {
		case abi.VlekReportSigner:
			att.CertificateChain.VlekCert = opts.VCEK
		default:
			att.CertificateChain.VcekCert = opts.VCEK
		}
	}
	var ekDER []byte
	switch info.SigningKey {
	case abi.VcekReportSigner:
		ekDER = att.CertificateChain.GetVcekCert()
	case abi.VlekReportSigner:
		ekDER = att.CertificateChain.GetVlekCert()
	default:
		return nil, fmt.Errorf("checking signer: %w: report signed by %v", ErrReportFormat, info.SigningKey)
	}
	if len(ekDER) == 0 && info.SigningKey == abi.VcekReportSigner {
		ekDER = pickVCEK(opts.VCEKCandidates, att.GetReport())
	}
	if len(ekDER) == 0 {
		return nil, fmt.Errorf("finding %v certificate: %w", info.SigningKey, ErrMissingCertificate)
	}
	ek, err := x509.ParseCertificate(ekDER)
	if err != nil {
		return nil, fmt.Errorf("parsing %v certificate: %w: %w", info.SigningKey, ErrCertChain, err)
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}

	var candidates []*Chain
	if len(opts.CertChain) > 0 {
		c, err := ParseChain(opts.CertChain)
		if err != nil {
			return nil, err
		}
		candidates = []*Chain{c}
	} else {
		candidates = embeddedRoots()
	}
	chain, err := verifyEK(ek, info.SigningKey, candidates, now)
	if err != nil {
		return nil, fmt.Errorf("verifying %v certificate chain: %w", info.SigningKey, err)
	}
	if err := checkCRLs(opts.CRLs, opts.RequireCRL, chain, now); err != nil {
		return nil, fmt.Errorf("checking AMD CRL for %s: %w", chain.ProductLine, err)
	}
	if err := verifySignature(raw, ek); err != nil {
		return nil, fmt.Errorf("verifying report signature: %w", err)
	}
	exts, err := kds.CertificateExtensions(ek, info.SigningKey)
	if err != nil {
		return nil, fmt.Errorf("reading %v extensions: %w: %w", info.SigningKey, ErrCertChain, err)
	}
	r := att.GetReport()
	reported := decomposeTCB(chain.ProductLine, r.GetReportedTcb())
	certified := decomposeTCB("", uint64(exts.TCBVersion)) // kds composes the Milan layout
	if reported.BootLoader != certified.BootLoader || reported.TEE != certified.TEE ||
		reported.SNP != certified.SNP || reported.Microcode != certified.Microcode {
		return nil, fmt.Errorf("comparing reported TCB %+v with the %v's %+v: %w", reported, info.SigningKey, certified, ErrTCB)
	}
	if info.SigningKey == abi.VcekReportSigner && !bytes.Equal(exts.HWID, r.GetChipId()) {
		return nil, fmt.Errorf("comparing CHIP_ID with the VCEK's HWID: %w", ErrTCB)
	}
	committed := decomposeTCB(chain.ProductLine, r.GetCommittedTcb())
	status := claims.TCBUnknown
	if min, ok := opts.MinimumTCB[chain.ProductLine]; ok {
		status = claims.TCBUpToDate
		if reported.below(min) || committed.below(min) {
			status = claims.TCBOutOfDate
		}
	}
	c := toClaims(r, raw)
	c.TCB.Status = status
	c.TCB.SNP = &claims.SNPTCB{
		ProductLine: chain.ProductLine,
		Signer:      signerName(info.SigningKey),
		Reported:    reported.claim(),
		Committed:   committed.claim(),
		Current:     decomposeTCB(chain.ProductLine, r.GetCurrentTcb()).claim(),
		Launch:      decomposeTCB(chain.ProductLine, r.GetLaunchTcb()).claim(),
	}
	return c, nil
}

// pickVCEK returns the candidate VCEK certifying the report's chip and
// reported TCB, or nil. Nothing is trusted here: the chain, signature and
// consistency checks follow.
func pickVCEK(candidates [][]byte, r *spb.Report) []byte {
	for _, der := range candidates {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			continue
		}
		exts, err := kds.VcekCertificateExtensions(c)
		if err != nil || !bytes.Equal(exts.HWID, r.GetChipId()) {
			continue
		}
		if uint64(exts.TCBVersion) == r.GetReportedTcb() {
			return der
		}
	}
	return nil
}

func (p TCBParts) claim() claims.SNPTCBParts {
	return claims.SNPTCBParts{FMC: int(p.FMC), BootLoader: int(p.BootLoader), TEE: int(p.TEE), SNP: int(p.SNP), Microcode: int(p.Microcode)}
}

func signerName(s abi.ReportSigner) string {
	if s == abi.VlekReportSigner {
		return "vlek"
	}
	return "vcek"
}

// verifySignature checks the ECDSA P-384 SHA-384 signature over the signed
// part of the report (0x000..0x29F; AMD 56860, Table 23) with the VCEK/VLEK.
func verifySignature(raw []byte, ek *x509.Certificate) error {
	key, ok := ek.PublicKey.(*ecdsa.PublicKey)
	if !ok || key.Curve != elliptic.P384() {
		return fmt.Errorf("%w: endorsement key is not ECDSA P-384", ErrCertChain)
	}
	if algo := abi.SignatureAlgo(raw); algo != abi.SignEcdsaP384Sha384 {
		return fmt.Errorf("%w: signature algorithm %d is not ECDSA P-384 with SHA-384", ErrSignature, algo)
	}
	der, err := abi.ReportToSignatureDER(raw)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSignature, err)
	}
	sum := sha512.Sum384(abi.SignedComponent(raw))
	if !ecdsa.VerifyASN1(key, sum[:], der) {
		return ErrSignature
	}
	return nil
}

// verifyEK returns the first candidate chain that certifies ek for its
// signer kind (VCEK: ASK, VLEK: ASVK) at now.
func verifyEK(ek *x509.Certificate, signer abi.ReportSigner, candidates []*Chain, now time.Time) (*Chain, error) {
	var errs []error
	for _, c := range candidates {
		ica := c.ASK
		if signer == abi.VlekReportSigner {
			ica = c.ASVK
		}
		if ica == nil {
			continue
		}
		if err := c.verify(ek, ica, now); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.ProductLine, err))
			continue
		}
		with := *c
		with.ICA = ica
		return &with, nil
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("%w: no trusted %s chain", ErrCertChain, map[bool]string{true: "ASVK", false: "ASK"}[signer == abi.VlekReportSigner])
	}
	return nil, fmt.Errorf("%w: %w", ErrCertChain, errors.Join(errs...))
}

// parse splits report bytes into the report and its optional certificate
// table. raw is the report proper (ReportSize bytes).
func parse(b []byte) (*spb.Attestation, []byte, error) {
	if len(b) < ReportSize {
		return nil, nil, fmt.Errorf("parsing report: %w: %d bytes, want at least %d", ErrReportFormat, len(b), ReportSize)
	}
	raw := b[:ReportSize]
	if err := abi.ValidateReportFormat(raw); err != nil {
		return nil, nil, fmt.Errorf("parsing report: %w: %w", ErrReportFormat, err)
	}
	report, err := abi.ReportToProto(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing report: %w: %w", ErrReportFormat, err)
	}
	chain := &spb.CertificateChain{}
	if len(b) > ReportSize {
		if err := readCertTable(b[ReportSize:], chain); err != nil {
			return nil, nil, err
		}
	}
	return &spb.Attestation{Report: report, CertificateChain: chain}, raw, nil
}

// readCertTable copies the VCEK and VLEK out of an extended-request
// certificate table. It bounds-checks entries itself: go-sev-guest v0.15.0's
// CertTable.Unmarshal adds offset and length in uint32, so a crafted entry
// wraps around, allocates up to 4 GiB and then panics on the slice. Picking
// by GUID here also avoids CertTable.Proto, which logs through a global
// logger when a key is absent. The table's ASK/ARK are never read: the
// roots come from Options.CertChain or the embedded set.
func readCertTable(table []byte, chain *spb.CertificateChain) error {
	entries, err := abi.ParseSnpCertTableHeader(table)
	if err != nil {
		return fmt.Errorf("parsing certificate table: %w: %w", ErrReportFormat, err)
	}
	for i, e := range entries {
		end := uint64(e.Offset) + uint64(e.Length)
		if end > uint64(len(table)) {
			return fmt.Errorf("parsing certificate table: %w: entry %d (offset %d, length %d) exceeds the %d-byte table",
				ErrReportFormat, i, e.Offset, e.Length, len(table))
		}
		der := bytes.Clone(table[e.Offset:end])
		switch e.GUID.String() {
		case abi.VcekGUID:
			chain.VcekCert = der
		case abi.VlekGUID:
			chain.VlekCert = der
		}
	}
	return nil
}

// Chain is one product line's AMD certificate chain: the ARK and the ASK
// (VCEK signing) and/or ASVK (VLEK signing) it certifies.
type Chain struct {
	// ProductLine is the ARK's product line ("Milan", "Genoa", "Turin").
	ProductLine string
	ARK         *x509.Certificate
	ASK         *x509.Certificate
	ASVK        *x509.Certificate
	// ICA is the intermediate that certified the verified VCEK/VLEK (set
	// on the chain verifyEK returns).
	ICA *x509.Certificate
}

// maxChainPEM bounds a KDS cert_chain response (about 4.5 KiB).
const maxChainPEM = 64 << 10

// ParseChain reads a KDS cert_chain PEM (ASK or ASVK, then ARK; a
// concatenation of a VCEK and a VLEK chain of the same ARK is accepted
// too) and names its product line from the ARK's common name
// ("ARK-Milan"). The ARK must be self-signed and certify the ASK/ASVK.
func ParseChain(b []byte) (*Chain, error) {
	if len(b) > maxChainPEM {
		return nil, fmt.Errorf("parsing certificate chain: %w: %d bytes is too long", ErrCertChain, len(b))
	}
	var certs []*x509.Certificate
	rest := b
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("parsing certificate chain: %w: unexpected PEM block %q", ErrCertChain, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate chain: %w: %w", ErrCertChain, err)
		}
		certs = append(certs, c)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("parsing certificate chain: %w: trailing data", ErrCertChain)
	}
	ch := &Chain{}
	for _, c := range certs {
		cn := c.Subject.CommonName
		switch {
		case strings.HasPrefix(cn, "ARK-"):
			if ch.ARK != nil && !ch.ARK.Equal(c) {
				return nil, fmt.Errorf("parsing certificate chain: %w: two different ARKs", ErrCertChain)
			}
			ch.ARK, ch.ProductLine = c, strings.TrimPrefix(cn, "ARK-")
		case strings.HasPrefix(cn, "SEV-VLEK-"):
			ch.ASVK = c
		case strings.HasPrefix(cn, "SEV-"):
			ch.ASK = c
		default:
			return nil, fmt.Errorf("parsing certificate chain: %w: unexpected certificate %q", ErrCertChain, cn)
		}
	}
	if ch.ARK == nil {
		return nil, fmt.Errorf("parsing certificate chain: %w: no ARK certificate", ErrCertChain)
	}
	if ch.ASK == nil && ch.ASVK == nil {
		return nil, fmt.Errorf("parsing certificate chain: %w: want ASK or ASVK and ARK", ErrCertChain)
	}
	if err := ch.ARK.CheckSignatureFrom(ch.ARK); err != nil {
		return nil, fmt.Errorf("parsing certificate chain: %w: ARK is not self-signed: %w", ErrCertChain, err)
	}
	for _, ica := range []*x509.Certificate{ch.ASK, ch.ASVK} {
		if ica == nil {
			continue
		}
		if err := ica.CheckSignatureFrom(ch.ARK); err != nil {
			return nil, fmt.Errorf("parsing certificate chain: %w: %s not signed by the ARK: %w", ErrCertChain, ica.Subject.CommonName, err)
		}
		if want := "SEV-" + ch.ProductLine; ica.Subject.CommonName != want && ica.Subject.CommonName != "SEV-VLEK-"+ch.ProductLine {
			return nil, fmt.Errorf("parsing certificate chain: %w: %s under ARK-%s", ErrCertChain, ica.Subject.CommonName, ch.ProductLine)
		}
	}
	return ch, nil
}

// verify checks ek -> ica -> ARK at now with Go's verifier (RSA-PSS
// signatures, validity periods, CA constraints).
func (c *Chain) verify(ek, ica *x509.Certificate, now time.Time) error {
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(c.ARK)
	inter.AddCert(ica)
	_, err := ek.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

func toClaims(r *spb.Report, raw []byte) *claims.Claims {
	measurements := map[string]string{
		"measurement": hex.EncodeToString(r.GetMeasurement()),
		"host_data":   hex.EncodeToString(r.GetHostData()),
		"family_id":   hex.EncodeToString(r.GetFamilyId()),
		"image_id":    hex.EncodeToString(r.GetImageId()),
	}
	sources := map[string]string{
		"tee":          sourceSignature,
		"debug":        sourceSignature,
		"report_data":  sourceSignature,
		"measurements": sourceSignature,
		"tcb":          sourceChain,
		"tcb.status":   sourceTCB,
	}
	return &claims.Claims{
		Version:      claims.Version,
		TEE:          claims.TEESEVSNP,
		Simulated:    false,
		Debug:        r.GetPolicy()&(1<<policyDebugBit) != 0,
		Measurements: measurements,
		TCB: &claims.TCB{
			// REPORTED_TCB exactly as the report holds it (little-endian
			// uint64 at 0x180).
			TEETCBSVN: hex.EncodeToString(raw[0x180:0x188]),
		},
		ReportData: hex.EncodeToString(r.GetReportData()),
		Sources:    sources,
	}
}
