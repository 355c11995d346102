package pcs

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// qeCertFixedSize is the fixed head of QE report certification data: QE
// report, its signature and the QE auth data size.
const qeCertFixedSize = EnclaveReportSize + 64 + 2

// QEReportCertData is the QE report certification data both quote formats
// carry: in an SGX v3 quote it follows the attestation key directly, in a
// TDX v4/v5 quote it is the body of certification data type 6 ("Intel SGX
// ECDSA Quote Library API" A.4 "Quote Signature Data Structure"; "Intel TDX
// DCAP Quoting Library API" A.3.9-A.3.11).
type QEReportCertData struct {
	QEReport          EnclaveReport
	QEReportSignature [64]byte
	QEAuthData        []byte
	// CertType and CertData are the inner certification data, type 5 (PEM
	// PCK chain) in practice.
	CertType uint16
	CertData []byte
}

// ParseQEReportCertData decodes QE report certification data from the start
// of b and returns it with the number of bytes it used; bytes after those
// are the caller's. The variable parts are copied.
func ParseQEReportCertData(b []byte) (*QEReportCertData, int, error) {
	if len(b) < qeCertFixedSize {
		return nil, 0, fmt.Errorf("parsing QE certification data: %d bytes, need %d: %w", len(b), qeCertFixedSize, ErrQuoteFormat)
	}
	c := &QEReportCertData{}
	rep, err := ParseEnclaveReport(b[:EnclaveReportSize])
	if err != nil {
		return nil, 0, err
	}
	c.QEReport = *rep
	copy(c.QEReportSignature[:], b[EnclaveReportSize:])
	off := qeCertFixedSize
	authLen := int(binary.LittleEndian.Uint16(b[off-2:]))
	if len(b)-off < authLen+6 {
		return nil, 0, fmt.Errorf("parsing QE certification data: QE auth data (%d bytes) and certification data header need %d bytes at offset %d, have %d: %w",
			authLen, authLen+6, off, len(b)-off, ErrQuoteFormat)
	}
	c.QEAuthData = bytes.Clone(b[off : off+authLen])
	off += authLen
	c.CertType = binary.LittleEndian.Uint16(b[off:])
	certLen := uint64(binary.LittleEndian.Uint32(b[off+2:]))
	off += 6
	if uint64(len(b)-off) < certLen {
		return nil, 0, fmt.Errorf("parsing QE certification data: certification data needs %d bytes at offset %d, have %d: %w",
			certLen, off, len(b)-off, ErrQuoteFormat)
	}
	c.CertData = bytes.Clone(b[off : off+int(certLen)])
	return c, off + int(certLen), nil
}

// Size is the encoded size of c.
func (c *QEReportCertData) Size() int {
	return qeCertFixedSize + len(c.QEAuthData) + 6 + len(c.CertData)
}

// AppendMarshal appends the encoding of c to dst.
func (c *QEReportCertData) AppendMarshal(dst []byte) []byte {
	dst = c.QEReport.AppendMarshal(dst)
	dst = append(dst, c.QEReportSignature[:]...)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(c.QEAuthData)))
	dst = append(dst, c.QEAuthData...)
	dst = binary.LittleEndian.AppendUint16(dst, c.CertType)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(c.CertData)))
	return append(dst, c.CertData...)
}
