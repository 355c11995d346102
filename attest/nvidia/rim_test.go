package nvidia

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseRIM(t *testing.T) {
	r := mustRIM(t, "NV_GPU_DRIVER_GH100_550.144.03.xml")
	if r.Version != "550.144.03" || r.Name != "GH100" || r.Product != "GH100" || r.Edition != "GPU" || len(r.Certs) != 4 {
		t.Errorf("RIM = %q %q %q %q, %d certs", r.Version, r.Name, r.Product, r.Edition, len(r.Certs))
	}
	if len(r.Measurements) != 64 {
		t.Fatalf("%d measurements, want 64", len(r.Measurements))
	}
	var active []int
	for _, m := range r.Measurements {
		if m.Active {
			active = append(active, m.Index)
		}
		if m.Size != 48 || len(m.Alternatives) == 0 {
			t.Errorf("measurement %d: size %d, %d alternatives", m.Index, m.Size, len(m.Alternatives))
		}
	}
	want := []int{7}
	for i := 21; i <= 40; i++ {
		want = append(want, i)
	}
	if !reflect.DeepEqual(active, want) {
		t.Errorf("active = %v, want %v", active, want)
	}
	if got := r.Measurements[7].Alternatives[0]; !bytes.Equal(got, mustHex(t, "4a5e4b3d501fe31f91bd8b6f2921b58437704a504dbedba971440e840c938c805612689ae3ac04b1009515a179063d49")) {
		t.Errorf("index 7 = %x", got)
	}
	v := mustRIM(t, "1010_0205_862_9600740020_PROD.swidtag")
	if n := len(v.Measurements[12].Alternatives); n != 4 {
		t.Errorf("VBIOS index 12 has %d alternatives, want 4", n)
	}
}

func TestParseRIMMalformed(t *testing.T) {
	good := string(readTestdata(t, "NV_GPU_DRIVER_GH100_550.144.03.xml"))
	repl := func(old, new string) []byte {
		if !strings.Contains(good, old) {
			t.Fatalf("fixture lacks %q", old)
		}
		return []byte(strings.Replace(good, old, new, 1))
	}
	sigStart := strings.Index(good, "<ds:Signature ")
	sigEnd := strings.Index(good, "</ds:Signature>") + len("</ds:Signature>")
	sig := good[sigStart:sigEnd]
	cases := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"not XML", []byte("{}")},
		{"DOCTYPE", []byte("<!DOCTYPE x [<!ENTITY a 'b'>]>" + good)},
		{"wrong root", repl("<SoftwareIdentity ", "<Other ")},
		{"no signature", []byte(good[:sigStart] + good[sigEnd:])},
		{"two signatures", []byte(good[:sigEnd] + sig + good[sigEnd:])},
		{"nested signature", repl(`name="Measurement_0"`, `name="Measurement_0"><ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"/></ns0:Resource`)},
		{"C14N 1.0", repl(`<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2006/12/xml-c14n11"/>`, `<ds:CanonicalizationMethod Algorithm="http://www.w3.org/TR/2001/REC-xml-c14n-20010315"/>`)},
		{"rsa", repl("xmldsig-more#ecdsa-sha384", "xmldsig-more#rsa-sha256")},
		{"detached reference", repl(`<ds:Reference URI="">`, `<ds:Reference URI="#x">`)},
		{"sha256 digest", repl(`<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#sha384"/>`, `<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>`)},
		{"no transforms", repl(`<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>`, ``)},
		{"short signature", repl("<ds:SignatureValue>", "<ds:SignatureValue>AAAA")},
		{"hash not hex", repl(`ns2:Hash0="4a5e4b3d`, `ns2:Hash0="zz5e4b3d`)},
		{"hash short", repl(`ns2:Hash0="4a5e4b3d`, `ns2:Hash0="4b3d`)},
		{"alternatives missing", repl(`index="7" active="True" alternatives="1"`, `index="7" active="True" alternatives="2"`)},
		{"bad active", repl(`index="7" active="True"`, `index="7" active="yes"`)},
		{"bad index", repl(`index="7" active="True"`, `index="-7" active="True"`)},
		{"duplicate index", repl(`index="8" active`, `index="7" active`)},
		{"certificate not DER", repl("<ds:X509Certificate>MII", "<ds:X509Certificate>AAA")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseRIM(tc.in); !errors.Is(err, ErrRIMFormat) {
				t.Errorf("ParseRIM = %v, want ErrRIMFormat", err)
			}
		})
	}
}

