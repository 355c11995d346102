package simgpu

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sort"
	"time"

	"github.com/teegate/teegate/attest/nvidia"
)

// Synthetic identity of the simulated GPU. The versions cannot be mistaken
// for NVIDIA's: real driver versions are dotted numbers and real VBIOS
// versions five hex pairs.
const (
	DefaultDriverVersion = "0.0.0-simulated"
	DefaultVBIOSVersion  = "00.00.00.00.00-simulated"
	// ChipName starts every certificate common name; nvidia.Verify derives
	// the architecture "simulated" from the leaf's.
	ChipName = "SIMULATED"
	// DefaultBlocks is the number of measurement blocks in a report.
	DefaultBlocks = 8
)

// Validity of the generated device certificates. Real GPU device
// certificates run to 9999-12-31 as well; fixed dates keep NewGPU free of
// clock reads.
var (
	notBefore = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	notAfter  = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
)

type config struct {
	driver, vbios string
	measurements  map[int][]byte
	fwid          []byte
	opaqueFWID    []byte
	rand          io.Reader
}

// Option configures NewGPU.
type Option func(*config)

// WithDriverVersion sets the driver version the opaque data reports.
func WithDriverVersion(v string) Option { return func(c *config) { c.driver = v } }

// WithVBIOSVersion sets the VBIOS version the opaque data reports (as
// text, the way NVSwitches report theirs).
func WithVBIOSVersion(v string) Option { return func(c *config) { c.vbios = v } }

// WithMeasurements replaces the measurement blocks: SPDM block index
// (1..254) to value (48 bytes, a SHA-384 digest, for NVIDIA-like RIMs).
func WithMeasurements(m map[int][]byte) Option {
	return func(c *config) {
		c.measurements = make(map[int][]byte, len(m))
		for k, v := range m {
			c.measurements[k] = append([]byte(nil), v...)
		}
	}
}

// WithFWID sets the firmware ID put in both the leaf certificate and the
// opaque data.
func WithFWID(fwid []byte) Option {
	return func(c *config) { c.fwid = append([]byte(nil), fwid...) }
}

// WithOpaqueFWID makes the report's opaque data claim a FWID other than
// the certificate's, to produce evidence the verifier must reject.
func WithOpaqueFWID(fwid []byte) Option {
	return func(c *config) { c.opaqueFWID = append([]byte(nil), fwid...) }
}

// WithRand sets the randomness source for keys, serial numbers, responder
// nonces and signatures (crypto/rand by default).
func WithRand(r io.Reader) Option { return func(c *config) { c.rand = r } }

// GPU is a simulated confidential-computing GPU. Safe for concurrent use.
type GPU struct {
	leafKey  *ecdsa.PrivateKey
	chainPEM []byte
	record   []byte // the measurement record of every report
	nBlocks  int
	opaque   []byte
	rand     io.Reader
}

// NewGPU creates a simulated GPU whose 5-certificate chain (leaf "FMC LF",
// "BROM", "Provisioner ICA 1", "Identity", root) mirrors NVIDIA's, under
// root, which rootKey signs for. Every key below the root is a fresh P-384
// key.
func NewGPU(root *x509.Certificate, rootKey crypto.Signer, opts ...Option) (*GPU, error) {
	if root == nil || rootKey == nil {
		return nil, errors.New("creating simulated GPU: root and root key are required")
	}
	c := &config{driver: DefaultDriverVersion, vbios: DefaultVBIOSVersion, rand: rand.Reader}
	for _, o := range opts {
		o(c)
	}
	if c.measurements == nil {
		c.measurements = make(map[int][]byte, DefaultBlocks)
		for i := 1; i <= DefaultBlocks; i++ {
			sum := sha512.Sum384(fmt.Appendf(nil, "teegate/simgpu/measurement/%d", i))
			c.measurements[i] = sum[:]
		}
	}
	if c.fwid == nil {
		sum := sha512.Sum384([]byte("teegate/simgpu/firmware"))
		c.fwid = sum[:]
	}
	g := &GPU{rand: c.rand}
	if err := g.buildChain(root, rootKey, c); err != nil {
		return nil, fmt.Errorf("creating simulated GPU: %w", err)
	}
	if err := g.buildBody(c); err != nil {
		return nil, fmt.Errorf("creating simulated GPU: %w", err)
	}
	return g, nil
}

