package collateral

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	"golang.org/x/crypto/ocsp"

	"github.com/teegate/teegate/attest/nvidia"
	"github.com/teegate/teegate/attest/pcs"
	"github.com/teegate/teegate/attest/sgx"
	"github.com/teegate/teegate/attest/snp"
	"github.com/teegate/teegate/attest/tdx"
)

// The vendors' public services (defaults of Fetcher).
const (
	DefaultIntelURL        = "https://api.trustedservices.intel.com"
	DefaultIntelRootCRLURL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
	DefaultAMDURL          = "https://kdsintf.amd.com"
	DefaultNVIDIAOCSPURL   = "https://ocsp.ndis.nvidia.com"
	DefaultNVIDIARIMURL    = "https://rim.attestation.nvidia.com"
)

// AMDProductLines are the SEV-SNP product lines fetched by default.
var AMDProductLines = []string{"Milan", "Genoa", "Turin"}

// maxResponse bounds each service response.
const maxResponse = 8 << 20

// Fetcher downloads collateral into a directory (Load's layout). Empty URLs
// mean the vendors' public services; tests point them at httptest servers.
type Fetcher struct {
	Client          *http.Client
	IntelURL        string
	IntelRootCRLURL string
	AMDURL          string
	NVIDIAOCSPURL   string
	NVIDIARIMURL    string
	// Now is the time used when replaying a quote to learn what collateral
	// it needs (default time.Now).
	Now func() time.Time
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return strings.TrimRight(s, "/")
}

func (f *Fetcher) client() *http.Client {
	if f.Client != nil {
		return f.Client
	}
	return &http.Client{Timeout: 30 * time.Second}
}

func (f *Fetcher) now() time.Time {
	if f.Now != nil {
		return f.Now()
	}
	return time.Now()
}

// Intel fetches the Intel PCS collateral a TDX or SGX quote needs (TCB info
// and QE identity for its FMSPC, the PCK CRL of its CA, the root CA CRL)
// into out/intel/. kind is "tdx" or "sgx". It learns what the quote needs
// by verifying it with a getter that records the request, so the quote's
// own checks run too; a TCB verdict on the fetched collateral is not an
// error here.
func (f *Fetcher) Intel(ctx context.Context, kind string, quote []byte, out string) (string, error) {
	hg := pcs.NewHTTPGetter(or(f.IntelURL, DefaultIntelURL))
	hg.Client = f.client()
	hg.RootCRLURL = f.IntelRootCRLURL
	if f.IntelURL == "" && hg.RootCRLURL == "" {
		hg.RootCRLURL = DefaultIntelRootCRLURL
	}
	var got *pcs.Collateral
	var req pcs.CollateralRequest
	rec := pcs.GetterFunc(func(ctx context.Context, r pcs.CollateralRequest) (*pcs.Collateral, error) {
		c, err := hg.GetCollateral(ctx, r)
		if err == nil {
			got, req = c, r
		}
		return c, err
	})
	now := func() time.Time { return f.now() }
	var err error
	switch kind {
	case "tdx":
		_, err = tdx.Verify(ctx, quote, tdx.Options{Getter: rec, Now: now, AllowExpiredCollateral: true})
	case "sgx":
		_, err = sgx.Verify(ctx, quote, sgx.Options{Getter: rec, Now: now, AllowExpiredCollateral: true})
	default:
		return "", fmt.Errorf("fetching Intel collateral: unknown quote kind %q", kind)
	}
	if got == nil {
		if err == nil {
			err = errors.New("the quote asked for no collateral")
		}
		return "", fmt.Errorf("fetching Intel collateral: %w: %w", ErrUnavailable, err)
	}
	b, err := got.MarshalJSON()
	if err != nil {
		return "", fmt.Errorf("encoding Intel collateral: %w", err)
	}
	ca := req.CA
	if ca == "" {
		ca = pcs.CAPlatform
	}
	name := fmt.Sprintf("%s-%X-%s.json", kind, req.FMSPC, strings.ToLower(ca))
	return write(out, IntelDir+"/"+name, b)
}

