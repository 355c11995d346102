package main

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/teegate/teegate/attest/claims"
	"github.com/teegate/teegate/attest/collateral"
	"github.com/teegate/teegate/attest/pcs"
	"github.com/teegate/teegate/attest/sgx"
	"github.com/teegate/teegate/attest/snp"
	"github.com/teegate/teegate/attest/tdx"
)

// runVerifyQuote is `teegate verify quote`: it verifies one raw CPU
// attestation (TDX quote, SGX quote or Open Enclave/EGo remote report,
// SEV-SNP report) offline and prints its claims. It returns nil only when
// the signatures and certificate chains verify (and, with --collateral, the
// collateral checks pass); otherwise its error is one line naming the check
// that failed, which main prints.
func runVerifyQuote(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("verify quote", stderr)
	tdxPath := fs.String("tdx", "", "Intel TDX quote file (v4 or v5, raw binary)")
	sgxPath := fs.String("sgx", "", "Intel SGX quote file (v3, raw binary) or Open Enclave/EGo remote report")
	snpPath := fs.String("snp", "", "AMD SEV-SNP attestation report file (raw, optionally followed by its certificate table)")
	vcekPath := fs.String("vcek", "", "SEV-SNP: VCEK or VLEK certificate (DER) when the report does not carry it")
	snpChainPath := fs.String("snp-chain", "", "SEV-SNP: trusted AMD KDS cert_chain `PEMFILE` (ASK or ASVK, then ARK) instead of the embedded AMD VCEK and VLEK roots")
	collPath := fs.String("collateral", "", "collateral `DIR` (teegate collateral fetch: Intel collateral, AMD CRLs), or for TDX/SGX one offline Intel collateral JSON FILE (TCB info, QE identity, CRLs)")
	requireRev := fs.Bool("require-revocation", false, "fail when the collateral holds no revocation data (Intel PCK and root CRLs, the AMD CRL of the chain's ARK)")
	asJSON := fs.Bool("json", false, "print the claims as JSON")
	nowArg := fs.String("now", "", "verification time, RFC 3339 (default: the current time)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: teegate verify quote --tdx FILE | --sgx FILE | --snp FILE [--vcek FILE] [--snp-chain PEMFILE] [--collateral DIR|FILE] [--require-revocation] [--json] [--now RFC3339]")
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	var kind, path string
	n := 0
	for _, k := range []struct{ kind, path string }{{"tdx", *tdxPath}, {"sgx", *sgxPath}, {"snp", *snpPath}} {
		if k.path != "" {
			kind, path = k.kind, k.path
			n++
		}
	}
	switch {
	case n != 1:
		return usageErrorf(fs, "give exactly one of --tdx, --sgx, --snp")
	case *vcekPath != "" && kind != "snp":
		return usageErrorf(fs, "--vcek goes with --snp")
	case *snpChainPath != "" && kind != "snp":
		return usageErrorf(fs, "--snp-chain goes with --snp")
	case *requireRev && *collPath == "":
		return usageErrorf(fs, "--require-revocation needs --collateral")
	}
	now, err := parseNow(*nowArg)
	if err != nil {
		return usageErrorf(fs, "%v", err)
	}
	nowFn := func() time.Time { return now }

	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("verify quote: reading %s: %w", path, err)
	}
	var coll *pcs.Collateral
	var set *collateral.Set
	if *collPath != "" {
		if st, err := os.Stat(*collPath); err == nil && st.IsDir() {
			if set, err = collateral.Load(*collPath); err != nil {
				return fmt.Errorf("verify quote: collateral: %s", oneLine(err))
			}
		} else if kind == "snp" {
			return usageErrorf(fs, "--collateral for --snp must be a collateral directory")
		} else if coll, err = pcs.LoadCollateralFile(*collPath); err != nil {
			return fmt.Errorf("verify quote: collateral: %w", err)
		}
	}
	var getter pcs.Getter
	if set != nil {
		getter = set.IntelGetter()
	}

	var v verifiedQuote
	switch kind {
	case "tdx":
		v, err = verifyTDXQuote(ctx, raw, tdx.Options{Collateral: coll, Getter: getter, Now: nowFn, CheckCRL: *requireRev})
	case "sgx":
		v, err = verifySGXQuote(ctx, raw, sgx.Options{Collateral: coll, Getter: getter, Now: nowFn, CheckCRL: *requireRev})
	case "snp":
		opts := snp.Options{Now: now, RequireCRL: *requireRev}
		if set != nil {
			opts.CRLs, opts.VCEKCandidates = set.AMDCRLs, set.AMDVCEKs
		}
		if *vcekPath != "" {
			if opts.VCEK, err = os.ReadFile(*vcekPath); err != nil {
				return fmt.Errorf("verify quote: reading %s: %w", *vcekPath, err)
			}
		}
		if *snpChainPath != "" {
			if opts.CertChain, err = os.ReadFile(*snpChainPath); err != nil {
				return fmt.Errorf("verify quote: reading %s: %w", *snpChainPath, err)
			}
		}
		v, err = verifySNPReport(ctx, raw, opts)
	}
	if err != nil {
		return fmt.Errorf("verify quote: %s: %s", failedCheck(err), oneLine(err))
	}
	if *asJSON {
		return writeQuoteJSON(stdout, v)
	}
	return writeQuoteText(stdout, v)
}

