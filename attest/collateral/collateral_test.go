package collateral

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	sevtest "github.com/google/go-sev-guest/testing"
	"golang.org/x/crypto/ocsp"

	"github.com/teegate/teegate/attest/nvidia"
	"github.com/teegate/teegate/attest/pcs"
	"github.com/teegate/teegate/attest/snp"
	"github.com/teegate/teegate/attest/tdx"
)

func read(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readHex(t testing.TB, name string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.TrimSpace(string(read(t, name))))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Times: go-tdx-guest's sample collateral is valid on nowIntel; the test
// PKIs are issued around nowTest.
var (
	nowIntel = time.Date(2023, 6, 20, 0, 0, 0, 0, time.UTC)
	nowTest  = time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
)

// pcsServer serves go-tdx-guest's sample PCS responses as the Intel PCS
// does: bodies plus URL-encoded issuer chains in headers.
func pcsServer(t *testing.T) *httptest.Server {
	tcb, qe := read(t, "sample_tcbInfo_response.json"), read(t, "sample_qeIdentity_response.json")
	tcbChain, qeChain, crlChain := read(t, "tcb_info_issuer_chain.pem"), read(t, "qe_identity_issuer_chain.pem"), read(t, "pck_crl_issuer_chain.pem")
	pckCRL, rootCRL := read(t, "pckcrl_platform.der"), read(t, "rootcrl.der")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/tdx/certification/v4/tcb" && strings.EqualFold(r.URL.Query().Get("fmspc"), "50806f000000"):
			w.Header().Set("TCB-Info-Issuer-Chain", url.PathEscape(string(tcbChain)))
			w.Write(tcb)
		case r.URL.Path == "/tdx/certification/v4/qe/identity":
			w.Header().Set("SGX-Enclave-Identity-Issuer-Chain", url.PathEscape(string(qeChain)))
			w.Write(qe)
		case r.URL.Path == "/sgx/certification/v4/pckcrl" && r.URL.Query().Get("ca") == "platform":
			w.Header().Set("SGX-PCK-CRL-Issuer-Chain", url.PathEscape(string(crlChain)))
			w.Write(pckCRL)
		case r.URL.Path == "/sgx/certification/v4/rootcacrl":
			w.Write(rootCRL)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// amdSigner is a test-only Milan chain in AMD's formats (go-sev-guest).
func amdSigner(t testing.TB) *sevtest.AmdSigner {
	t.Helper()
	created := nowTest.Add(-24 * time.Hour)
	tcb := kds.TCBParts{BlSpl: 4, SnpSpl: 24, UcodeSpl: 219}
	b := &sevtest.AmdSignerBuilder{
		Keys: sevtest.DefaultAmdKeys(), ProductName: "Milan-B0", CSPID: "teegate-test",
		ArkCreationTime: created, AskCreationTime: created, AsvkCreationTime: created, VcekCreationTime: created, VlekCreationTime: created,
		VcekCustom: sevtest.CertOverride{Extensions: sevtest.CustomExtensions(tcb, make([]byte, abi.ChipIDSize), "", "Milan-B0")},
		VlekCustom: sevtest.CertOverride{Extensions: sevtest.CustomExtensions(tcb, nil, "teegate-test", "Milan-B0")},
	}
	s, err := b.TestOnlyCertChain()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func pemOf(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// kdsServer serves AMD KDS's cert_chain (PEM) and crl (DER, signed by the
// ARK) for Milan; other product lines are 404.
func kdsServer(t *testing.T, s *sevtest.AmdSigner, next time.Time) *httptest.Server {
	crl, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: nowTest.Add(-time.Hour),
		NextUpdate: next, SignatureAlgorithm: x509.SHA384WithRSAPSS}, s.Ark, s.Keys.Ark)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/vcek/v1/Milan/cert_chain":
			w.Write(pemOf(s.Ask, s.Ark))
		case "/vlek/v1/Milan/cert_chain":
			w.Write(pemOf(s.Asvk, s.Ark))
		case "/vcek/v1/Milan/crl", "/vlek/v1/Milan/crl":
			w.Write(crl)
		case "/vcek/v1/Milan/" + strings.Repeat("00", abi.ChipIDSize):
			if r.URL.RawQuery != "blSPL=4&teeSPL=0&snpSPL=24&ucodeSPL=219" {
				http.Error(w, "no such TCB", http.StatusNotFound)
				return
			}
			w.Write(s.Vcek.Raw)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// gpuPKI is a device chain (root, CA, device leaf with the genuine Blackwell
// leaf's extensions) and the genuine Blackwell report re-signed by the leaf.
type gpuPKI struct {
	root, ca, leaf *x509.Certificate
	rootKey, caKey *ecdsa.PrivateKey
	chain, report  []byte
	roots          *x509.CertPool
}

func newGPUPKI(t testing.TB) *gpuPKI {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	p := &gpuPKI{rootKey: key(), caKey: key()}
	leafKey := key()
	issue := func(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, priv *ecdsa.PrivateKey) *x509.Certificate {
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, priv)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c
	}
	tmpl := func(sn int64, cn string, ca bool) *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(sn), Subject: pkix.Name{CommonName: cn}, IsCA: ca, BasicConstraintsValid: ca,
			KeyUsage: x509.KeyUsageCertSign, NotBefore: nowTest.Add(-24 * time.Hour), NotAfter: nowTest.Add(365 * 24 * time.Hour)}
	}
	rt := tmpl(1, "test Device Identity CA", true)
	p.root = issue(rt, rt, &p.rootKey.PublicKey, p.rootKey)
	p.ca = issue(tmpl(2, "test GB100 Identity", true), p.root, &p.caKey.PublicKey, p.rootKey)
	realChain, err := nvidia.ParseCertChain(read(t, "sdk_blackwell_chain.pem"))
	if err != nil {
		t.Fatal(err)
	}
	lt := tmpl(3, "", false)
	lt.Subject, lt.KeyUsage = realChain[0].Subject, x509.KeyUsageDigitalSignature
	for _, e := range realChain[0].Extensions {
		if e.Id.Equal(nvidia.OIDDICETcbInfoBlackwell) {
			lt.ExtraExtensions = append(lt.ExtraExtensions, e)
		}
	}
	p.leaf = issue(lt, p.ca, &leafKey.PublicKey, p.caKey)
	p.chain = pemOf(p.leaf, p.ca, p.root)
	p.report = resign(t, readHex(t, "sdk_blackwell_report.hex"), leafKey)
	p.roots = x509.NewCertPool()
	p.roots.AddCert(p.root)
	return p
}

