package pcs_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/teegate/teegate/attest/pcs"
)

// qeCertData cuts the QE report certification data (type 6 body) out of the
// v4 TDX test quote: header 48, body 584, signature data length 4, quote
// signature and attestation key 128, type 2 and size 4.
func qeCertData(t testing.TB) []byte {
	t.Helper()
	raw := readFile(t, "tdx_quote_v4.bin")
	off := 48 + 584 + 4 + 128 + 2
	size := int(binary.LittleEndian.Uint32(raw[off:]))
	return raw[off+4 : off+4+size]
}

func TestParseQEReportCertData(t *testing.T) {
	good := qeCertData(t)
	c, n, err := pcs.ParseQEReportCertData(append(bytes.Clone(good), 0xAA, 0xBB))
	if err != nil {
		t.Fatal(err)
	}
	if n != len(good) || c.Size() != len(good) || c.CertType != 5 || !bytes.Contains(c.CertData, []byte("BEGIN CERTIFICATE")) {
		t.Fatalf("n %d size %d type %d", n, c.Size(), c.CertType)
	}
	if !bytes.Equal(c.AppendMarshal(nil), good) {
		t.Fatal("AppendMarshal does not reproduce the input")
	}
	authLen := int(binary.LittleEndian.Uint16(good[pcs.EnclaveReportSize+64:]))
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"short fixed part", good[:pcs.EnclaveReportSize+64+1]},
		{"short auth data", good[:pcs.EnclaveReportSize+64+2+authLen-1]},
		{"short cert header", good[:pcs.EnclaveReportSize+64+2+authLen+5]},
		{"short cert data", good[:len(good)-1]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := pcs.ParseQEReportCertData(tc.in); !errors.Is(err, pcs.ErrQuoteFormat) {
				t.Fatalf("got %v, want ErrQuoteFormat", err)
			}
		})
	}
}

func FuzzParseQEReportCertData(f *testing.F) {
	f.Add(qeCertData(f))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, n, err := pcs.ParseQEReportCertData(b)
		if err != nil {
			if !errors.Is(err, pcs.ErrQuoteFormat) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if n > len(b) || !bytes.Equal(c.AppendMarshal(nil), b[:n]) {
			t.Fatal("AppendMarshal does not reproduce the bytes used")
		}
	})
}