// TestRIMVerify runs genuine RIMs and NVIDIA's negative samples.
func TestRIMVerify(t *testing.T) {
	roots := rimRoots(t)
	cases := []struct {
		file  string
		roots string // "" means the CoRIM signing root
		now   time.Time
		want  []error
	}{
		{file: "NV_GPU_DRIVER_GH100_550.144.03.xml", now: timeGPU},
		{file: "1010_0205_862_9600740020_PROD.swidtag", now: timeGPU},
		{file: "NV_GPU_VBIOS_1010_0200_882_96005E0001_measurement_mismatch.xml", now: timeGPU},
		{file: "switchVBIOSRim_NV_SWITCH_BIOS_5612_0002_890_9610550001.xml", now: timeSwitchRIM},
		{file: "switchVBIOSRim_NV_SWITCH_BIOS_5612_0002_890_9610550001.xml", now: timeGPU, want: []error{ErrRIMChain, ErrCertExpired}},
		{file: "NV_GPU_DRIVER_GH100_570.124.03_expired.xml", now: timeGPU, want: []error{ErrRIMChain, ErrCertExpired}},
		{file: "incorrect_signature_driver_rim.xml", now: timeGPU, want: []error{ErrRIMSignature}},
		{file: "incorrect_cert_chain_driver_rim.xml", now: timeGPU, want: []error{ErrRIMChain}},
		{file: "NV_GPU_DRIVER_GH100_550.144.03.xml", roots: "incorrect_rim_root.crt", now: timeGPU, want: []error{ErrRIMChain}},
		{file: "NV_GPU_DRIVER_GH100_550.144.03.xml", roots: "nvidia_device_identity_ca.pem", now: timeGPU, want: []error{ErrRIMChain}},
		{file: "NV_SWITCH_BIOS_5612_0002_890_9610550001_invalid_signature.xml", now: timeGPU, want: []error{ErrRIMSignature}},
		// NVIDIA's measurement-mismatch samples were edited after signing.
		{file: "NV_GPU_DRIVER_GH100_535.86.09_measurement_mismatch.xml", now: timeGPU, want: []error{ErrRIMSignature}},
		{file: "NV_SWITCH_BIOS_5612_0002_890_9610550001_measurement_mismatch.xml", now: timeGPU, want: []error{ErrRIMSignature}},
	}
	for _, tc := range cases {
		t.Run(tc.file+"/"+tc.roots+"/"+tc.now.Format(time.DateOnly), func(t *testing.T) {
			p := roots
			if tc.roots != "" {
				p = pool(t, tc.roots)
			}
			err := mustRIM(t, tc.file).Verify(p, tc.now)
			if len(tc.want) == 0 && err != nil {
				t.Fatalf("Verify = %v", err)
			}
			for _, w := range tc.want {
				if !errors.Is(err, w) {
					t.Errorf("Verify = %v, want %v", err, w)
				}
			}
		})
	}
}

// TestRIMFlips changes one character of a genuine RIM in the signed
// content, in SignedInfo and in the signature value.
func TestRIMFlips(t *testing.T) {
	good := string(readTestdata(t, "NV_GPU_DRIVER_GH100_550.144.03.xml"))
	roots := rimRoots(t)
	flip := func(anchor string, delta int) []byte {
		i := strings.Index(good, anchor)
		if i < 0 {
			t.Fatalf("no %q", anchor)
		}
		b := []byte(good)
		i += delta
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return b
	}
	cases := []struct {
		name string
		in   []byte
	}{
		{"measurement hash", flip(`ns2:Hash0="4a5e4b3d`, len(`ns2:Hash0="`))},
		{"colloquial version", flip(`colloquialVersion="550.144.03"`, len(`colloquialVersion="`)+2)},
		{"entity name", flip(`<ns0:Entity name="NVIDIA`, len(`<ns0:Entity name="`)+1)},
		{"digest value", flip("<ds:DigestValue>", len("<ds:DigestValue>")+3)},
		{"signature value", flip("<ds:SignatureValue>", len("<ds:SignatureValue>")+5)},
		{"whitespace", []byte(strings.Replace(good, "    <ns0:Entity", "     <ns0:Entity", 1))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseRIM(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Verify(roots, timeGPU); !errors.Is(err, ErrRIMSignature) {
				t.Errorf("Verify = %v, want ErrRIMSignature", err)
			}
		})
	}
}

