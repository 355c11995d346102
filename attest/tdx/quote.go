package tdx

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/teegate/teegate/attest/pcs"
)

// Sizes and type codes ("Intel TDX DCAP Quoting Library API", A.3: quote
// header A.3.1, TD quote body A.3.2, v5 body descriptor A.3.3, signature
// data A.3.8, certification data A.3.9-A.3.11).
const (
	HeaderSize       = 48
	BodyTD10Size     = 584
	BodyTD15Size     = 648
	BodyTypeTD10     = 2 // v5 body type: TDX 1.0 TD report
	BodyTypeTD15     = 3 // v5 body type: TDX 1.5 TD report
	TEETypeTDX       = 0x81
	KeyTypeECDSAP256 = 2
	// CertTypeQEReport is the certification data that carries the QE
	// report, its signature, QE auth data and an inner certification data.
	CertTypeQEReport = 6
	// CertTypePCKChain is a PEM PCK leaf || intermediate || root chain.
	CertTypePCKChain = 5
)

// Header is the 48-byte quote header.
type Header struct {
	Version            uint16
	AttestationKeyType uint16
	TEEType            uint32
	// Reserved1/Reserved2 are QESVN/PCESVN in SGX quotes; zero for TDX.
	Reserved1  [2]byte
	Reserved2  [2]byte
	QEVendorID [16]byte
	UserData   [20]byte
}

// Body is the TD quote body. TEETCBSVN2 and MRSERVICETD exist only in TDX
// 1.5 bodies (BodyTypeTD15).
type Body struct {
	TEETCBSVN      [16]byte
	MRSEAM         [48]byte
	MRSIGNERSEAM   [48]byte
	SEAMAttributes [8]byte
	TDAttributes   [8]byte
	XFAM           [8]byte
	MRTD           [48]byte
	MRCONFIGID     [48]byte
	MROWNER        [48]byte
	MROWNERCONFIG  [48]byte
	RTMR           [4][48]byte
	ReportData     [64]byte
	TEETCBSVN2     [16]byte
	MRSERVICETD    [48]byte
}

// CertificationData is a (type, data) pair.
type CertificationData struct {
	Type uint16
	Data []byte
}

// QEReportCertificationData is certification data type 6.
type QEReportCertificationData struct {
	QEReport          pcs.EnclaveReport
	QEReportSignature [64]byte
	QEAuthData        []byte
	// PCK is the inner certification data, type 5 (PCK chain) in practice.
	PCK CertificationData
}

