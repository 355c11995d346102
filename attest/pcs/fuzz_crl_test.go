package pcs

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"testing"
)

// FuzzParseCRL: the CRL fields of collateral (DER, PEM or hex DER) never
// panic the parser, fail only with ErrCollateralFormat, are absent only
// when blank, and what is accepted reads the same in the hex form
// MarshalJSON writes.
func FuzzParseCRL(f *testing.F) {
	for _, name := range []string{"rootcrl.der", "pckcrl_platform.der"} {
		der, err := os.ReadFile("testdata/" + name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(der)
		f.Add([]byte(hex.EncodeToString(der)))
		f.Add(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}))
	}
	raw, err := os.ReadFile("testdata/tdx_quote_v4_collateral.json")
	if err != nil {
		f.Fatal(err)
	}
	var j collateralJSON
	if err := json.Unmarshal(raw, &j); err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(j.PCKCRL))
	f.Add([]byte(j.RootCACRL + "\n"))
	f.Add([]byte(" \t\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		crl, err := parseCRL(b)
		if err != nil {
			if !errors.Is(err, ErrCollateralFormat) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if crl == nil {
			if len(bytes.TrimSpace(b)) != 0 {
				t.Fatal("a non-blank CRL field read as absent")
			}
			return
		}
		again, err := parseCRL([]byte(hex.EncodeToString(crl.Raw)))
		if err != nil || !bytes.Equal(again.Raw, crl.Raw) {
			t.Fatalf("hex form of an accepted CRL: %v", err)
		}
	})
}
