package simtdx

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"

	"github.com/teegate/teegate/attest/pcs"
	"github.com/teegate/teegate/attest/tdx"
)

// FMSPC is the made-up platform id of simulated PCK certificates ("TEEGAT").
var FMSPC = [6]byte{'T', 'E', 'E', 'G', 'A', 'T'}

// Measurements are the TD report fields a simulated quote carries.
type Measurements struct {
	TEETCBSVN     [16]byte
	MRSEAM        [48]byte
	MRSIGNERSEAM  [48]byte
	TDAttributes  [8]byte
	XFAM          [8]byte
	MRTD          [48]byte
	MRCONFIGID    [48]byte
	MROWNER       [48]byte
	MROWNERCONFIG [48]byte
	RTMR          [4][48]byte
}

func synthetic(name string) [48]byte {
	return sha512.Sum384([]byte("teegate simulated " + name))
}

// DefaultMeasurements returns clearly synthetic measurements: each is
// SHA-384("teegate simulated <name>"); attributes are zero (not debug).
func DefaultMeasurements() Measurements {
	m := Measurements{
		MRSEAM:        synthetic("mrseam"),
		MRTD:          synthetic("mrtd"),
		MRCONFIGID:    synthetic("mrconfigid"),
		MROWNER:       synthetic("mrowner"),
		MROWNERCONFIG: synthetic("mrownerconfig"),
		XFAM:          [8]byte{0xe7, 0x02, 0x06},
	}
	for i := range m.RTMR {
		m.RTMR[i] = synthetic(fmt.Sprintf("rtmr%d", i))
	}
	return m
}

// Quoter signs simulated quotes. It is safe for concurrent use.
type Quoter struct {
	m        Measurements
	ak       *ecdsa.PrivateKey
	akRaw    []byte
	chainPEM []byte
	qeReport pcs.EnclaveReport
	qeSig    [64]byte
	authData []byte
}

// NewQuoter creates the simulated PCK chain under root/rootKey, a QE report
// binding a fresh attestation key, and returns a Quoter. At most one
// Measurements may be given; none means DefaultMeasurements.
func NewQuoter(root *x509.Certificate, rootKey crypto.Signer, m ...Measurements) (*Quoter, error) {
	if root == nil || rootKey == nil {
		return nil, errors.New("creating simulated quoter: root and key are required")
	}
	if len(m) > 1 {
		return nil, errors.New("creating simulated quoter: more than one Measurements")
	}
	q := &Quoter{m: DefaultMeasurements()}
	if len(m) == 1 {
		q.m = m[0]
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("creating simulated quoter: %w", err)
	}
	pckKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("creating simulated quoter: %w", err)
	}
	if q.ak, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, fmt.Errorf("creating simulated quoter: %w", err)
	}
	if q.akRaw, err = pcs.RawP256Key(&q.ak.PublicKey); err != nil {
		return nil, fmt.Errorf("creating simulated quoter: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(2),
		Subject:               pkix.Name{CommonName: "teegate simulated PCK Platform CA", Organization: []string{"teegate simulated"}},
		NotBefore:             root.NotBefore,
		NotAfter:              root.NotAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, root, &caKey.PublicKey, rootKey)
	if err != nil {
		return nil, fmt.Errorf("creating simulated PCK CA: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("creating simulated PCK CA: %w", err)
	}
	ext, err := pcs.MarshalPCKExtensions(&pcs.PCKExtensions{
		PPID:  sha256Prefix("teegate simulated ppid", 16),
		TCB:   pcs.PCKTCB{PCESVN: 1},
		FMSPC: FMSPC,
	})
	if err != nil {
		return nil, fmt.Errorf("creating simulated PCK certificate: %w", err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber:    big.NewInt(3),
		Subject:         pkix.Name{CommonName: "teegate simulated SGX PCK Certificate", Organization: []string{"teegate simulated"}},
		NotBefore:       root.NotBefore,
		NotAfter:        root.NotAfter,
		KeyUsage:        x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		ExtraExtensions: []pkix.Extension{{Id: pcs.OIDSGXExtensions, Value: ext}},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &pckKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("creating simulated PCK certificate: %w", err)
	}
	for _, der := range [][]byte{leafDER, caDER, root.Raw} {
		q.chainPEM = append(q.chainPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	// Quoting libraries end the chain with a NUL; keep the real shape.
	q.chainPEM = append(q.chainPEM, 0)

	q.authData = sha256Prefix("teegate simulated qe auth data", 32)
	h := sha256.New()
	h.Write(q.akRaw)
	h.Write(q.authData)
	q.qeReport = pcs.EnclaveReport{
		MRENCLAVE:  sha256.Sum256([]byte("teegate simulated qe mrenclave")),
		MRSIGNER:   sha256.Sum256([]byte("teegate simulated qe mrsigner")),
		ISVProdID:  2,
		ISVSVN:     1,
		Attributes: [16]byte{pcs.AttributeInit | pcs.AttributeMode64},
	}
	copy(q.qeReport.ReportData[:32], h.Sum(nil))
	sig, err := sign(pckKey, q.qeReport.Marshal())
	if err != nil {
		return nil, fmt.Errorf("signing simulated QE report: %w", err)
	}
	copy(q.qeSig[:], sig)
	return q, nil
}

// Quote returns a TDX v4 quote over the measurements and reportData.
func (q *Quoter) Quote(reportData [64]byte) ([]byte, error) {
	quote := &tdx.Quote{
		Header: tdx.Header{
			Version:            4,
			AttestationKeyType: tdx.KeyTypeECDSAP256,
			TEEType:            tdx.TEETypeTDX,
		},
		BodyType: tdx.BodyTypeTD10,
		Body: tdx.Body{
			TEETCBSVN:     q.m.TEETCBSVN,
			MRSEAM:        q.m.MRSEAM,
			MRSIGNERSEAM:  q.m.MRSIGNERSEAM,
			TDAttributes:  q.m.TDAttributes,
			XFAM:          q.m.XFAM,
			MRTD:          q.m.MRTD,
			MRCONFIGID:    q.m.MRCONFIGID,
			MROWNER:       q.m.MROWNER,
			MROWNERCONFIG: q.m.MROWNERCONFIG,
			RTMR:          q.m.RTMR,
			ReportData:    reportData,
		},
		Certification: tdx.QEReportCertificationData{
			QEReport:          q.qeReport,
			QEReportSignature: q.qeSig,
			QEAuthData:        q.authData,
			PCK:               tdx.CertificationData{Type: tdx.CertTypePCKChain, Data: q.chainPEM},
		},
	}
	copy(quote.AttestationKey[:], q.akRaw)
	sig, err := sign(q.ak, quote.AppendSigned(nil))
	if err != nil {
		return nil, fmt.Errorf("signing simulated quote: %w", err)
	}
	copy(quote.Signature[:], sig)
	return quote.Marshal(), nil
}

func sign(key *ecdsa.PrivateKey, msg []byte) ([]byte, error) {
	h := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(rand.Reader, key, h[:])
	if err != nil {
		return nil, err
	}
	return pcs.RawSignature(r, s), nil
}

func sha256Prefix(s string, n int) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:n]
}