func resign(t testing.TB, report []byte, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	out := bytes.Clone(report)
	signed := out[:len(out)-nvidia.SignatureSize]
	sum := sha512.Sum384(signed)
	sig, err := ecdsa.SignASN1(rand.Reader, key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	var rs struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(sig, &rs); err != nil {
		t.Fatal(err)
	}
	rs.R.FillBytes(out[len(signed) : len(signed)+nvidia.SignatureSize/2])
	rs.S.FillBytes(out[len(signed)+nvidia.SignatureSize/2:])
	return out
}

// ocspServer answers RFC 6960 POST requests for the CA certificate of p
// with the given status, signed by the root (the CA's issuer); unknown
// serials get the "unauthorized" error response, as a real responder does.
func ocspServer(t *testing.T, p *gpuPKI, status int, next time.Time, requests *[]string) *httptest.Server {
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req, err := ocsp.ParseRequest(body)
		if err != nil || r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/ocsp-request" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		*requests = append(*requests, req.SerialNumber.Text(16))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/ocsp-response")
		if req.SerialNumber.Cmp(p.ca.SerialNumber) != 0 {
			w.Write(ocsp.UnauthorizedErrorResponse)
			return
		}
		tmpl := ocsp.Response{Status: status, SerialNumber: req.SerialNumber, ThisUpdate: nowTest.Add(-time.Hour), NextUpdate: next}
		if status == ocsp.Revoked {
			tmpl.RevokedAt, tmpl.RevocationReason = nowTest.Add(-time.Hour), ocsp.KeyCompromise
		}
		der, err := ocsp.CreateResponse(p.root, p.root, tmpl, p.rootKey)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Write(der)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// rimServer serves GET /v1/rim/{id} in the RIM service's JSON for the one
// genuine VBIOS RIM of the testdata.
func rimServer(t *testing.T) *httptest.Server {
	xml := read(t, "1010_0205_862_9600740020_PROD.swidtag")
	sum := sha256.Sum256(xml)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := strings.TrimPrefix(r.URL.Path, "/v1/rim/")
		if id != "NV_GPU_VBIOS_1010_0205_862_9600740020" {
			http.Error(w, `{"error":"not found"}`, http.StatusNotFound)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"id": id, "rim": base64.StdEncoding.EncodeToString(xml), "sha256": hex.EncodeToString(sum[:]),
			"rim_format": "SWID", "last_updated": "2025-01-01T00:00:00Z"})
	}))
	t.Cleanup(srv.Close)
	return srv
}