// Quote is a parsed TDX quote. Marshal re-encodes it byte for byte.
type Quote struct {
	Header Header
	// BodyType is BodyTypeTD10 or BodyTypeTD15; v4 quotes are always TD10.
	BodyType       uint16
	Body           Body
	Signature      [64]byte
	AttestationKey [64]byte
	Certification  QEReportCertificationData
	// Trailing holds bytes after the signature data. Some quote generators
	// pad quotes; the bytes are not signed, so they carry no claims.
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
		r.err = fmt.Errorf("parsing quote: %s: need %d bytes at offset %d, have %d: %w", what, n, r.off, len(r.b)-r.off, ErrQuoteFormat)
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

// ParseQuote parses a TDX quote, version 4 or 5.
func ParseQuote(b []byte) (*Quote, error) {
	r := &reader{b: b}
	q := &Quote{}
	h := r.take(HeaderSize, "header")
	if r.err != nil {
		return nil, r.err
	}
	parseHeader(h, &q.Header)
	if q.Header.Version != 4 && q.Header.Version != 5 {
		return nil, fmt.Errorf("parsing quote: version %d: %w", q.Header.Version, ErrUnsupportedVersion)
	}
	if q.Header.TEEType != TEETypeTDX {
		return nil, fmt.Errorf("parsing quote: TEE type %#x is not TDX: %w", q.Header.TEEType, ErrUnsupportedVersion)
	}
	if q.Header.AttestationKeyType != KeyTypeECDSAP256 {
		return nil, fmt.Errorf("parsing quote: attestation key type %d: %w", q.Header.AttestationKeyType, ErrUnsupportedVersion)
	}
	q.BodyType = BodyTypeTD10
	size := uint32(BodyTD10Size)
	if q.Header.Version == 5 {
		q.BodyType = r.u16("body type")
		size = r.u32("body size")
		switch {
		case r.err != nil:
			return nil, r.err
		case q.BodyType == BodyTypeTD10 && size == BodyTD10Size, q.BodyType == BodyTypeTD15 && size == BodyTD15Size:
		default:
			return nil, fmt.Errorf("parsing quote: v5 body type %d size %d: %w", q.BodyType, size, ErrUnsupportedVersion)
		}
	}
	body := r.take(int(size), "body")
	if r.err != nil {
		return nil, r.err
	}
	parseBody(body, &q.Body)
	sigLen := r.u32("signature data length")
	sigEnd := r.off + int(sigLen)
	copy(q.Signature[:], r.take(64, "quote signature"))
	copy(q.AttestationKey[:], r.take(64, "attestation key"))
	certType := r.u16("certification data type")
	certSize := r.u32("certification data size")
	if r.err != nil {
		return nil, r.err
	}
	if certType != CertTypeQEReport {
		return nil, fmt.Errorf("parsing quote: certification data type %d, want %d: %w", certType, CertTypeQEReport, ErrUnsupportedVersion)
	}
	certEnd := r.off + int(certSize)
	cd, n, err := pcs.ParseQEReportCertData(b[r.off:])
	if err != nil {
		return nil, fmt.Errorf("parsing quote: at offset %d: %w", r.off, err)
	}
	r.off += n
	q.Certification = QEReportCertificationData{
		QEReport:          cd.QEReport,
		QEReportSignature: cd.QEReportSignature,
		QEAuthData:        cd.QEAuthData,
		PCK:               CertificationData{Type: cd.CertType, Data: cd.CertData},
	}
	// Intel's verifier rejects certification data whose parts do not add
	// up to the declared sizes; so do we, which also keeps Marshal exact.
	if r.off != certEnd || r.off != sigEnd {
		return nil, fmt.Errorf("parsing quote: certification data sizes inconsistent: %w", ErrQuoteFormat)
	}
	q.Trailing = bytes.Clone(b[r.off:])
	return q, nil
}

func parseHeader(h []byte, out *Header) {
	out.Version = binary.LittleEndian.Uint16(h[0:2])
	out.AttestationKeyType = binary.LittleEndian.Uint16(h[2:4])
	out.TEEType = binary.LittleEndian.Uint32(h[4:8])
	copy(out.Reserved1[:], h[8:10])
	copy(out.Reserved2[:], h[10:12])
	copy(out.QEVendorID[:], h[12:28])
	copy(out.UserData[:], h[28:48])
}

func parseBody(b []byte, out *Body) {
	off := 0
	next := func(dst []byte) {
		copy(dst, b[off:off+len(dst)])
		off += len(dst)
	}
	next(out.TEETCBSVN[:])
	next(out.MRSEAM[:])
	next(out.MRSIGNERSEAM[:])
	next(out.SEAMAttributes[:])
	next(out.TDAttributes[:])
	next(out.XFAM[:])
	next(out.MRTD[:])
	next(out.MRCONFIGID[:])
	next(out.MROWNER[:])
	next(out.MROWNERCONFIG[:])
	for i := range out.RTMR {
		next(out.RTMR[i][:])
	}
	next(out.ReportData[:])
	if len(b) == BodyTD15Size {
		next(out.TEETCBSVN2[:])
		next(out.MRSERVICETD[:])
	}
}

// SignedLen is the length of the signed prefix: header and body (with the
// v5 body descriptor).
func (q *Quote) SignedLen() int {
	if q.Header.Version == 5 {
		return HeaderSize + 6 + q.bodySize()
	}
	return HeaderSize + BodyTD10Size
}

func (q *Quote) bodySize() int {
	if q.BodyType == BodyTypeTD15 {
		return BodyTD15Size
	}
	return BodyTD10Size
}

// AppendSigned appends the signed prefix (header and body) to dst.
func (q *Quote) AppendSigned(dst []byte) []byte {
	h := &q.Header
	dst = binary.LittleEndian.AppendUint16(dst, h.Version)
	dst = binary.LittleEndian.AppendUint16(dst, h.AttestationKeyType)
	dst = binary.LittleEndian.AppendUint32(dst, h.TEEType)
	dst = append(dst, h.Reserved1[:]...)
	dst = append(dst, h.Reserved2[:]...)
	dst = append(dst, h.QEVendorID[:]...)
	dst = append(dst, h.UserData[:]...)
	if h.Version == 5 {
		dst = binary.LittleEndian.AppendUint16(dst, q.BodyType)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(q.bodySize()))
	}
	bd := &q.Body
	for _, f := range [][]byte{bd.TEETCBSVN[:], bd.MRSEAM[:], bd.MRSIGNERSEAM[:], bd.SEAMAttributes[:],
		bd.TDAttributes[:], bd.XFAM[:], bd.MRTD[:], bd.MRCONFIGID[:], bd.MROWNER[:], bd.MROWNERCONFIG[:],
		bd.RTMR[0][:], bd.RTMR[1][:], bd.RTMR[2][:], bd.RTMR[3][:], bd.ReportData[:]} {
		dst = append(dst, f...)
	}
	if q.bodySize() == BodyTD15Size {
		dst = append(dst, bd.TEETCBSVN2[:]...)
		dst = append(dst, bd.MRSERVICETD[:]...)
	}
	return dst
}

// Marshal encodes the quote; for a parsed quote it returns the input bytes.
func (q *Quote) Marshal() []byte {
	c := &q.Certification
	cd := pcs.QEReportCertData{
		QEReport:          c.QEReport,
		QEReportSignature: c.QEReportSignature,
		QEAuthData:        c.QEAuthData,
		CertType:          c.PCK.Type,
		CertData:          c.PCK.Data,
	}
	certSize := cd.Size()
	sigSize := 64 + 64 + 6 + certSize
	out := make([]byte, 0, q.SignedLen()+4+sigSize+len(q.Trailing))
	out = q.AppendSigned(out)
	out = binary.LittleEndian.AppendUint32(out, uint32(sigSize))
	out = append(out, q.Signature[:]...)
	out = append(out, q.AttestationKey[:]...)
	out = binary.LittleEndian.AppendUint16(out, CertTypeQEReport)
	out = binary.LittleEndian.AppendUint32(out, uint32(certSize))
	out = cd.AppendMarshal(out)
	return append(out, q.Trailing...)
}

// Debug reports whether the TD runs in debug mode (TD_ATTRIBUTES bit 0,
// TUD.DEBUG).
func (q *Quote) Debug() bool { return q.Body.TDAttributes[0]&1 != 0 }
