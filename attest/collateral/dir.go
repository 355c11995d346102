package collateral

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/teegate/teegate/attest/nvidia"
	"github.com/teegate/teegate/attest/pcs"
	"github.com/teegate/teegate/attest/snp"
)

// ErrFormat: a file of the collateral directory is malformed or misplaced.
var ErrFormat = errors.New("malformed collateral directory")

// ErrUnavailable: a vendor service could not provide a piece of collateral.
var ErrUnavailable = errors.New("collateral unavailable")

// Directory layout, relative to the collateral root.
const (
	// IntelDir holds one file per platform: "{tdx|sgx}-{FMSPC}-{platform|processor}.json",
	// the offline collateral JSON of pcs.ParseCollateralJSON.
	IntelDir = "intel"
	// AMDDir mirrors AMD KDS paths: amd/{vcek|vlek}/v1/{Line}/cert_chain
	// (PEM) and amd/{vcek|vlek}/v1/{Line}/crl (DER).
	AMDDir = "amd"
	// NVIDIAOCSPDir holds DER OCSP responses, "{serial hex}.der".
	NVIDIAOCSPDir = "nvidia/ocsp"
	// NVIDIARIMDir holds RIMs as the RIM service names them, "{rim id}.xml"
	// (the SWID XML, base64-decoded from the service's JSON).
	NVIDIARIMDir = "nvidia/rims"
)

// maxFile bounds each file read from the directory.
const maxFile = 8 << 20

// Set is a loaded collateral directory.
type Set struct {
	// Dir is where it was loaded from.
	Dir string
	// Intel is the Intel collateral, one entry per platform file.
	Intel []*pcs.Collateral
	// AMDChains are KDS cert_chain PEMs; AMDCRLs KDS CRLs (DER).
	AMDChains [][]byte
	AMDCRLs   [][]byte
	// AMDVCEKs are DER VCEKs fetched for reports without a certificate
	// table: amd/vcek/v1/{line}/{CHIP_ID hex}-{REPORTED_TCB hex}.der.
	AMDVCEKs [][]byte
	// OCSP are DER OCSP responses for NVIDIA device certificates.
	OCSP [][]byte
	// RIMs are the NVIDIA RIMs, by RIM id.
	RIMs map[string]*nvidia.RIM
}

// Load reads a collateral directory. Missing subdirectories are empty;
// every file present must parse (ErrFormat names the first that does not).
func Load(dir string) (*Set, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("loading collateral: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("loading collateral: %w: %s is not a directory", ErrFormat, dir)
	}
	s := &Set{Dir: dir, RIMs: map[string]*nvidia.RIM{}}
	if err := walk(dir, IntelDir, func(rel string, b []byte) error {
		if !strings.HasSuffix(rel, ".json") {
			return fmt.Errorf("%w: %s: want {tdx|sgx}-FMSPC-CA.json", ErrFormat, rel)
		}
		c, err := pcs.ParseCollateralJSON(b)
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrFormat, rel, err)
		}
		s.Intel = append(s.Intel, c)
		return nil
	}); err != nil {
		return nil, err
	}
	if err := walk(dir, AMDDir, func(rel string, b []byte) error {
		switch filepath.Base(rel) {
		case "cert_chain":
			if _, err := snp.ParseChain(b); err != nil {
				return fmt.Errorf("%w: %s: %w", ErrFormat, rel, err)
			}
			s.AMDChains = append(s.AMDChains, b)
		case "crl":
			if _, err := snp.ParseCRL(b); err != nil {
				return fmt.Errorf("%w: %s: %w", ErrFormat, rel, err)
			}
			s.AMDCRLs = append(s.AMDCRLs, b)
		default:
			if strings.HasPrefix(rel, AMDDir+"/vcek/") && strings.HasSuffix(rel, ".der") {
				if _, err := x509.ParseCertificate(b); err != nil {
					return fmt.Errorf("%w: %s: %w", ErrFormat, rel, err)
				}
				s.AMDVCEKs = append(s.AMDVCEKs, b)
				return nil
			}
			return fmt.Errorf("%w: %s: want {vcek|vlek}/v1/LINE/{cert_chain|crl} or vcek/v1/LINE/CHIPID-TCB.der", ErrFormat, rel)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if err := walk(dir, NVIDIAOCSPDir, func(rel string, b []byte) error {
		if !strings.HasSuffix(rel, ".der") {
			return fmt.Errorf("%w: %s: want SERIAL.der", ErrFormat, rel)
		}
		if _, err := nvidia.ParseOCSPResponse(b); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrFormat, rel, err)
		}
		s.OCSP = append(s.OCSP, b)
		return nil
	}); err != nil {
		return nil, err
	}
	if err := walk(dir, NVIDIARIMDir, func(rel string, b []byte) error {
		id, ok := strings.CutSuffix(filepath.Base(rel), ".xml")
		if !ok {
			return fmt.Errorf("%w: %s: want RIM_ID.xml", ErrFormat, rel)
		}
		r, err := nvidia.ParseRIM(b)
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrFormat, rel, err)
		}
		s.RIMs[id] = r
		return nil
	}); err != nil {
		return nil, err
	}
	return s, nil
}