func snpReport(t testing.TB, s *sevtest.AmdSigner) []byte {
	t.Helper()
	raw := sevtest.CreateRawReport(&sevtest.TestReportOptions{ReportData: bytes.Repeat([]byte{0xab}, 64)})
	r := raw[:abi.ReportSize]
	v, _ := kds.ComposeTCBParts(kds.TCBParts{BlSpl: 4, SnpSpl: 24, UcodeSpl: 219})
	for _, off := range []int{0x38, 0x180, 0x1E0} {
		for i := 0; i < 8; i++ {
			r[off+i] = byte(uint64(v) >> (8 * i))
		}
	}
	R, S, err := s.Sign(abi.SignedComponent(r))
	if err != nil {
		t.Fatal(err)
	}
	if err := abi.SetSignature(R, S, r); err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(r)
}

// TestFetchThenVerifyOffline fetches every kind of collateral from test
// services speaking the vendors' formats, then verifies from the directory
// alone: revocation included, and stale collateral fails by name.
func TestFetchThenVerifyOffline(t *testing.T) {
	ctx := context.Background()
	amd := amdSigner(t)
	gpu := newGPUPKI(t)
	var ocspRequests []string
	out := t.TempDir()
	f := &Fetcher{
		IntelURL: pcsServer(t).URL, AMDURL: kdsServer(t, amd, nowTest.Add(24*time.Hour)).URL,
		NVIDIAOCSPURL: ocspServer(t, gpu, ocsp.Good, nowTest.Add(24*time.Hour), &ocspRequests).URL, NVIDIARIMURL: rimServer(t).URL,
		Now: func() time.Time { return nowIntel },
	}
	quote := read(t, "tdx_prod_quote_SPR_E4.dat")
	if _, err := f.Intel(ctx, "tdx", quote, out); err != nil {
		t.Fatal(err)
	}
	files, err := f.AMD(ctx, []string{"Milan", "Genoa"}, out)
	if len(files) != 4 || !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "Genoa") {
		t.Fatalf("AMD: %d files, err %v (want Milan's 4 files and Genoa unavailable)", len(files), err)
	}
	rep := snpReport(t, amd)
	if _, err := f.AMDVCEK(ctx, rep, []string{"Genoa", "Milan"}, out); err != nil {
		t.Fatalf("VCEK: %v", err)
	}
	hopper := nvidia.Evidence{Report: readHex(t, "sdk_hopper_report.hex"), Chain: read(t, "sdk_hopper_chain.pem")}
	files, err = f.NVIDIA(ctx, []nvidia.Evidence{{Report: gpu.report, Chain: gpu.chain}, hopper}, out)
	// The test responder knows only the test CA; the RIM service only the
	// Hopper VBIOS RIM: the rest is reported unavailable, the rest written.
	if !errors.Is(err, ErrUnavailable) || len(files) != 2 {
		t.Fatalf("NVIDIA: files %v, err %v", files, err)
	}
	if ocspRequests[0] != gpu.ca.SerialNumber.Text(16) {
		t.Fatalf("OCSP requests %v: the device leaf and the root must not be asked about", ocspRequests)
	}

	set, err := Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.AMDVCEKs) != 1 {
		t.Fatalf("loaded %d VCEKs", len(set.AMDVCEKs))
	}
	if len(set.Intel) != 1 || len(set.AMDChains) != 2 || len(set.AMDCRLs) != 2 || len(set.OCSP) != 1 || len(set.RIMs) != 1 {
		t.Fatalf("loaded %d intel, %d chains, %d CRLs, %d OCSP, %d RIMs", len(set.Intel), len(set.AMDChains), len(set.AMDCRLs), len(set.OCSP), len(set.RIMs))
	}

	// Intel: the fetched collateral is used offline (its signatures and
	// CRLs check out; go-tdx-guest's sample TCB info deliberately lists
	// only levels newer than its sample quote, so the verdict is
	// ErrTCBNotSupported, reached only after the collateral checks).
	if _, err := tdx.Verify(ctx, quote, tdx.Options{Getter: set.IntelGetter(), Now: func() time.Time { return nowIntel }, CheckCRL: true}); !errors.Is(err, pcs.ErrTCBNotSupported) {
		t.Fatalf("TDX with fetched collateral: %v, want ErrTCBNotSupported", err)
	}
	if _, err := tdx.Verify(ctx, quote, tdx.Options{Getter: set.IntelGetter(), Now: func() time.Time { return nowIntel.AddDate(0, 3, 0) }}); !errors.Is(err, pcs.ErrCollateralExpired) {
		t.Fatalf("TDX with stale collateral: %v, want ErrCollateralExpired", err)
	}

	// AMD: VCEK, chain and CRL from the directory.
	sopts := snp.Options{VCEKCandidates: set.AMDVCEKs, CertChain: set.AMDChains[0], CRLs: set.AMDCRLs, RequireCRL: true, Now: nowTest}
	if bytes.Contains(set.AMDChains[0], pemOf(amd.Asvk)) {
		sopts.CertChain = set.AMDChains[1]
	}
	if _, err := snp.Verify(ctx, rep, sopts); err != nil {
		t.Fatalf("SNP with collateral: %v", err)
	}
	sopts.Now = nowTest.Add(48 * time.Hour)
	if _, err := snp.Verify(ctx, rep, sopts); !errors.Is(err, snp.ErrCRLExpired) {
		t.Fatalf("SNP with a stale CRL: %v, want ErrCRLExpired", err)
	}

	// NVIDIA: OCSP required and present; stale later.
	nopts := nvidia.Options{Roots: gpu.roots, Now: nowTest, OCSPResponses: set.OCSP, RequireOCSP: true}
	if _, err := nvidia.Verify(ctx, nvidia.Evidence{Report: gpu.report, Chain: gpu.chain}, nopts); err != nil {
		t.Fatalf("GPU with OCSP: %v", err)
	}
	nopts.Now = nowTest.Add(48 * time.Hour)
	if _, err := nvidia.Verify(ctx, nvidia.Evidence{Report: gpu.report, Chain: gpu.chain}, nopts); !errors.Is(err, nvidia.ErrOCSPStale) {
		t.Fatalf("GPU with stale OCSP: %v, want ErrOCSPStale", err)
	}
	// The fetched RIM is the genuine VBIOS RIM of the Hopper report.
	rim := set.RIMs["NV_GPU_VBIOS_1010_0205_862_9600740020"]
	if rim == nil || !strings.EqualFold(rim.Version, "96.00.74.00.20") {
		t.Fatalf("RIM %+v", rim)
	}
}

