package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/attest/claims"
	"github.com/teegate/teegate/attest/collateral"
	"github.com/teegate/teegate/attest/nvidia"
)

// runCollateral dispatches `teegate collateral <what>`.
func runCollateral(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "fetch" {
		fmt.Fprintln(stderr, "usage: teegate collateral fetch --out DIR [flags]")
		return errUsage
	}
	return runCollateralFetch(ctx, args[1:], stdout, stderr)
}

// runCollateralFetch is `teegate collateral fetch`: it downloads, while
// online, the collateral that `teegate verify … --collateral DIR` uses
// offline: Intel PCS collateral for the given quotes, AMD KDS chains and
// CRLs, NVIDIA OCSP responses and RIMs for the given GPU evidence. Every
// source is tried; what could not be fetched is listed and makes the exit
// status non-zero, what could is kept.
func runCollateralFetch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("collateral fetch", stderr)
	out := fs.String("out", "", "collateral `DIR` to write (created; existing files are replaced)")
	var tdxQuotes, sgxQuotes, snpReports, gpuEvidence, amdLines fileList
	fs.Var(&tdxQuotes, "tdx", "TDX quote `FILE` whose Intel collateral to fetch; repeatable")
	fs.Var(&sgxQuotes, "sgx", "SGX quote `FILE` whose Intel collateral to fetch; repeatable")
	fs.Var(&snpReports, "snp", "SEV-SNP report `FILE` without a certificate table whose VCEK to fetch from AMD KDS; repeatable; implies --amd")
	fs.Var(&gpuEvidence, "nvidia-evidence", "NVIDIA evidence `JSONFILE` (any shape verify gpu reads) whose OCSP responses and RIMs to fetch; repeatable")
	var bundles fileList
	fs.Var(&bundles, "evidence", "evidence bundle `FILE` (its JSON or the Teegate-Evidence header value, as verify response reads it): the collateral of its CPU evidence and GPUs; repeatable")
	reportPath := fs.String("report", "", "one GPU report `HEXFILE` (with --chain) whose OCSP responses and RIMs to fetch")
	chainPath := fs.String("chain", "", "the device certificate chain `PEMFILE` of --report")
	amd := fs.Bool("amd", false, "fetch the AMD KDS VCEK and VLEK chains and CRLs (of --amd-product, default Milan, Genoa, Turin)")
	fs.Var(&amdLines, "amd-product", "AMD product `LINE` to fetch (Milan, Genoa, Turin); repeatable; implies --amd")
	intelURL := fs.String("intel-url", "", "Intel PCS (or PCCS) `URL` (default "+collateral.DefaultIntelURL+")")
	intelRootCRL := fs.String("intel-root-crl-url", "", "Intel SGX Root CA CRL `URL` (default "+collateral.DefaultIntelRootCRLURL+" with the default PCS, else the PCCS route)")
	amdURL := fs.String("amd-url", "", "AMD KDS `URL` (default "+collateral.DefaultAMDURL+")")
	ocspURL := fs.String("nvidia-ocsp-url", "", "NVIDIA OCSP responder `URL` (default "+collateral.DefaultNVIDIAOCSPURL+")")
	rimURL := fs.String("nvidia-rim-url", "", "NVIDIA RIM service `URL` (default "+collateral.DefaultNVIDIARIMURL+")")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: teegate collateral fetch --out DIR [--evidence BUNDLE]... [--tdx FILE]... [--sgx FILE]... [--snp FILE]... [--amd] [--amd-product LINE]...\n"+
			"       [--nvidia-evidence JSONFILE]... [--report HEXFILE --chain PEMFILE] [--intel-url URL] [--amd-url URL]\n"+
			"       [--nvidia-ocsp-url URL] [--nvidia-rim-url URL]\n\n"+
			"Writes the collateral directory that `teegate verify ... --collateral DIR` reads offline\n"+
			"(layout: docs/attestation.md §14.5). Exits 0 only when everything asked for was fetched.\n\nflags:")
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *out == "":
		return usageErrorf(fs, "--out is required")
	case (*reportPath == "") != (*chainPath == ""):
		return usageErrorf(fs, "--report and --chain go together")
	case len(tdxQuotes)+len(sgxQuotes)+len(snpReports)+len(gpuEvidence)+len(bundles) == 0 && *reportPath == "" && !*amd && len(amdLines) == 0:
		return usageErrorf(fs, "nothing to fetch: give quotes, GPU evidence or --amd")
	}
	f := &collateral.Fetcher{IntelURL: *intelURL, IntelRootCRLURL: *intelRootCRL, AMDURL: *amdURL, NVIDIAOCSPURL: *ocspURL, NVIDIARIMURL: *rimURL}

	var evs []nvidia.Evidence
	for _, p := range gpuEvidence {
		raw, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("collateral fetch: reading %s: %w", p, err)
		}
		list, err := nvidia.ParseNVIDIAEvidenceJSON(raw)
		if err != nil {
			return fmt.Errorf("collateral fetch: %s: %s", p, oneLine(err))
		}
		evs = append(evs, list...)
	}
	if *reportPath != "" {
		devs, err := readGPUEvidence(*reportPath, *chainPath, "")
		if err != nil {
			return err
		}
		evs = append(evs, devs[0].ev)
	}

	type cpuQuote struct {
		name, kind string
		raw        []byte
	}
	var cpu []cpuQuote
	for _, p := range bundles {
		raw, err := readBundle(p)
		if err != nil {
			return fmt.Errorf("collateral fetch: %s: %s", p, oneLine(err))
		}
		b, err := attest.DecodeBundle(raw)
		if err != nil {
			return fmt.Errorf("collateral fetch: %s: %s", p, oneLine(err))
		}
		if b.Simulated() {
			return fmt.Errorf("collateral fetch: %s: simulated evidence has no vendor collateral", p)
		}
		switch b.TEE {
		case claims.TEETDX:
			cpu = append(cpu, cpuQuote{p, "tdx", b.CPUEvidence})
		case claims.TEESGX:
			cpu = append(cpu, cpuQuote{p, "sgx", b.CPUEvidence})
		case claims.TEESEVSNP:
			*amd = true
		}
		for _, g := range b.GPUs {
			evs = append(evs, nvidia.Evidence{Report: g.Report, Chain: g.CertChain, Arch: g.Arch})
		}
	}

	var wrote []string
	var failed []error
	for _, q := range cpu {
		file, err := f.Intel(ctx, q.kind, q.raw, *out)
		if err != nil {
			failed = append(failed, fmt.Errorf("%s: %w", q.name, err))
			continue
		}
		wrote = append(wrote, file)
	}
	for _, q := range []struct {
		kind  string
		paths []string
	}{{"tdx", tdxQuotes}, {"sgx", sgxQuotes}} {
		for _, p := range q.paths {
			raw, err := os.ReadFile(p)
			if err != nil {
				return fmt.Errorf("collateral fetch: reading %s: %w", p, err)
			}
			file, err := f.Intel(ctx, q.kind, raw, *out)
			if err != nil {
				failed = append(failed, fmt.Errorf("%s: %w", p, err))
				continue
			}
			wrote = append(wrote, file)
		}
	}
	for _, p := range snpReports {
		raw, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("collateral fetch: reading %s: %w", p, err)
		}
		file, err := f.AMDVCEK(ctx, raw, amdLines, *out)
		if err != nil {
			failed = append(failed, fmt.Errorf("%s: %w", p, err))
		} else {
			wrote = append(wrote, file)
		}
		*amd = true
	}
	if *amd || len(amdLines) > 0 {
		files, err := f.AMD(ctx, amdLines, *out)
		wrote = append(wrote, files...)
		if err != nil {
			failed = append(failed, err)
		}
	}
	if len(evs) > 0 {
		files, err := f.NVIDIA(ctx, evs, *out)
		wrote = append(wrote, files...)
		if err != nil {
			failed = append(failed, err)
		}
	}
	var b strings.Builder
	for _, w := range wrote {
		fmt.Fprintf(&b, "wrote %s\n", w)
	}
	if _, err := io.WriteString(stdout, b.String()); err != nil {
		return err
	}
	if len(failed) > 0 {
		var lines []string
		for _, e := range failed {
			for _, l := range strings.Split(errors.Join(e).Error(), "\n") {
				lines = append(lines, "  "+l)
			}
		}
		return fmt.Errorf("collateral fetch: %d written, not everything was fetched:\n%s", len(wrote), strings.Join(lines, "\n"))
	}
	fmt.Fprintf(stdout, "OK %d files in %s\n", len(wrote), *out)
	return nil
}