// walk calls fn for every regular file under dir/sub in lexical order,
// with its path relative to dir.
func walk(dir, sub string, fn func(rel string, b []byte) error) error {
	root := filepath.Join(dir, filepath.FromSlash(sub))
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == root {
				return fs.SkipDir
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%w: %s is not a regular file", ErrFormat, p)
		}
		files = append(files, p)
		return nil
	})
	if err != nil && !errors.Is(err, fs.SkipDir) {
		return fmt.Errorf("loading collateral: %w", err)
	}
	sort.Strings(files)
	for _, p := range files {
		b, err := readBounded(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if err := fn(filepath.ToSlash(rel), b); err != nil {
			return fmt.Errorf("loading collateral: %w", err)
		}
	}
	return nil
}

func readBounded(p string) ([]byte, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("loading collateral: %w", err)
	}
	if st.Size() > maxFile {
		return nil, fmt.Errorf("loading collateral: %w: %s is %d bytes", ErrFormat, p, st.Size())
	}
	return os.ReadFile(p)
}

// IntelGetter serves the Intel collateral of the set: the file whose TCB
// info is for the request's TEE and FMSPC, preferring the one whose PCK
// CRL is the request's CA's. It answers pcs.ErrCollateralUnavailable when
// the set has none for the platform.
func (s *Set) IntelGetter() pcs.Getter {
	return pcs.GetterFunc(func(_ context.Context, req pcs.CollateralRequest) (*pcs.Collateral, error) {
		var match *pcs.Collateral
		for _, c := range s.Intel {
			if c.TCBInfo == nil || c.TCBInfo.FMSPC != req.FMSPC || !teeMatches(c.TCBInfo.ID, req.TEE) {
				continue
			}
			if match == nil || caMatches(c, req.CA) {
				match = c
			}
		}
		if match == nil {
			return nil, fmt.Errorf("collateral directory %s has no Intel collateral for FMSPC %X: %w", s.Dir, req.FMSPC, pcs.ErrCollateralUnavailable)
		}
		return match, nil
	})
}

func teeMatches(id string, tee pcs.TEE) bool {
	switch strings.ToUpper(id) {
	case "TDX":
		return tee == pcs.TEETDX
	case "SGX", "":
		return tee != pcs.TEETDX
	}
	return false
}

func caMatches(c *pcs.Collateral, ca string) bool {
	if len(c.PCKCRLIssuerChain) == 0 {
		return false
	}
	return strings.Contains(strings.ToLower(c.PCKCRLIssuerChain[0].Subject.CommonName), strings.ToLower(ca))
}

// RIMList returns the set's RIMs in id order.
func (s *Set) RIMList() []*nvidia.RIM {
	ids := make([]string, 0, len(s.RIMs))
	for id := range s.RIMs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	out := make([]*nvidia.RIM, len(ids))
	for i, id := range ids {
		out[i] = s.RIMs[id]
	}
	return out
}

// RIMsFor returns the set's RIMs for one device's evidence: those whose ids
// nvidia.RIMIDs derives from the report and the leaf's architecture. The
// report is parsed but not verified here; the verifier checks that each
// RIM describes the verified report.
func (s *Set) RIMsFor(report, chainPEM []byte) []*nvidia.RIM {
	var out []*nvidia.RIM
	for _, id := range s.RIMIDsFor(report, chainPEM) {
		out = append(out, s.RIMs[id])
	}
	return out
}

// RIMIDsFor is RIMsFor's ids: those of the device's RIMs the set holds.
func (s *Set) RIMIDsFor(report, chainPEM []byte) []string {
	rep, err := nvidia.ParseReport(report)
	if err != nil {
		return nil
	}
	certs, err := nvidia.ParseCertChain(chainPEM)
	if err != nil {
		return nil
	}
	driver, vbios := nvidia.RIMIDs(rep, nvidia.ArchFromCertificate(certs[0]))
	var out []string
	for _, id := range []string{driver, vbios} {
		if id != "" && s.RIMs[id] != nil {
			out = append(out, id)
		}
	}
	return out
}