// AMD fetches, for each product line, the VCEK and VLEK certificate chains
// and CRLs from AMD KDS into out/amd/{vcek|vlek}/v1/{line}/. Each CRL must
// be signed by its chain's ARK. It returns the files written and the
// failures (joined, each wrapping ErrUnavailable); a line that fails does
// not stop the others.
func (f *Fetcher) AMD(ctx context.Context, lines []string, out string) ([]string, error) {
	if len(lines) == 0 {
		lines = AMDProductLines
	}
	base := or(f.AMDURL, DefaultAMDURL)
	var files []string
	var errs []error
	for _, line := range lines {
		for _, kind := range []string{"vcek", "vlek"} {
			rel := kind + "/v1/" + url.PathEscape(line)
			chainPEM, err := f.get(ctx, http.MethodGet, base+"/"+rel+"/cert_chain", "", nil)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			chain, err := snp.ParseChain(chainPEM)
			if err != nil {
				errs = append(errs, fmt.Errorf("AMD KDS %s cert_chain: %w: %w", rel, ErrUnavailable, err))
				continue
			}
			crl, err := f.get(ctx, http.MethodGet, base+"/"+rel+"/crl", "", nil)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			parsed, err := snp.ParseCRL(crl)
			if err == nil {
				err = parsed.CheckSignatureFrom(chain.ARK)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("AMD KDS %s crl: %w: %w", rel, ErrUnavailable, err))
				continue
			}
			for name, b := range map[string][]byte{"cert_chain": chainPEM, "crl": crl} {
				p, err := write(out, AMDDir+"/"+rel+"/"+name, b)
				if err != nil {
					return files, err
				}
				files = append(files, p)
			}
		}
	}
	return files, errors.Join(errs...)
}

// AMDVCEK fetches from AMD KDS the VCEK of an SEV-SNP report that carries
// no certificate table (/vcek/v1/{line}/{CHIP_ID}?blSPL=…&teeSPL=…&snpSPL=…
// &ucodeSPL=…, DER), trying each product line until the answer is a VCEK for the report's CHIP_ID and REPORTED_TCB (its chain is
// checked when verifying), and writes it to
// out/amd/vcek/v1/{line}/{CHIP_ID hex}-{REPORTED_TCB hex}.der. Turin is
// asked with its 8-byte HWID and fmcSPL.
func (f *Fetcher) AMDVCEK(ctx context.Context, report []byte, lines []string, out string) (string, error) {
	if len(report) < abi.ReportSize {
		return "", fmt.Errorf("fetching VCEK: %w: report too short", ErrFormat)
	}
	r, err := abi.ReportToProto(report[:abi.ReportSize])
	if err != nil {
		return "", fmt.Errorf("fetching VCEK: %w: %w", ErrFormat, err)
	}
	if len(lines) == 0 {
		lines = AMDProductLines
	}
	tcb := make([]byte, 8)
	binary.LittleEndian.PutUint64(tcb, r.GetReportedTcb())
	base := or(f.AMDURL, DefaultAMDURL)
	var errs []error
	for _, line := range lines {
		chip := r.GetChipId()
		q := fmt.Sprintf("blSPL=%d&teeSPL=%d&snpSPL=%d&ucodeSPL=%d", tcb[0], tcb[1], tcb[6], tcb[7])
		if line == "Turin" {
			chip = chip[:8]
			q = fmt.Sprintf("fmcSPL=%d&blSPL=%d&teeSPL=%d&snpSPL=%d&ucodeSPL=%d", tcb[0], tcb[1], tcb[2], tcb[3], tcb[7])
		}
		der, err := f.get(ctx, http.MethodGet, base+"/vcek/v1/"+url.PathEscape(line)+"/"+hex.EncodeToString(chip)+"?"+q, "", nil)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// The offline verification checks the chain; here the answer must
		// at least be a VCEK for this chip and TCB.
		c, err := x509.ParseCertificate(der)
		var exts *kds.Extensions
		if err == nil {
			exts, err = kds.VcekCertificateExtensions(c)
		}
		if err == nil && (!bytes.Equal(exts.HWID, r.GetChipId()) || uint64(exts.TCBVersion) != r.GetReportedTcb()) {
			err = errors.New("certificate is for another chip or TCB")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("VCEK from %s: %w: %w", line, ErrUnavailable, err))
			continue
		}
		return write(out, fmt.Sprintf("%s/vcek/v1/%s/%s-%s.der", AMDDir, line, hex.EncodeToString(r.GetChipId()), hex.EncodeToString(tcb)), der)
	}
	return "", fmt.Errorf("fetching VCEK: %w", errors.Join(errs...))
}