// TestRealIntelCollateralDir: the real dcap-qvl collateral placed in the
// layout evaluates the real v4 quote's TCB offline.
func TestRealIntelCollateralDir(t *testing.T) {
	dir := t.TempDir()
	if _, err := write(dir, "intel/tdx-B0C06F000000-platform.json", read(t, "tdx_quote_v4_collateral.json")); err != nil {
		t.Fatal(err)
	}
	set, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	at := func(s string) func() time.Time {
		tm, _ := time.Parse(time.RFC3339, s)
		return func() time.Time { return tm }
	}
	c, err := tdx.Verify(context.Background(), read(t, "tdx_quote_v4.bin"), tdx.Options{Getter: set.IntelGetter(), Now: at("2025-07-01T00:00:00Z"), CheckCRL: true})
	if err != nil || c.TCB == nil || c.TCB.Status == "" {
		t.Fatalf("claims %+v, err %v", c, err)
	}
	if _, err := tdx.Verify(context.Background(), read(t, "tdx_quote_v4.bin"), tdx.Options{Getter: set.IntelGetter(), Now: at("2025-08-01T00:00:00Z")}); !errors.Is(err, pcs.ErrCollateralExpired) {
		t.Fatalf("stale: %v, want ErrCollateralExpired", err)
	}
}

// TestFetchRevoked: a responder that says revoked makes offline
// verification fail with ErrCertRevoked.
func TestFetchRevoked(t *testing.T) {
	ctx := context.Background()
	gpu := newGPUPKI(t)
	var reqs []string
	out := t.TempDir()
	f := &Fetcher{NVIDIAOCSPURL: ocspServer(t, gpu, ocsp.Revoked, nowTest.Add(time.Hour), &reqs).URL, NVIDIARIMURL: rimServer(t).URL}
	if _, err := f.NVIDIA(ctx, []nvidia.Evidence{{Report: gpu.report, Chain: gpu.chain}}, out); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("fetch: %v (the RIMs of the test report are unknown)", err)
	}
	set, err := Load(out)
	if err != nil {
		t.Fatal(err)
	}
	_, err = nvidia.Verify(ctx, nvidia.Evidence{Report: gpu.report, Chain: gpu.chain}, nvidia.Options{Roots: gpu.roots, Now: nowTest, OCSPResponses: set.OCSP})
	if !errors.Is(err, nvidia.ErrCertRevoked) {
		t.Fatalf("err = %v, want ErrCertRevoked", err)
	}
}