// compositeDeviceID is the TCG DICE composite device identifier NVIDIA
// puts in its leaf certificates under 2.23.133.5.4.1.
type compositeDeviceID struct {
	Version  int
	DeviceID asn1.RawValue
	FWID     struct {
		HashAlg asn1.ObjectIdentifier
		Digest  []byte
	}
}

var oidSHA384 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}

func (g *GPU) buildChain(root *x509.Certificate, rootKey crypto.Signer, c *config) error {
	names := []string{ChipName + " GPU Identity", ChipName + " GPU Provisioner ICA 1", ChipName + " GPU BROM"}
	parent, parentKey := root, rootKey
	var chain []*x509.Certificate
	for _, cn := range names {
		key, err := ecdsa.GenerateKey(elliptic.P384(), c.rand)
		if err != nil {
			return fmt.Errorf("generating key: %w", err)
		}
		cert, err := g.issue(&x509.Certificate{
			Subject:               pkix.Name{CommonName: cn, Organization: []string{"teegate simulated TEE"}},
			KeyUsage:              x509.KeyUsageCertSign,
			BasicConstraintsValid: true,
			IsCA:                  true,
		}, parent, parentKey, &key.PublicKey, c.rand)
		if err != nil {
			return err
		}
		chain = append([]*x509.Certificate{cert}, chain...)
		parent, parentKey = cert, key
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P384(), c.rand)
	if err != nil {
		return fmt.Errorf("generating key: %w", err)
	}
	var cdi compositeDeviceID
	cdi.Version = 1
	cdi.DeviceID = asn1.RawValue{FullBytes: parent.RawSubjectPublicKeyInfo}
	cdi.FWID.HashAlg = oidSHA384
	cdi.FWID.Digest = c.fwid
	ext, err := asn1.Marshal(cdi)
	if err != nil {
		return fmt.Errorf("encoding the DICE extension: %w", err)
	}
	leaf, err := g.issue(&x509.Certificate{
		Subject:         pkix.Name{CommonName: ChipName + " GPU FMC LF", Organization: []string{"teegate simulated TEE"}},
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtraExtensions: []pkix.Extension{{Id: nvidia.OIDDICETcbInfo, Value: ext}},
	}, parent, parentKey, &leafKey.PublicKey, c.rand)
	if err != nil {
		return err
	}
	g.leafKey = leafKey
	for _, cert := range append(append([]*x509.Certificate{leaf}, chain...), root) {
		g.chainPEM = append(g.chainPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})...)
	}
	return nil
}

