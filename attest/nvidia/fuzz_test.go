package nvidia

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// encodeReport re-serializes a parsed report; parsing is exact when this
// reproduces the input.
func encodeReport(r *Report) []byte {
	q := r.Request
	b := []byte{q.Version, codeGetMeasurements, q.Param1, q.Param2}
	b = append(b, q.Nonce[:]...)
	b = append(b, q.SlotID)
	var rec []byte
	for _, m := range r.Blocks {
		rec = append(rec, m.Index, m.Spec)
		rec = binary.LittleEndian.AppendUint16(rec, uint16(dmtfHeaderLength+len(m.Value)))
		rec = append(rec, m.ValueType)
		rec = binary.LittleEndian.AppendUint16(rec, uint16(len(m.Value)))
		rec = append(rec, m.Value...)
	}
	b = append(b, r.Version, codeMeasurements, r.Param1, r.Param2, byte(len(r.Blocks)), byte(len(rec)), byte(len(rec)>>8), byte(len(rec)>>16))
	b = append(b, rec...)
	b = append(b, r.ResponderNonce[:]...)
	var op []byte
	for _, f := range r.Opaque {
		op = binary.LittleEndian.AppendUint16(op, uint16(f.Type))
		op = binary.LittleEndian.AppendUint16(op, uint16(len(f.Value)))
		op = append(op, f.Value...)
	}
	b = binary.LittleEndian.AppendUint16(b, uint16(len(op)))
	b = append(b, op...)
	return append(b, r.Signature...)
}

func FuzzParseReport(f *testing.F) {
	for _, v := range realVectors(f) {
		f.Add(v.report)
	}
	f.Add(readHex(f, "sdk_switch_report_invalid_signature.hex"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseReport(b)
		if err != nil {
			return
		}
		if got := encodeReport(r); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding differs:\n got %x\nwant %x", got, b)
		}
		if len(r.SignedBytes())+SignatureSize != len(b) {
			t.Fatal("signed region length")
		}
		_ = r.DriverVersion() + r.VBIOSVersion() + r.ChipInfo()
		_ = r.MeasurementCounts()
	})
}

func FuzzParseRIM(f *testing.F) {
	f.Add(readTestdata(f, "switchVBIOSRim_NV_SWITCH_BIOS_5612_0002_890_9610550001.xml"))
	f.Add(readTestdata(f, "incorrect_cert_chain_driver_rim.xml"))
	f.Add([]byte(`<SoftwareIdentity xmlns="http://standards.iso.org/iso/19770/-2/2015/schema.xsd"><Payload/></SoftwareIdentity>`))
	roots := rimRoots(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRIM(b)
		if err != nil {
			return
		}
		for _, m := range r.Measurements {
			if len(m.Alternatives) == 0 {
				t.Fatal("measurement without alternatives")
			}
			for _, a := range m.Alternatives {
				if len(a) != m.Size {
					t.Fatal("alternative size")
				}
			}
		}
		_ = r.Verify(roots, timeSwitchRIM)
	})
}

func FuzzParseEvidenceJSON(f *testing.F) {
	for _, n := range []string{"hopper_evidence.json", "switch_evidence_ls10.json"} {
		f.Add(readTestdata(f, n))
	}
	f.Add([]byte(`[{"arch":"HOPPER","certificate":"YQ==","evidence":"YQ==","nonce":""}]`))
	near := nearPayload(f, readTestdata(f, "hopper_evidence.json"))
	f.Add(near)
	f.Add(jsonString(f, near))
	f.Add([]byte(`{"arch":"HOPPER","nonce":"","evidence_list":[{"certificate":"YQ==","evidence":"YQ=="}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		evs, err := ParseNVIDIAEvidenceJSON(b)
		if err != nil {
			return
		}
		for _, e := range evs {
			if len(e.Report) == 0 || len(e.Chain) == 0 || (e.ClaimedNonce != nil && len(e.ClaimedNonce) != NonceSize) {
				t.Fatalf("accepted %+v", e)
			}
		}
	})
}

func FuzzParseCertChain(f *testing.F) {
	for _, n := range []string{"nvtrust_hopper_chain.pem", "sdk_switch_chain.pem", "nvidia_device_identity_ca.pem"} {
		f.Add(readTestdata(f, n))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		certs, err := ParseCertChain(b)
		if err != nil {
			return
		}
		if len(certs) == 0 {
			t.Fatal("no certificates accepted")
		}
		for _, arch := range []string{ArchHopper, ArchBlackwell} {
			_, _ = certFWID(certs[0], arch)
		}
		_ = archFromCert(certs[0])
	})
}

// FuzzTCBInfoFWID feeds arbitrary DER to the Blackwell DiceTcbInfo reader,
// seeded with the extension of the real Blackwell leaf.
func FuzzTCBInfoFWID(f *testing.F) {
	certs, err := ParseCertChain(readTestdata(f, "sdk_blackwell_chain.pem"))
	if err != nil {
		f.Fatal(err)
	}
	for _, ext := range certs[0].Extensions {
		if ext.Id.Equal(OIDDICETcbInfoBlackwell) {
			f.Add(ext.Value)
		}
	}
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		fwid, err := tcbInfoFWID(b)
		if err == nil && fwid != nil && len(fwid) == 0 {
			t.Fatal("empty FWID accepted")
		}
	})
}