// NVIDIA fetches, for each device's evidence, the OCSP responses of its
// certificate chain (every certificate but the device-issued leaf and the
// root, as NVIDIA's SDK checks them; SHA-384 CertIDs), its driver and VBIOS
// RIMs from the RIM service, and the OCSP responses of each RIM's signer
// chain (from the signer up), into out/nvidia/. Failures are joined,
// each wrapping ErrUnavailable.
func (f *Fetcher) NVIDIA(ctx context.Context, evs []nvidia.Evidence, out string) ([]string, error) {
	var files []string
	var errs []error
	seen := map[string]bool{}
	for i, ev := range evs {
		certs, err := nvidia.ParseCertChain(ev.Chain)
		if err != nil {
			errs = append(errs, fmt.Errorf("device %d: %w", i, err))
			continue
		}
		for j := 1; j+1 < len(certs); j++ {
			cert, issuer := certs[j], certs[j+1]
			key := cert.SerialNumber.Text(16)
			if seen["ocsp/"+key] {
				continue
			}
			der, err := f.ocsp(ctx, cert, issuer)
			if err != nil {
				errs = append(errs, fmt.Errorf("device %d: %w", i, err))
				continue
			}
			seen["ocsp/"+key] = true
			p, err := write(out, NVIDIAOCSPDir+"/"+key+".der", der)
			if err != nil {
				return files, err
			}
			files = append(files, p)
		}
		rep, err := nvidia.ParseReport(ev.Report)
		if err != nil {
			errs = append(errs, fmt.Errorf("device %d: %w", i, err))
			continue
		}
		arch := nvidia.ArchFromCertificate(certs[0])
		driver, vbios := nvidia.RIMIDs(rep, arch)
		for _, id := range []string{driver, vbios} {
			if id == "" || seen["rim/"+id] {
				continue
			}
			xml, err := f.rim(ctx, id)
			if err != nil {
				errs = append(errs, fmt.Errorf("device %d: %w", i, err))
				continue
			}
			seen["rim/"+id] = true
			p, err := write(out, NVIDIARIMDir+"/"+id+".xml", xml)
			if err != nil {
				return files, err
			}
			files = append(files, p)
			// The RIM signer chain is checked by OCSP from the signer up.
			rim, _ := nvidia.ParseRIM(xml) // ParseRIMResponse parsed it
			for j := 0; j+1 < len(rim.Certs); j++ {
				cert, issuer := rim.Certs[j], rim.Certs[j+1]
				key := cert.SerialNumber.Text(16)
				if seen["ocsp/"+key] {
					continue
				}
				der, err := f.ocsp(ctx, cert, issuer)
				if err != nil {
					errs = append(errs, fmt.Errorf("RIM %s: %w", id, err))
					continue
				}
				seen["ocsp/"+key] = true
				p, err := write(out, NVIDIAOCSPDir+"/"+key+".der", der)
				if err != nil {
					return files, err
				}
				files = append(files, p)
			}
		}
	}
	return files, errors.Join(errs...)
}