func TestMeasurements(t *testing.T) {
	vs := realVectors(t)
	hopNV, hopSDK, sw := vs[0], vs[1], vs[2]
	devRoots, rRoots := deviceRoots(t), rimRoots(t)
	verify := func(v vector, now time.Time, require bool, rims ...*RIM) (string, error) {
		g, err := Verify(context.Background(), Evidence{Report: v.report, Chain: v.chain, ExpectedNonce: v.nonce},
			Options{Roots: devRoots, RIMRoots: rRoots, RIMs: rims, Now: now, RequireMeasurementMatch: require})
		if g == nil {
			return "", err
		}
		return g.MeasurementsMatched, err
	}

	t.Run("switch matches its BIOS RIM", func(t *testing.T) {
		got, err := verify(sw, timeSwitchRIM, true, mustRIM(t, "switchVBIOSRim_NV_SWITCH_BIOS_5612_0002_890_9610550001.xml"))
		if err != nil || got != MeasurementsMatch {
			t.Errorf("Verify = %q, %v; want match", got, err)
		}
	})
	t.Run("hopper VBIOS RIM mismatch is a claim", func(t *testing.T) {
		// The published VBIOS RIM expects another value at RIM index 9
		// (block 10) than this GPU reports.
		got, err := verify(hopSDK, timeGPU, false, mustRIM(t, "1010_0205_862_9600740020_PROD.swidtag"))
		if err != nil || got != MeasurementsMismatch {
			t.Errorf("Verify = %q, %v; want mismatch, nil", got, err)
		}
	})
	t.Run("hopper VBIOS RIM mismatch is an error when required", func(t *testing.T) {
		got, err := verify(hopSDK, timeGPU, true, mustRIM(t, "1010_0205_862_9600740020_PROD.swidtag"))
		var mm *MeasurementMismatchError
		if !errors.As(err, &mm) || !errors.Is(err, ErrMeasurementMismatch) || got != MeasurementsMismatch {
			t.Fatalf("Verify = %q, %v; want mismatch with *MeasurementMismatchError", got, err)
		}
		if !reflect.DeepEqual(mm.Blocks, []int{10}) {
			t.Errorf("mismatched blocks %v, want [10]", mm.Blocks)
		}
	})
	t.Run("partial coverage is not_checked", func(t *testing.T) {
		// A matching VBIOS-only comparison does not vouch for the driver.
		rim := mustRIM(t, "1010_0205_862_9600740020_PROD.swidtag")
		r, _ := ParseReport(hopSDK.report)
		for i := range rim.Measurements {
			if m := &rim.Measurements[i]; m.Active {
				v, _ := r.Measurement(m.Index + 1)
				m.Alternatives = [][]byte{v}
			}
		}
		// Its bytes no longer match its signature: mark it verified to
		// isolate the coverage rule.
		rim.verified = &rimVerification{roots: rRoots, notBefore: timeGPU.Add(-time.Hour), notAfter: timeGPU.Add(time.Hour)}
		got, err := verify(hopSDK, timeGPU, true, rim)
		if err != nil || got != MeasurementsNotChecked {
			t.Errorf("Verify = %q, %v; want not_checked", got, err)
		}
	})
	t.Run("RIM for another version", func(t *testing.T) {
		_, err := verify(hopNV, timeGPU, false, mustRIM(t, "NV_GPU_DRIVER_GH100_550.144.03.xml"))
		if !errors.Is(err, ErrRIMVersion) {
			t.Errorf("Verify = %v, want ErrRIMVersion", err)
		}
	})
	t.Run("tampered mismatch sample fails its signature first", func(t *testing.T) {
		_, err := verify(sw, timeGPU, false, mustRIM(t, "NV_SWITCH_BIOS_5612_0002_890_9610550001_measurement_mismatch.xml"))
		if !errors.Is(err, ErrRIMSignature) {
			t.Errorf("Verify = %v, want ErrRIMSignature", err)
		}
	})
	t.Run("expired RIM", func(t *testing.T) {
		_, err := verify(hopNV, timeGPU, false, mustRIM(t, "NV_GPU_DRIVER_GH100_570.124.03_expired.xml"))
		if !errors.Is(err, ErrRIMChain) || !errors.Is(err, ErrCertExpired) {
			t.Errorf("Verify = %v, want ErrRIMChain and ErrCertExpired", err)
		}
	})
	t.Run("no RIM roots", func(t *testing.T) {
		_, err := Verify(context.Background(), Evidence{Report: sw.report, Chain: sw.chain},
			Options{Roots: devRoots, RIMs: []*RIM{mustRIM(t, "switchVBIOSRim_NV_SWITCH_BIOS_5612_0002_890_9610550001.xml")}, Now: timeSwitchRIM})
		if !errors.Is(err, ErrRIMChain) {
			t.Errorf("Verify = %v, want ErrRIMChain", err)
		}
	})

	// CompareMeasurements alone, on NVIDIA's mismatch samples (whose
	// values are what the samples are about, signatures aside).
	cmp := []struct {
		name   string
		report vector
		rims   []string
		want   error
		blocks []int
	}{
		{"switch vs its RIM", sw, []string{"switchVBIOSRim_NV_SWITCH_BIOS_5612_0002_890_9610550001.xml"}, nil, nil},
		{"switch vs mismatch sample", sw, []string{"NV_SWITCH_BIOS_5612_0002_890_9610550001_measurement_mismatch.xml"}, ErrMeasurementMismatch, []int{1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12}},
		{"hopper vs VBIOS mismatch sample", hopNV, []string{"NV_GPU_VBIOS_1010_0200_882_96005E0001_measurement_mismatch.xml"}, ErrMeasurementMismatch, nil},
		{"hopper vs driver mismatch sample", hopNV, []string{"NV_GPU_DRIVER_GH100_535.86.09_measurement_mismatch.xml"}, ErrMeasurementMismatch, nil},
		{"same RIM twice", sw, []string{"switchVBIOSRim_NV_SWITCH_BIOS_5612_0002_890_9610550001.xml", "switchVBIOSRim_NV_SWITCH_BIOS_5612_0002_890_9610550001.xml"}, ErrRIMConflict, nil},
	}
	for _, tc := range cmp {
		t.Run("compare/"+tc.name, func(t *testing.T) {
			r, err := ParseReport(tc.report.report)
			if err != nil {
				t.Fatal(err)
			}
			var rims []*RIM
			for _, f := range tc.rims {
				rims = append(rims, mustRIM(t, f))
			}
			err = CompareMeasurements(r, rims...)
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("CompareMeasurements = %v, want %v", err, tc.want)
			}
			var mm *MeasurementMismatchError
			if tc.blocks != nil && (!errors.As(err, &mm) || !reflect.DeepEqual(mm.Blocks, tc.blocks)) {
				t.Errorf("blocks = %v, want %v", err, tc.blocks)
			}
		})
	}
}

func TestCompareMeasurementsNVDEC(t *testing.T) {
	// Block 36 (RIM index 35) is skipped only when NVDEC0 is disabled.
	r := &Report{
		Blocks: []MeasurementBlock{{Index: 36, Value: bytes.Repeat([]byte{1}, 48)}},
		Opaque: []OpaqueField{{Type: OpaqueNVDEC0Status, Value: []byte{NVDECDisabled}}},
	}
	rim := &RIM{Measurements: []RIMMeasurement{{Index: 35, Active: true, Size: 48, Alternatives: [][]byte{bytes.Repeat([]byte{2}, 48)}}}}
	if err := CompareMeasurements(r, rim); err != nil {
		t.Errorf("NVDEC disabled: %v", err)
	}
	r.Opaque[0].Value = []byte{NVDECEnabled}
	if err := CompareMeasurements(r, rim); !errors.Is(err, ErrMeasurementMismatch) {
		t.Errorf("NVDEC enabled: %v, want ErrMeasurementMismatch", err)
	}
}
