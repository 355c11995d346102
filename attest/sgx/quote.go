package sgx

import (
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

type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) take(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b)-r.off < n {
		r.err = fmt.Errorf("parsing SGX quote: %s: need %d bytes at offset %d, have %d: %w", what, n, r.off, len(r.b)-r.off, ErrQuoteFormat)
		return nil
	}
	s := r.b[r.off : r.off+n]
	r.off += n
	return s
}

func (r *reader) u16(what string) uint16 {
	if s := r.take(2, what); s != nil {
		return binary.LittleEndian.Uint16(s)
	}
	return 0
}

func (r *reader) u32(what string) uint32 {
	if s := r.take(4, what); s != nil {
		return binary.LittleEndian.Uint32(s)
	}
	return 0
}

// ParseQuote parses an SGX ECDSA quote, version 3.
func ParseQuote(b []byte) (*Quote, error) {
	r := &reader{b: b}
	q := &Quote{}
	h := r.take(HeaderSize, "header")
	if r.err != nil {
		return nil, r.err
	}
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
	if rep, _ := pcs.ParseEnclaveReport(r.take(pcs.EnclaveReportSize, "enclave report")); rep != nil {
		q.Report = *rep
	}
	sigLen := r.u32("signature data length")
	sigEnd := r.off + int(sigLen)
	copy(q.Signature[:], r.take(64, "quote signature"))
	copy(q.AttestationKey[:], r.take(64, "attestation key"))
	if rep, _ := pcs.ParseEnclaveReport(r.take(pcs.EnclaveReportSize, "QE report")); rep != nil {
		q.QEReport = *rep
	}
	copy(q.QEReportSignature[:], r.take(64, "QE report signature"))
	authLen := r.u16("QE auth data size")
	q.QEAuthData = clone(r.take(int(authLen), "QE auth data"))
	q.Certification.Type = r.u16("certification data type")
	certLen := r.u32("certification data size")
	q.Certification.Data = clone(r.take(int(certLen), "certification data"))
	if r.err != nil {
		return nil, r.err
	}
	if r.off != sigEnd {
		return nil, fmt.Errorf("parsing SGX quote: signature data size %d inconsistent: %w", sigLen, ErrQuoteFormat)
	}
	q.Trailing = clone(b[r.off:])
	return q, nil
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
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
	sigSize := 64 + 64 + pcs.EnclaveReportSize + 64 + 2 + len(q.QEAuthData) + 6 + len(q.Certification.Data)
	out := make([]byte, 0, q.SignedLen()+4+sigSize+len(q.Trailing))
	out = q.AppendSigned(out)
	out = binary.LittleEndian.AppendUint32(out, uint32(sigSize))
	out = append(out, q.Signature[:]...)
	out = append(out, q.AttestationKey[:]...)
	out = q.QEReport.AppendMarshal(out)
	out = append(out, q.QEReportSignature[:]...)
	out = binary.LittleEndian.AppendUint16(out, uint16(len(q.QEAuthData)))
	out = append(out, q.QEAuthData...)
	out = binary.LittleEndian.AppendUint16(out, q.Certification.Type)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(q.Certification.Data)))
	out = append(out, q.Certification.Data...)
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