// ocsp asks NVIDIA's OCSP service about cert (RFC 6960 over HTTP POST).
func (f *Fetcher) ocsp(ctx context.Context, cert, issuer *x509.Certificate) ([]byte, error) {
	req, err := ocsp.CreateRequest(cert, issuer, &ocsp.RequestOptions{Hash: crypto.SHA384})
	if err != nil {
		return nil, fmt.Errorf("building OCSP request for %q: %w", cert.Subject.CommonName, err)
	}
	der, err := f.get(ctx, http.MethodPost, or(f.NVIDIAOCSPURL, DefaultNVIDIAOCSPURL), "application/ocsp-request", req)
	if err != nil {
		return nil, err
	}
	r, err := ocsp.ParseResponseForCert(der, cert, nil)
	if err != nil {
		return nil, fmt.Errorf("OCSP response for %q: %w: %w", cert.Subject.CommonName, ErrUnavailable, err)
	}
	if r.SerialNumber.Cmp(cert.SerialNumber) != 0 {
		return nil, fmt.Errorf("OCSP response for %q names another serial: %w", cert.Subject.CommonName, ErrUnavailable)
	}
	return der, nil
}

// rimResponse is the RIM service's answer to GET /v1/rim/{id}.
type rimResponse struct {
	ID     string `json:"id"`
	RIM    string `json:"rim"`
	SHA256 string `json:"sha256"`
}

// rim fetches one RIM and returns its SWID XML.
func (f *Fetcher) rim(ctx context.Context, id string) ([]byte, error) {
	body, err := f.get(ctx, http.MethodGet, or(f.NVIDIARIMURL, DefaultNVIDIARIMURL)+"/v1/rim/"+url.PathEscape(id), "", nil)
	if err != nil {
		return nil, err
	}
	xml, err := ParseRIMResponse(body, id)
	if err != nil {
		return nil, fmt.Errorf("RIM %s: %w: %w", id, ErrUnavailable, err)
	}
	return xml, nil
}

// ParseRIMResponse decodes the RIM service's JSON ({"id", "rim":
// base64(SWID XML), "sha256": hex of the XML, ...}) for the RIM id asked
// for, and returns the XML after checking it parses as a RIM.
func ParseRIMResponse(body []byte, id string) ([]byte, error) {
	var r rimResponse
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFormat, err)
	}
	if r.ID != id {
		return nil, fmt.Errorf("%w: response for RIM %q, asked for %q", ErrFormat, r.ID, id)
	}
	xml, err := base64.StdEncoding.DecodeString(r.RIM)
	if err != nil || len(xml) == 0 {
		return nil, fmt.Errorf("%w: rim is not base64", ErrFormat)
	}
	if r.SHA256 != "" {
		sum := sha256.Sum256(xml)
		if !strings.EqualFold(r.SHA256, hex.EncodeToString(sum[:])) {
			return nil, fmt.Errorf("%w: sha256 does not match the RIM", ErrFormat)
		}
	}
	if _, err := nvidia.ParseRIM(xml); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFormat, err)
	}
	return xml, nil
}

func (f *Fetcher) get(ctx context.Context, method, u, contentType string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("requesting %s: %w: %w", u, ErrUnavailable, err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := f.client().Do(req)
	if err != nil {
		return nil, fmt.Errorf("requesting %s: %w: %w", u, ErrUnavailable, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w: %w", u, ErrUnavailable, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("requesting %s: %w: status %d", u, ErrUnavailable, resp.StatusCode)
	}
	if len(b) > maxResponse {
		return nil, fmt.Errorf("reading %s: %w: response too large", u, ErrUnavailable)
	}
	return b, nil
}

// write stores b at out/rel, creating directories, and returns the path.
func write(out, rel string, b []byte) (string, error) {
	p := filepath.Join(out, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", fmt.Errorf("writing collateral: %w", err)
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return "", fmt.Errorf("writing collateral: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return "", fmt.Errorf("writing collateral: %w", err)
	}
	return p, nil
}
