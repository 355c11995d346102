package sgx

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/teegate/teegate/attest/pcs"
)

// Layout constants ("Intel SGX ECDSA Quote Library API", A.4: quote header,
// ISV enclave report body, quote signature data, certification data).
const (
	HeaderSize       = 48
	TEETypeSGX       = 0
	KeyTypeECDSAP256 = 2
	// CertTypePCKChain is a PEM PCK leaf || intermediate || root chain.
	CertTypePCKChain = 5
)

// Header is the 48-byte SGX quote header.
type Header struct {
	Version            uint16
	AttestationKeyType uint16
	// TEEType is zero for SGX (bytes 4..8, reserved in early v3 docs).
	TEEType    uint32
	QESVN      uint16
	PCESVN     uint16
	QEVendorID [16]byte
	UserData   [20]byte
}

// CertificationData is a (type, data) pair.
type CertificationData struct {
	Type uint16
	Data []byte
}

// Quote is a parsed SGX v3 quote. Marshal re-encodes it byte for byte.
type Quote struct {
	Header            Header
	Report            pcs.EnclaveReport
	Signature         [64]byte
	AttestationKey    [64]byte
	QEReport          pcs.EnclaveReport
	QEReportSignature [64]byte
	QEAuthData        []byte
	Certification     CertificationData
	// Trailing holds unsigned bytes after the signature data.
	Trailing []byte
}

// ParseQuote parses an SGX ECDSA quote, version 3.
func ParseQuote(b []byte) (*Quote, error) {
	// Header, ISV enclave report, signature data length, quote signature and
	// attestation key are fixed; the QE report certification data follows.
	const fixed = HeaderSize + pcs.EnclaveReportSize + 4 + 64 + 64
	if len(b) < HeaderSize {
		return nil, fmt.Errorf("parsing SGX quote: header: %d bytes, need %d: %w", len(b), HeaderSize, ErrQuoteFormat)
	}
	q := &Quote{}
	h := b[:HeaderSize]
	q.Header = Header{
		Version:            binary.LittleEndian.Uint16(h[0:2]),
		AttestationKeyType: binary.LittleEndian.Uint16(h[2:4]),
		TEEType:            binary.LittleEndian.Uint32(h[4:8]),
		QESVN:              binary.LittleEndian.Uint16(h[8:10]),
		PCESVN:             binary.LittleEndian.Uint16(h[10:12]),
	}
	copy(q.Header.QEVendorID[:], h[12:28])
	copy(q.Header.UserData[:], h[28:48])
	if q.Header.Version != 3 {
		return nil, fmt.Errorf("parsing SGX quote: version %d: %w", q.Header.Version, ErrUnsupportedVersion)
	}
	if q.Header.AttestationKeyType != KeyTypeECDSAP256 {
		return nil, fmt.Errorf("parsing SGX quote: attestation key type %d: %w", q.Header.AttestationKeyType, ErrUnsupportedVersion)
	}
	if q.Header.TEEType != TEETypeSGX {
		return nil, fmt.Errorf("parsing SGX quote: TEE type %#x: %w", q.Header.TEEType, ErrUnsupportedVersion)
	}
	if len(b) < fixed {
		return nil, fmt.Errorf("parsing SGX quote: %d bytes, need at least %d: %w", len(b), fixed, ErrQuoteFormat)
	}
	off := HeaderSize
	rep, err := pcs.ParseEnclaveReport(b[off : off+pcs.EnclaveReportSize])
	if err != nil {
		return nil, fmt.Errorf("parsing SGX quote: %w", err)
	}
	q.Report = *rep
	off += pcs.EnclaveReportSize
	sigLen := uint64(binary.LittleEndian.Uint32(b[off:]))
	off += 4
	copy(q.Signature[:], b[off:])
	copy(q.AttestationKey[:], b[off+64:])
	cd, n, err := pcs.ParseQEReportCertData(b[fixed:])
	if err != nil {
		return nil, fmt.Errorf("parsing SGX quote: at offset %d: %w", fixed, err)
	}
	if uint64(128+n) != sigLen {
		return nil, fmt.Errorf("parsing SGX quote: signature data size %d inconsistent: %w", sigLen, ErrQuoteFormat)
	}
	q.QEReport = cd.QEReport
	q.QEReportSignature = cd.QEReportSignature
	q.QEAuthData = cd.QEAuthData
	q.Certification = CertificationData{Type: cd.CertType, Data: cd.CertData}
	q.Trailing = bytes.Clone(b[fixed+n:])
	return q, nil
}

