package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/teegate/teegate/attest/claims"
	"github.com/teegate/teegate/attest/collateral"
	"github.com/teegate/teegate/attest/nvidia"
	"github.com/teegate/teegate/attest/verifiers"
)

// runVerifyGPU is `teegate verify gpu`: it verifies NVIDIA GPU (Hopper,
// Blackwell) or NVSwitch attestation evidence offline, either one SPDM
// report with its certificate chain or NVIDIA's evidence JSON, and
// optionally compares the measurements with signed reference manifests
// (RIMs). It returns nil only when every device's report signature and
// chain verify (and the nonce, the RIM signatures and the measurements when
// asked for); otherwise its error is one line naming the check that failed.
func runVerifyGPU(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("verify gpu", stderr)
	reportPath := fs.String("report", "", "attestation report `HEXFILE`: hex text as NVIDIA's samples ship it (whitespace ignored), or raw binary")
	chainPath := fs.String("chain", "", "the device certificate chain `PEMFILE` (PEM, leaf first) that goes with --report")
	evPath := fs.String("nvidia-evidence", "", "NVIDIA evidence `JSONFILE`: NVIDIA's list of {arch, certificate, evidence, nonce}, or NEAR AI's / dstack's {arch, nonce, evidence_list} (also as a JSON string); every device is verified")
	var rimPaths fileList
	fs.Var(&rimPaths, "rim", "reference integrity manifest `FILE` to verify and compare (driver, VBIOS or NVSwitch BIOS RIM); repeat for several")
	nonceHex := fs.String("nonce", "", "the expected 32-byte nonce, `HEX` (every device must carry it)")
	rootsPath := fs.String("roots", "", "`PEMFILE` of device identity roots to trust instead of the embedded NVIDIA Device Identity CA (simulated GPUs, tests)")
	rimRootsPath := fs.String("rim-roots", "", "`PEMFILE` of RIM signing roots to trust instead of the embedded NVIDIA CoRIM signing root")
	collPath := fs.String("collateral", "", "collateral `DIR` (teegate collateral fetch): NVIDIA OCSP responses are checked, and the RIMs named after each report are compared")
	requireRev := fs.Bool("require-revocation", false, "fail when the collateral holds no OCSP response for a device-chain certificate")
	asJSON := fs.Bool("json", false, "print the verified devices as JSON")
	nowArg := fs.String("now", "", "verification time, `RFC3339` (default: the current time)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: teegate verify gpu --report HEXFILE --chain PEMFILE [--rim FILE]... [--nonce HEX] [--json] [--now RFC3339]\n"+
			"       teegate verify gpu --nvidia-evidence JSONFILE [--rim FILE]... [--nonce HEX] [--json] [--now RFC3339]\n"+
			"       (either form: [--roots PEMFILE] [--rim-roots PEMFILE] [--collateral DIR [--require-revocation]])\n\n"+
			"Exits 0 only when every report signature and certificate chain verifies (and the nonce, RIM\n"+
			"signatures and measurements, when given); otherwise prints the failed check on one line.\n\nflags:")
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case (*reportPath == "") == (*evPath == ""):
		return usageErrorf(fs, "give exactly one of --report or --nvidia-evidence")
	case *reportPath != "" && *chainPath == "":
		return usageErrorf(fs, "--report needs --chain")
	case *evPath != "" && *chainPath != "":
		return usageErrorf(fs, "--chain goes with --report (the evidence JSON carries its chains)")
	case *requireRev && *collPath == "":
		return usageErrorf(fs, "--require-revocation needs --collateral")
	}
	var nonce []byte
	if *nonceHex != "" {
		n, err := hex.DecodeString(strings.TrimPrefix(*nonceHex, "0x"))
		if err != nil || len(n) != nvidia.NonceSize {
			return usageErrorf(fs, "--nonce: want %d bytes of hex, got %q", nvidia.NonceSize, *nonceHex)
		}
		nonce = n
	}
	now, err := parseNow(*nowArg)
	if err != nil {
		return usageErrorf(fs, "%v", err)
	}

	// Everything is read and decoded before anything is verified, so a
	// typo in a path fails fast whatever the order of the checks.
	roots, customRoots := verifiers.NVIDIADeviceRoots(), *rootsPath != ""
	if customRoots {
		p, err := readRootPool(*rootsPath)
		if err != nil {
			return fmt.Errorf("verify gpu: roots: %w", err)
		}
		roots = p
	}
	rimRoots := verifiers.NVIDIARIMRoots()
	if *rimRootsPath != "" {
		p, err := readRootPool(*rimRootsPath)
		if err != nil {
			return fmt.Errorf("verify gpu: RIM roots: %w", err)
		}
		rimRoots = p
	}
	devs, err := readGPUEvidence(*reportPath, *chainPath, *evPath)
	if err != nil {
		return err
	}
	rims := make([]gpuRIM, 0, len(rimPaths))
	for _, p := range rimPaths {
		raw, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("verify gpu: reading %s: %w", p, err)
		}
		r, err := nvidia.ParseRIM(raw)
		if err != nil {
			return fmt.Errorf("verify gpu: %s: %s: %s", gpuFailedCheck(err), p, oneLine(err))
		}
		rims = append(rims, gpuRIM{path: p, rim: r})
	}
	for i := range devs {
		devs[i].ev.ExpectedNonce = nonce
	}
	gopts := nvidia.Options{Roots: roots, RIMRoots: rimRoots, Now: now, ChainCache: nvidia.NewChainCache(len(devs)), RequireOCSP: *requireRev}
	if *collPath != "" {
		set, err := collateral.Load(*collPath)
		if err != nil {
			return fmt.Errorf("verify gpu: collateral: %s", oneLine(err))
		}
		gopts.OCSPResponses = set.OCSP
		seen := map[string]bool{}
		for _, d := range devs {
			for _, id := range set.RIMIDsFor(d.ev.Report, d.ev.Chain) {
				if !seen[id] {
					seen[id] = true
					rims = append(rims, gpuRIM{path: filepath.Join(*collPath, filepath.FromSlash(collateral.NVIDIARIMDir), id+".xml"), rim: set.RIMs[id]})
				}
			}
		}
	}

	res, err := verifyGPUs(ctx, devs, rims, gopts)
	if err != nil {
		return err
	}
	rootsName := "the NVIDIA Device Identity CA"
	if customRoots {
		rootsName = "the roots in " + *rootsPath
	}
	out := gpuOutput{Verified: true, Roots: "nvidia", Devices: res}
	if customRoots {
		out.Roots = "custom"
	}
	if *asJSON {
		b, err := json.MarshalIndent(out, "", "  ")
		if err != nil {
			return fmt.Errorf("verify gpu: encoding result: %w", err)
		}
		_, err = fmt.Fprintf(stdout, "%s\n", b)
		return err
	}
	return writeGPUText(stdout, out, rootsName, nonce != nil)
}