// verifiedQuote is what the command prints: the flat fields an auditor
// looks for, and the full normalized claims.
type verifiedQuote struct {
	what   string // "TDX quote v4", "SGX quote v3 (in an Open Enclave report)"…
	checks string // what was verified, for the text output
	fields map[string]any
	claims *claims.Claims
}

func verifyTDXQuote(ctx context.Context, raw []byte, opts tdx.Options) (verifiedQuote, error) {
	res, err := tdx.VerifyDetailed(ctx, raw, opts)
	if err != nil {
		return verifiedQuote{}, err
	}
	q, c := res.Quote, res.Claims
	f := map[string]any{
		"tee":           c.TEE,
		"quote_version": q.Header.Version,
		"debug":         c.Debug,
		"report_data":   c.ReportData,
		"tee_tcb_svn":   hex.EncodeToString(q.Body.TEETCBSVN[:]),
	}
	for _, k := range []string{"mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrseam", "mrsignerseam", "mrconfigid", "mrowner", "mrownerconfig", "td_attributes", "xfam", "mrservicetd"} {
		if m, ok := c.Measurements[k]; ok {
			f[k] = m
		}
	}
	addTCB(f, c)
	return verifiedQuote{
		what:   fmt.Sprintf("TDX quote v%d", q.Header.Version),
		checks: "quote signature, QE report signature, attestation key binding, PCK chain to the Intel SGX Root CA" + collateralChecked(c),
		fields: f,
		claims: c,
	}, nil
}

// isOEReport tells an Open Enclave remote report (what EGo's
// GetRemoteReport returns) from a bare quote by its header: version 1,
// type 2 (SGX remote). A bare SGX quote starts with version 3.
func isOEReport(b []byte) bool {
	return len(b) >= sgx.OEHeaderSize &&
		binary.LittleEndian.Uint32(b[0:4]) == sgx.OEReportVersion &&
		binary.LittleEndian.Uint32(b[4:8]) == sgx.OETypeSGX
}

func verifySGXQuote(ctx context.Context, raw []byte, opts sgx.Options) (verifiedQuote, error) {
	what := "SGX quote"
	if isOEReport(raw) {
		rep, err := sgx.ParseOERemoteReport(raw)
		if err != nil {
			return verifiedQuote{}, err
		}
		raw, what = rep.RawQuote, "SGX quote (in an Open Enclave remote report)"
	}
	res, err := sgx.VerifyDetailed(ctx, raw, opts)
	if err != nil {
		return verifiedQuote{}, err
	}
	c := res.Claims
	f := map[string]any{
		"tee":           c.TEE,
		"quote_version": res.Quote.Header.Version,
		"debug":         c.Debug,
		"report_data":   c.ReportData,
	}
	for _, k := range []string{"mrenclave", "mrsigner", "isvprodid", "isvsvn", "attributes", "miscselect", "cpusvn"} {
		f[k] = c.Measurements[k]
	}
	addTCB(f, c)
	return verifiedQuote{
		what:   fmt.Sprintf("%s v%d", what, res.Quote.Header.Version),
		checks: "quote signature, QE report signature, attestation key binding, PCK chain to the Intel SGX Root CA" + collateralChecked(c),
		fields: f,
		claims: c,
	}, nil
}