func (g *GPU) issue(tmpl, parent *x509.Certificate, parentKey crypto.Signer, pub crypto.PublicKey, r io.Reader) (*x509.Certificate, error) {
	serial, err := rand.Int(r, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("drawing a serial number: %w", err)
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore, tmpl.NotAfter = notBefore, notAfter
	der, err := x509.CreateCertificate(r, tmpl, parent, pub, parentKey)
	if err != nil {
		return nil, fmt.Errorf("issuing %q: %w", tmpl.Subject.CommonName, err)
	}
	return x509.ParseCertificate(der)
}

// buildBody precomputes the measurement record and the opaque data, which
// are the same in every report.
func (g *GPU) buildBody(c *config) error {
	idx := make([]int, 0, len(c.measurements))
	for i := range c.measurements {
		if i < 1 || i > 254 {
			return fmt.Errorf("measurement block index %d out of 1..254", i)
		}
		idx = append(idx, i)
	}
	sort.Ints(idx)
	counts := make([]byte, 4*len(idx))
	for n, i := range idx {
		v := c.measurements[i]
		// DSP0274 measurement block: Index, MeasurementSpecification (DMTF),
		// MeasurementSize, then the DMTF measurement: ValueType (mutable
		// firmware digest), ValueSize, Value.
		g.record = append(g.record, byte(i), 0x01)
		g.record = binary.LittleEndian.AppendUint16(g.record, uint16(3+len(v)))
		g.record = append(g.record, 0x01)
		g.record = binary.LittleEndian.AppendUint16(g.record, uint16(len(v)))
		g.record = append(g.record, v...)
		binary.LittleEndian.PutUint32(counts[4*n:], 1)
	}
	if len(g.record) > 0xFFFFFF || len(idx) > 255 {
		return errors.New("measurement record too large")
	}
	g.nBlocks = len(idx)
	field := func(t nvidia.OpaqueType, v []byte) {
		g.opaque = binary.LittleEndian.AppendUint16(g.opaque, uint16(t))
		g.opaque = binary.LittleEndian.AppendUint16(g.opaque, uint16(len(v)))
		g.opaque = append(g.opaque, v...)
	}
	field(nvidia.OpaqueDriverVersion, append([]byte(c.driver), 0))
	field(nvidia.OpaqueVBIOSVersion, append([]byte(c.vbios), 0))
	field(nvidia.OpaqueChipInfo, append([]byte(ChipName), 0))
	field(nvidia.OpaqueProject, []byte("SIM0\x00"))
	field(nvidia.OpaqueMeasurementCount, counts)
	field(nvidia.OpaqueNVDEC0Status, []byte{nvidia.NVDECDisabled})
	if c.opaqueFWID != nil {
		field(nvidia.OpaqueFWID, c.opaqueFWID)
	} else {
		field(nvidia.OpaqueFWID, c.fwid)
	}
	if len(g.opaque) > 1024 {
		return errors.New("opaque data exceeds 1024 bytes")
	}
	return nil
}

// ChainPEM returns the certificate chain, leaf first, root last.
func (g *GPU) ChainPEM() []byte { return append([]byte(nil), g.chainPEM...) }

// Report returns a signed attestation report for nonce in NVIDIA's format:
// the SPDM 1.1 GET_MEASUREMENTS request (all blocks, signature requested,
// slot 0) followed by the MEASUREMENTS response signed with the leaf key
// (ECDSA P-384 over SHA-384 of both messages, raw r||s), and the chain.
func (g *GPU) Report(nonce [32]byte) (report []byte, chainPEM []byte, err error) {
	var rn [nvidia.NonceSize]byte
	if _, err := io.ReadFull(g.rand, rn[:]); err != nil {
		return nil, nil, fmt.Errorf("drawing the responder nonce: %w", err)
	}
	b := make([]byte, 0, nvidia.RequestLength+8+len(g.record)+nvidia.NonceSize+2+len(g.opaque)+nvidia.SignatureSize)
	b = append(b, nvidia.SPDMVersion11, 0xE0, 0x01, 0xFF)
	b = append(b, nonce[:]...)
	b = append(b, 0x00)
	n := len(g.record)
	b = append(b, nvidia.SPDMVersion11, 0x60, 0x00, 0x00, byte(g.nBlocks), byte(n), byte(n>>8), byte(n>>16))
	b = append(b, g.record...)
	b = append(b, rn[:]...)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(g.opaque)))
	b = append(b, g.opaque...)
	sum := sha512.Sum384(b)
	r, s, err := ecdsa.Sign(g.rand, g.leafKey, sum[:])
	if err != nil {
		return nil, nil, fmt.Errorf("signing the report: %w", err)
	}
	sig := make([]byte, nvidia.SignatureSize)
	r.FillBytes(sig[:nvidia.SignatureSize/2])
	s.FillBytes(sig[nvidia.SignatureSize/2:])
	return append(b, sig...), g.ChainPEM(), nil
}

// NewRoot creates a self-signed P-384 root for simulated GPUs, valid over
// the same fixed period as the device certificates. Tests and the
// simulated TEE use it; production trusts only NVIDIA's root.
func NewRoot(r io.Reader) (*x509.Certificate, crypto.Signer, error) {
	if r == nil {
		r = rand.Reader
	}
	key, err := ecdsa.GenerateKey(elliptic.P384(), r)
	if err != nil {
		return nil, nil, fmt.Errorf("creating simulated GPU root: %w", err)
	}
	serial, err := rand.Int(r, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("creating simulated GPU root: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: ChipName + " NVIDIA Device Identity CA (teegate)", Organization: []string{"teegate simulated TEE"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(r, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("creating simulated GPU root: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("creating simulated GPU root: %w", err)
	}
	return cert, key, nil
}