// TestLoadErrors: every malformed or misplaced file fails Load by name.
func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct{ rel, content string }{
		{"intel/tdx-50806F000000-platform.json", "{}"},
		{"intel/notes.txt", "x"},
		{"amd/vcek/v1/Milan/cert_chain", "junk"},
		{"amd/vcek/v1/Milan/crl", "junk"},
		{"amd/vcek/v1/Milan/other", "x"},
		{"amd/vcek/v1/Milan/00-00.der", "junk"},
		{"nvidia/ocsp/01.der", "junk"},
		{"nvidia/ocsp/01.txt", "x"},
		{"nvidia/rims/NV_GPU_DRIVER_GH100_1.xml", "<x/>"},
		{"nvidia/rims/readme", "x"},
	} {
		t.Run(tc.rel, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := write(dir, tc.rel, []byte(tc.content)); err != nil {
				t.Fatal(err)
			}
			if _, err := Load(dir); !errors.Is(err, ErrFormat) {
				t.Fatalf("Load = %v, want ErrFormat", err)
			}
		})
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("missing directory loaded")
	}
	empty, err := Load(t.TempDir())
	if err != nil || len(empty.Intel)+len(empty.OCSP)+len(empty.AMDCRLs)+len(empty.RIMs) != 0 {
		t.Fatalf("empty dir: %+v, %v", empty, err)
	}
	if _, err := empty.IntelGetter().GetCollateral(context.Background(), pcs.CollateralRequest{TEE: pcs.TEETDX}); !errors.Is(err, pcs.ErrCollateralUnavailable) {
		t.Fatalf("empty getter: %v", err)
	}
}

func TestParseRIMResponseErrors(t *testing.T) {
	xml := read(t, "1010_0205_862_9600740020_PROD.swidtag")
	good := func(mut func(m map[string]any)) []byte {
		sum := sha256.Sum256(xml)
		m := map[string]any{"id": "X", "rim": base64.StdEncoding.EncodeToString(xml), "sha256": hex.EncodeToString(sum[:])}
		mut(m)
		b, _ := json.Marshal(m)
		return b
	}
	if _, err := ParseRIMResponse(good(func(map[string]any) {}), "X"); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string][]byte{
		"not JSON":     []byte("<html>"),
		"other id":     good(func(m map[string]any) { m["id"] = "Y" }),
		"not base64":   good(func(m map[string]any) { m["rim"] = "!!" }),
		"sha mismatch": good(func(m map[string]any) { m["sha256"] = strings.Repeat("00", 32) }),
		"not a RIM": good(func(m map[string]any) {
			m["rim"] = base64.StdEncoding.EncodeToString([]byte("<x/>"))
			delete(m, "sha256")
		}),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseRIMResponse(body, "X"); !errors.Is(err, ErrFormat) {
				t.Fatalf("err = %v, want ErrFormat", err)
			}
		})
	}
}

func FuzzParseRIMResponse(f *testing.F) {
	xml, err := os.ReadFile("testdata/1010_0205_862_9600740020_PROD.swidtag")
	if err != nil {
		f.Fatal(err)
	}
	b, _ := json.Marshal(map[string]string{"id": "X", "rim": base64.StdEncoding.EncodeToString(xml)})
	f.Add(b)
	f.Add([]byte(`{"id":"X","rim":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := ParseRIMResponse(b, "X")
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v does not wrap ErrFormat", err)
			}
			return
		}
		if _, err := nvidia.ParseRIM(out); err != nil {
			t.Fatal("returned XML does not parse as a RIM")
		}
	})
}

// FuzzLoad writes one fuzzed file into each place of the layout: Load must
// either accept it or fail with ErrFormat, never panic.
func FuzzLoad(f *testing.F) {
	f.Add(0, []byte("{}"))
	f.Add(1, read(f, "ask_ark_milan_vcek_kds.pem"))
	f.Add(3, []byte{0x30, 0x03, 0x0a, 0x01, 0x06})
	places := []string{"intel/tdx-X-platform.json", "amd/vcek/v1/Milan/cert_chain", "amd/vcek/v1/Milan/crl", "nvidia/ocsp/01.der", "nvidia/rims/ID.xml"}
	f.Fuzz(func(t *testing.T, where int, b []byte) {
		if where < 0 {
			where = -where
		}
		dir := t.TempDir()
		if _, err := write(dir, places[where%len(places)], b); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(dir); err != nil && !errors.Is(err, ErrFormat) {
			t.Fatalf("Load error %v does not wrap ErrFormat", err)
		}
	})
}