// SignedLen is the length of the signed prefix (header and enclave report).
func (q *Quote) SignedLen() int { return HeaderSize + pcs.EnclaveReportSize }

// AppendSigned appends the header and ISV enclave report to dst.
func (q *Quote) AppendSigned(dst []byte) []byte {
	h := &q.Header
	dst = binary.LittleEndian.AppendUint16(dst, h.Version)
	dst = binary.LittleEndian.AppendUint16(dst, h.AttestationKeyType)
	dst = binary.LittleEndian.AppendUint32(dst, h.TEEType)
	dst = binary.LittleEndian.AppendUint16(dst, h.QESVN)
	dst = binary.LittleEndian.AppendUint16(dst, h.PCESVN)
	dst = append(dst, h.QEVendorID[:]...)
	dst = append(dst, h.UserData[:]...)
	return q.Report.AppendMarshal(dst)
}

// Marshal encodes the quote; for a parsed quote it returns the input bytes.
func (q *Quote) Marshal() []byte {
	cd := pcs.QEReportCertData{
		QEReport:          q.QEReport,
		QEReportSignature: q.QEReportSignature,
		QEAuthData:        q.QEAuthData,
		CertType:          q.Certification.Type,
		CertData:          q.Certification.Data,
	}
	sigSize := 64 + 64 + cd.Size()
	out := make([]byte, 0, q.SignedLen()+4+sigSize+len(q.Trailing))
	out = q.AppendSigned(out)
	out = binary.LittleEndian.AppendUint32(out, uint32(sigSize))
	out = append(out, q.Signature[:]...)
	out = append(out, q.AttestationKey[:]...)
	out = cd.AppendMarshal(out)
	return append(out, q.Trailing...)
}

// OE remote report constants (Open Enclave SDK, include/openenclave/bits/
// report.h: oe_report_header_t; OE_ENCLAVE_TYPE_SGX = 2).
const (
	OEHeaderSize    = 16
	OEReportVersion = 1
	OETypeSGX       = 2
)

// OEReport is an Open Enclave remote report as EGo's GetRemoteReport
// returns it: {version u32, type u32, report size u64} then an SGX quote.
type OEReport struct {
	Version uint32
	Type    uint32
	Quote   *Quote
	// RawQuote is the wrapped quote bytes.
	RawQuote []byte
}

// ParseOERemoteReport parses an OE/EGo remote report.
func ParseOERemoteReport(b []byte) (*OEReport, error) {
	if len(b) < OEHeaderSize {
		return nil, fmt.Errorf("parsing OE report: %d bytes: %w", len(b), ErrQuoteFormat)
	}
	rep := &OEReport{
		Version: binary.LittleEndian.Uint32(b[0:4]),
		Type:    binary.LittleEndian.Uint32(b[4:8]),
	}
	size := binary.LittleEndian.Uint64(b[8:16])
	if rep.Version != OEReportVersion || rep.Type != OETypeSGX {
		return nil, fmt.Errorf("parsing OE report: version %d type %d: %w", rep.Version, rep.Type, ErrUnsupportedVersion)
	}
	if size != uint64(len(b)-OEHeaderSize) {
		return nil, fmt.Errorf("parsing OE report: report size %d, have %d: %w", size, len(b)-OEHeaderSize, ErrQuoteFormat)
	}
	rep.RawQuote = b[OEHeaderSize:]
	q, err := ParseQuote(rep.RawQuote)
	if err != nil {
		return nil, fmt.Errorf("parsing OE report: %w", err)
	}
	rep.Quote = q
	return rep, nil
}