func verifySNPReport(ctx context.Context, raw []byte, opts snp.Options) (verifiedQuote, error) {
	c, err := snp.Verify(ctx, raw, opts)
	if err != nil {
		return verifiedQuote{}, err
	}
	f := map[string]any{
		"tee":         c.TEE,
		"debug":       c.Debug,
		"report_data": c.ReportData,
	}
	for _, k := range []string{"measurement", "host_data", "family_id", "image_id"} {
		f[k] = c.Measurements[k]
	}
	signer := "VCEK"
	if c.TCB != nil {
		f["reported_tcb"] = c.TCB.TEETCBSVN
		f["tcb_status"] = c.TCB.Status
		if s := c.TCB.SNP; s != nil {
			f["product_line"], f["signer"] = s.ProductLine, s.Signer
			signer = strings.ToUpper(s.Signer)
		}
	}
	ica := "ASK"
	if signer == "VLEK" {
		ica = "ASVK"
	}
	return verifiedQuote{
		what:   "SEV-SNP report",
		checks: "report signature, " + signer + " chain through the " + ica + " to the AMD ARK, report TCB and chip id against the " + signer,
		fields: f,
		claims: c,
	}, nil
}

func addTCB(f map[string]any, c *claims.Claims) {
	if c.TCB == nil {
		return
	}
	f["tcb_status"] = c.TCB.Status
	f["fmspc"] = c.TCB.FMSPC
	if len(c.TCB.AdvisoryIDs) > 0 {
		f["advisory_ids"] = c.TCB.AdvisoryIDs
	}
	if c.TCB.TCBDate != "" {
		f["tcb_date"] = c.TCB.TCBDate
	}
	if c.TCB.CollateralExpired {
		f["collateral_expired"] = true
	}
}

func collateralChecked(c *claims.Claims) string {
	if c.TCB == nil {
		return "; TCB not evaluated (no --collateral)"
	}
	return "; collateral signatures, CRLs, QE identity and TCB level"
}

// failedCheck names the check behind err for the one-line failure message.
func failedCheck(err error) string {
	for _, m := range []struct {
		target error
		name   string
	}{
		// Intel quotes (shared by TDX and SGX through package pcs).
		{pcs.ErrQuoteFormat, "quote format"},
		{pcs.ErrUnsupportedVersion, "quote version"},
		{pcs.ErrQuoteSignature, "quote signature"},
		{pcs.ErrAttestationKeyBinding, "attestation key binding"},
		{pcs.ErrQEReportSignature, "QE report signature"},
		{pcs.ErrCertificateRevoked, "certificate revoked"},
		{pcs.ErrPCKChain, "PCK certificate chain"},
		{pcs.ErrTCBRevoked, "TCB revoked"},
		{pcs.ErrTCBNotSupported, "TCB level"},
		{pcs.ErrFMSPCMismatch, "collateral FMSPC"},
		{pcs.ErrQEIdentityMismatch, "QE identity"},
		{pcs.ErrTDXModuleMismatch, "TDX module identity"},
		{pcs.ErrCollateralExpired, "collateral expired"},
		{pcs.ErrCollateralSignature, "collateral signature"},
		{pcs.ErrCollateralMismatch, "collateral"},
		{pcs.ErrCollateralFormat, "collateral format"},
		{pcs.ErrCollateralUnavailable, "collateral"},
		// SEV-SNP.
		{snp.ErrReportFormat, "report format"},
		{snp.ErrMissingCertificate, "VCEK missing (pass --vcek)"},
		{snp.ErrSignature, "report signature"},
		{snp.ErrCertChain, "VCEK certificate chain"},
		{snp.ErrTCB, "report TCB against VCEK"},
		{snp.ErrRevoked, "AMD certificate revoked"},
		{snp.ErrCRLExpired, "stale AMD CRL"},
		{snp.ErrCRL, "AMD CRL"},
		{context.Canceled, "interrupted"},
	} {
		if errors.Is(err, m.target) {
			return m.name
		}
	}
	return "verification"
}

// oneLine keeps a failure message on one line: the contract of the verify
// commands is one line per failure.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

func writeQuoteJSON(w io.Writer, v verifiedQuote) error {
	out := make(map[string]any, len(v.fields)+2)
	for k, val := range v.fields {
		out[k] = val
	}
	out["verified"] = true
	out["claims"] = v.claims
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return fmt.Errorf("verify quote: encoding claims: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

func writeQuoteText(w io.Writer, v verifiedQuote) error {
	var b strings.Builder
	fmt.Fprintf(&b, "OK %s verified: %s\n", v.what, v.checks)
	keys := make([]string, 0, len(v.fields))
	for k := range v.fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "  %-14s %v\n", k+":", v.fields[k])
	}
	_, err := io.WriteString(w, b.String())
	return err
}