// fileList is a repeatable file flag.
type fileList []string

func (l *fileList) String() string { return strings.Join(*l, ",") }

func (l *fileList) Set(v string) error {
	if v == "" {
		return errors.New("empty file name")
	}
	*l = append(*l, v)
	return nil
}

// gpuInput is one device's evidence and how failures name it: "" when the
// command was given a single report, "device N (ARCH)" for evidence lists.
type gpuInput struct {
	label string
	ev    nvidia.Evidence
}

type gpuRIM struct {
	path string
	rim  *nvidia.RIM
}

// gpuDevice is one verified device as the command prints it. Every value
// is taken from the signed report (arch from the verified leaf
// certificate), never from the unauthenticated JSON around it.
type gpuDevice struct {
	Index          int    `json:"index"`
	Arch           string `json:"arch"`
	DriverVersion  string `json:"driver_version"`
	VBIOSVersion   string `json:"vbios_version"`
	SignatureValid bool   `json:"signature_valid"`
	ChainValid     bool   `json:"chain_valid"`
	// NonceMatched is present only when --nonce was given: absent means
	// not checked, which false would misstate.
	NonceMatched        *bool             `json:"nonce_matched,omitempty"`
	Nonce               string            `json:"nonce"`
	MeasurementsMatched string            `json:"measurements_matched"`
	RIMVersions         []string          `json:"rim_versions,omitempty"`
	Measurements        map[string]string `json:"measurements"`
	FWID                string            `json:"fwid"`
	Verified            bool              `json:"verified"`
}

type gpuOutput struct {
	Verified bool `json:"verified"`
	// Roots says which device roots were trusted: "nvidia" (embedded) or
	// "custom" (--roots), so a saved result cannot pass a simulated GPU
	// off as a genuine one.
	Roots   string      `json:"roots"`
	Devices []gpuDevice `json:"devices"`
}

