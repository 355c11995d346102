package snp

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-sev-guest/abi"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/validate"
	"github.com/google/go-sev-guest/verify"
	"github.com/google/go-sev-guest/verify/trust"

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
	// ErrCertChain: the VCEK/VLEK does not chain to the trusted ASK/ARK, is
	// not valid at Options.Now, or the given chain cannot be parsed.
	ErrCertChain = errors.New("SEV-SNP certificate chain invalid")
	// ErrSignature: the report signature does not verify with the VCEK/VLEK
	// (any change to the signed bytes of the report lands here).
	ErrSignature = errors.New("SEV-SNP report signature invalid")
	// ErrTCB: the report is inconsistent with its endorsement key: the
	// reported TCB differs from the TCB the VCEK certifies, the committed and
	// current firmware differ, or CHIP_ID is not the VCEK's HWID.
	ErrTCB = errors.New("SEV-SNP report does not match its endorsement key")
)

// Options configures Verify. The zero value verifies a report that carries
// its certificate table against the AMD roots embedded in go-sev-guest at
// the current time; nothing is ever fetched from the network.
type Options struct {
	// VCEK is the DER certificate of the key that signed the report: the VCEK,
	// or the VLEK for VLEK-signed reports. Optional when the report carries
	// a certificate table holding it; when both are present this one wins.
	VCEK []byte
	// CertChain is the PEM ASK (or ASVK) and ARK of the product line, as
	// AMD KDS serves them from /vcek/v1/{product}/cert_chain. Its ARK becomes
	// the trust anchor, so pass only a chain you trust. Default: the AMD
	// roots embedded in go-sev-guest (VCEK chains of Milan, Genoa, Turin).
	CertChain []byte
	// Now is the time at which certificates must be valid; zero means
	// time.Now().
	Now time.Time
}

// Sources names, per claim, the check that established it.
const (
	sourceSignature = "snp.report_signature"
	sourceChain     = "snp.vcek_chain"
	sourceValidate  = "snp.report_validation"
)

// policyDebugBit is bit 19 of the guest policy: DEBUG (AMD 56860, Table 9).
const policyDebugBit = 19

// Verify checks an SEV-SNP attestation report and returns its claims. report
// is the raw 0x4A0-byte ATTESTATION_REPORT, optionally followed by the
// certificate table of an extended guest request (GHCB specification, AMD
// 56421, §4.1.8.1: GUID/offset/length entries, then the DER certificates),
// the layout go-sev-guest's abi.ReportCertsToProto reads.
//
// Verify checks, offline: the report format; that the VCEK (or VLEK) chains
// to the ASK/ARK of Options.CertChain or the embedded AMD roots and is
// valid at Options.Now; the ECDSA P-384 signature over the report; and that
// the report's TCB values and CHIP_ID agree with the VCEK. It does not judge
// the guest policy, measurement or TCB level against references: policies
// do that from the claims. Certificate revocation (AMD CRL) is not checked.
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
	vopts := &verify.Options{
		// Offline by construction: the report or the caller supplies the
		// VCEK, the caller or go-sev-guest the roots.
		DisableCertFetching: true,
		Now:                 now,
	}
	if len(opts.CertChain) > 0 {
		roots, err := parseCertChain(opts.CertChain)
		if err != nil {
			return nil, err
		}
		vopts.TrustedRoots = map[string][]*trust.AMDRootCerts{roots.ProductLine: {roots}}
	}
	// The ASK/ARK of a certificate table are never read (parse keeps only
	// the VCEK/VLEK): the roots come from opts.CertChain or the embedded set.
	if err := verify.SnpAttestationContext(ctx, att, vopts); err != nil {
		// go-sev-guest reports chain and signature failures as untyped
		// errors; tell them apart by checking the signature on its own.
		if sigErr := verify.SnpReportSignature(raw, ek); sigErr != nil {
			return nil, fmt.Errorf("verifying report signature: %w: %w", ErrSignature, sigErr)
		}
		return nil, fmt.Errorf("verifying %v certificate chain: %w: %w", info.SigningKey, ErrCertChain, err)
	}

	// Guest policy, measurement and TCB minimums are left to the policy;
	// what remains are the consistency checks between report and VCEK.
	vals := &validate.Options{
		GuestPolicy: abi.SnpPolicy{
			ABIMajor: 0, ABIMinor: 0,
			SMT: true, MigrateMA: true, Debug: true, CXLAllowed: true,
		},
		// Firmware being updated (committed < current) is a normal,
		// transient platform state; the reported TCB is what the VCEK
		// certifies and what policies judge.
		PermitProvisionalFirmware: true,
	}
	if err := validate.SnpAttestation(att, vals); err != nil {
		return nil, fmt.Errorf("validating report against %v: %w: %w", info.SigningKey, ErrTCB, err)
	}
	return toClaims(att.GetReport(), raw), nil
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
// logger when a key is absent.
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

// parseCertChain reads a KDS cert_chain PEM (ASK or ASVK, then ARK) and
// names its product line from the ARK's common name ("ARK-Milan").
func parseCertChain(chain []byte) (*trust.AMDRootCerts, error) {
	var ark *x509.Certificate
	rest := chain
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate chain: %w: %w", ErrCertChain, err)
		}
		if strings.HasPrefix(c.Subject.CommonName, "ARK-") {
			ark = c
		}
	}
	if ark == nil {
		return nil, fmt.Errorf("parsing certificate chain: %w: no ARK certificate", ErrCertChain)
	}
	line := strings.TrimPrefix(ark.Subject.CommonName, "ARK-")
	roots := trust.AMDRootCertsProduct(line)
	if err := roots.FromKDSCertBytes(chain); err != nil {
		return nil, fmt.Errorf("parsing certificate chain: %w: %w", ErrCertChain, err)
	}
	if roots.ProductCerts.Ark == nil || (roots.ProductCerts.Ask == nil && roots.ProductCerts.Asvk == nil) {
		return nil, fmt.Errorf("parsing certificate chain: %w: want ASK or ASVK and ARK", ErrCertChain)
	}
	return roots, nil
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
		"tcb.status":   sourceValidate,
	}
	return &claims.Claims{
		Version:      claims.Version,
		TEE:          claims.TEESEVSNP,
		Simulated:    false,
		Debug:        r.GetPolicy()&(1<<policyDebugBit) != 0,
		Measurements: measurements,
		TCB: &claims.TCB{
			// The signature and chain checks establish that AMD certified
			// this TCB for this chip; whether it is recent enough is the
			// policy's minimum-SVN rule.
			Status: claims.TCBUpToDate,
			// REPORTED_TCB exactly as the report holds it (little-endian
			// uint64 at 0x180): for Milan/Genoa the bytes are boot loader,
			// TEE, 4 reserved, SNP, microcode SVNs.
			TEETCBSVN: hex.EncodeToString(raw[0x180:0x188]),
		},
		ReportData: hex.EncodeToString(r.GetReportData()),
		Sources:    sources,
	}
}