// readGPUEvidence reads either one report and its chain or an evidence
// JSON file into the devices to verify.
func readGPUEvidence(reportPath, chainPath, evPath string) ([]gpuInput, error) {
	if evPath != "" {
		raw, err := os.ReadFile(evPath)
		if err != nil {
			return nil, fmt.Errorf("verify gpu: reading %s: %w", evPath, err)
		}
		evs, err := nvidia.ParseNVIDIAEvidenceJSON(raw)
		if err != nil {
			return nil, fmt.Errorf("verify gpu: %s: %s", gpuFailedCheck(err), oneLine(err))
		}
		devs := make([]gpuInput, len(evs))
		for i, ev := range evs {
			devs[i] = gpuInput{label: fmt.Sprintf("device %d (%s)", i, ev.Arch), ev: ev}
		}
		return devs, nil
	}
	raw, err := os.ReadFile(reportPath)
	if err != nil {
		return nil, fmt.Errorf("verify gpu: reading %s: %w", reportPath, err)
	}
	report, err := decodeReportFile(raw)
	if err != nil {
		return nil, fmt.Errorf("verify gpu: report format: %s: %s", reportPath, oneLine(err))
	}
	chain, err := os.ReadFile(chainPath)
	if err != nil {
		return nil, fmt.Errorf("verify gpu: reading %s: %w", chainPath, err)
	}
	return []gpuInput{{ev: nvidia.Evidence{Report: report, Chain: chain}}}, nil
}

// decodeReportFile accepts the report as hex text, NVIDIA's sample format,
// with any whitespace (wrapped lines, a trailing newline), or as the raw
// bytes NVML returns. The two cannot be confused: a report starts with the
// SPDM version byte (0x10..0x13), never an ASCII hex digit.
func decodeReportFile(raw []byte) ([]byte, error) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 {
		return nil, fmt.Errorf("decoding report: %w: empty file", nvidia.ErrReportFormat)
	}
	if !isHexDigit(t[0]) {
		return raw, nil
	}
	compact := bytes.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\n', '\r', '\v', '\f':
			return -1
		}
		return r
	}, t)
	compact = bytes.TrimPrefix(bytes.TrimPrefix(compact, []byte("0x")), []byte("0X"))
	if len(compact) == 0 {
		return nil, fmt.Errorf("decoding report: %w: no hex digits", nvidia.ErrReportFormat)
	}
	b := make([]byte, hex.DecodedLen(len(compact)))
	if _, err := hex.Decode(b, compact); err != nil {
		return nil, fmt.Errorf("decoding report: %w: not hex text: %w", nvidia.ErrReportFormat, err)
	}
	return b, nil
}

func isHexDigit(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func readRootPool(path string) (*x509.CertPool, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(raw) {
		return nil, fmt.Errorf("reading %s: no PEM certificate", path)
	}
	return p, nil
}

// verifyGPUs runs the checks in the order an auditor reads a failure:
// every device's own evidence first (report, chain, signature, nonce,
// FWID), then every RIM's signature, then which device each RIM describes,
// then the measurements. A RIM must describe at least one device: one that
// describes none was meant to be checked, and silently skipping it would
// pass evidence the auditor believes was compared.
func verifyGPUs(ctx context.Context, devs []gpuInput, rims []gpuRIM, opts nvidia.Options) ([]gpuDevice, error) {
	fail := func(d gpuInput, err error) error {
		if d.label == "" {
			return fmt.Errorf("verify gpu: %s: %s", gpuFailedCheck(err), oneLine(err))
		}
		return fmt.Errorf("verify gpu: %s: %s: %s", gpuFailedCheck(err), d.label, oneLine(err))
	}
	out := make([]gpuDevice, len(devs))
	gs := make([]*claims.GPU, len(devs))
	for i, d := range devs {
		g, err := nvidia.Verify(ctx, d.ev, opts)
		if errors.Is(err, nvidia.ErrNonceMismatch) {
			// Say what the report carries: the auditor compares it with
			// what was asked for.
			if rep, perr := nvidia.ParseReport(d.ev.Report); perr == nil {
				n := rep.Nonce()
				err = fmt.Errorf("%w: the report carries %x", err, n[:])
			}
		}
		if err != nil {
			return nil, fail(d, err)
		}
		gs[i] = g
	}
	for _, r := range rims {
		if err := r.rim.Verify(opts.RIMRoots, opts.Now); err != nil {
			return nil, fmt.Errorf("verify gpu: %s: %s: %s", gpuFailedCheck(err), r.path, oneLine(err))
		}
	}
	selected := make([][]*nvidia.RIM, len(devs))
	for _, r := range rims {
		used := false
		for i, g := range gs {
			if rimDescribes(r.rim, g) {
				selected[i] = append(selected[i], r.rim)
				used = true
			}
		}
		if !used {
			return nil, fmt.Errorf("verify gpu: RIM version: %s: %s: RIM %q names no device's driver or VBIOS version", r.path, nvidia.ErrRIMVersion, r.rim.Version)
		}
	}
	for i, d := range devs {
		if len(selected[i]) > 0 {
			// Verify again with the RIMs: the chain comes from the cache
			// and the RIMs' verification is reused, so this costs one
			// report signature.
			o := opts
			o.RIMs, o.RequireMeasurementMatch = selected[i], true
			g, err := nvidia.Verify(ctx, d.ev, o)
			if err != nil {
				return nil, fail(d, err)
			}
			gs[i] = g
		}
		rep, err := nvidia.ParseReport(d.ev.Report)
		if err != nil { // Verify parsed it already
			return nil, fail(d, err)
		}
		n := rep.Nonce()
		g := gs[i]
		out[i] = gpuDevice{
			Index:               i,
			Arch:                g.Arch,
			DriverVersion:       g.DriverVersion,
			VBIOSVersion:        g.VBIOSVersion,
			SignatureValid:      g.SignatureValid,
			ChainValid:          g.ChainValid,
			Nonce:               hex.EncodeToString(n[:]),
			MeasurementsMatched: g.MeasurementsMatched,
			Measurements:        g.Measurements,
			FWID:                g.FWID,
			Verified:            true,
		}
		if d.ev.ExpectedNonce != nil {
			out[i].NonceMatched = &g.NonceMatched
		}
		for _, r := range selected[i] {
			out[i].RIMVersions = append(out[i].RIMVersions, r.Version)
		}
	}
	return out, nil
}

// rimDescribes mirrors attest/nvidia's rule for which RIM goes with which
// report: a driver RIM names the driver version exactly, a VBIOS (or
// NVSwitch BIOS) RIM the VBIOS version in any case.
func rimDescribes(r *nvidia.RIM, g *claims.GPU) bool {
	return g.DriverVersion != "" && r.Version == g.DriverVersion ||
		g.VBIOSVersion != "" && strings.EqualFold(r.Version, g.VBIOSVersion)
}

// gpuFailedCheck names the check behind err for the one-line failure
// message.
func gpuFailedCheck(err error) string {
	for _, m := range []struct {
		target error
		name   string
	}{
		{nvidia.ErrReportFormat, "report format"},
		{nvidia.ErrReportSignature, "report signature"},
		{nvidia.ErrCertFormat, "certificate chain"},
		{nvidia.ErrCertChain, "certificate chain"},
		{nvidia.ErrNonceMismatch, "nonce"},
		{nvidia.ErrFWIDMismatch, "FWID"},
		{nvidia.ErrArchMismatch, "architecture"},
		{nvidia.ErrEvidenceFormat, "evidence format"},
		{nvidia.ErrRIMFormat, "RIM format"},
		{nvidia.ErrRIMSignature, "RIM signature"},
		{nvidia.ErrRIMChain, "RIM certificate chain"},
		{nvidia.ErrRIMVersion, "RIM version"},
		{nvidia.ErrRIMConflict, "RIM conflict"},
		{nvidia.ErrMeasurementMismatch, "measurements"},
		{nvidia.ErrCertRevoked, "certificate revoked"},
		{nvidia.ErrOCSPStale, "stale OCSP response"},
		{nvidia.ErrOCSP, "OCSP"},
		{context.Canceled, "interrupted"},
	} {
		if errors.Is(err, m.target) {
			return m.name
		}
	}
	return "verification"
}

func writeGPUText(w io.Writer, out gpuOutput, rootsName string, nonceChecked bool) error {
	var b strings.Builder
	checks := "report signature, certificate chain to " + rootsName
	if nonceChecked {
		checks += ", nonce"
	}
	noun := "device"
	if len(out.Devices) != 1 {
		noun = "devices"
	}
	fmt.Fprintf(&b, "OK %d %s verified: %s\n", len(out.Devices), noun, checks)
	for _, d := range out.Devices {
		fmt.Fprintf(&b, "device %d: %s\n", d.Index, d.Arch)
		if d.DriverVersion != "" {
			fmt.Fprintf(&b, "  %-22s %s\n", "driver_version:", d.DriverVersion)
		}
		fmt.Fprintf(&b, "  %-22s %s\n", "vbios_version:", d.VBIOSVersion)
		fmt.Fprintf(&b, "  %-22s %s\n", "nonce:", d.Nonce)
		matched := d.MeasurementsMatched
		switch {
		case len(d.RIMVersions) == 0:
			matched += " (no RIM given)"
		case matched == nvidia.MeasurementsNotChecked:
			matched += " (the RIMs do not cover both driver and VBIOS; compared: " + strings.Join(d.RIMVersions, ", ") + ")"
		default:
			matched += " (RIMs " + strings.Join(d.RIMVersions, ", ") + ")"
		}
		fmt.Fprintf(&b, "  %-22s %s\n", "measurements_matched:", matched)
		fmt.Fprintf(&b, "  %-22s %d blocks\n", "measurements:", len(d.Measurements))
		if d.FWID != "" {
			fmt.Fprintf(&b, "  %-22s %s\n", "fwid:", d.FWID)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
