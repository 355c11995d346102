package nvidia

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// parsedOutput is the layout of NVIDIA's spdm_parsed_output.json files.
type parsedOutput struct {
	SPDMVersion             string
	RequestResponseCode     string
	Param1, Param2          string
	NumberOfBlocks          int
	MeasurementRecordLength int
	Nonce                   string
	OpaqueLength            int
	Signature               string
	MeasurementRecord       struct {
		NumberOfBlocks    int
		MeasurementBlocks map[string]struct {
			DMTFSpecMeasurementValueType int
			DMTFSpecMeasurementValueSize int
			DMTFSpecMeasurementValue     string
		}
	}
	OpaqueData struct {
		OpaqueDataField map[string]json.RawMessage
	}
}

type parsedRequest struct {
	SPDMVersion, RequestResponseCode, Param1, Param2, Nonce, SlotIDParam string
}

func hexByte(t *testing.T, s string) uint8 {
	t.Helper()
	v, err := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 8)
	if err != nil {
		t.Fatal(err)
	}
	return uint8(v)
}

// opaqueByName maps NVIDIA's OPAQUE_FIELD_ID_ names (GPU and NVSwitch
// flavours) to types.
func opaqueByName(name string) (OpaqueType, bool) {
	name = strings.TrimPrefix(name, "OPAQUE_FIELD_ID_")
	switch name {
	case "DEVICE_PDI":
		return OpaqueSwitchPDI, true
	case "DISABLED_PORTS":
		return OpaqueFloorsweptPorts, true
	case "SWITCH_POSITION_ID":
		return OpaquePositionID, true
	case "SWITCH_LOCK_STATUS":
		return OpaqueLockSwitchStatus, true
	case "SWITCH_GPU_PDIS", "SWITCH_PORT":
		return OpaqueSwitchGPUPDIs, true
	}
	for t, n := range opaqueNames {
		if n == name {
			return t, true
		}
	}
	return 0, false
}

// TestReportMatchesParsedOutput checks ParseReport against NVIDIA's own
// parser output for the same bytes.
func TestReportMatchesParsedOutput(t *testing.T) {
	cases := []struct {
		name, report, resp, req string
	}{
		{"hopper", "sdk_hopper_report.hex", "sdk_hopper_spdm_parsed_output.json", "sdk_hopper_spdm_req_parsed_output.json"},
		{"switch", "sdk_switch_report.hex", "sdk_switch_spdm_parsed_output.json", "sdk_switch_spdm_req_parsed_output.json"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseReport(readHex(t, tc.report))
			if err != nil {
				t.Fatal(err)
			}
			var want parsedOutput
			if err := json.Unmarshal(readTestdata(t, tc.resp), &want); err != nil {
				t.Fatal(err)
			}
			var req parsedRequest
			if err := json.Unmarshal(readTestdata(t, tc.req), &req); err != nil {
				t.Fatal(err)
			}
			if r.Request.Version != hexByte(t, req.SPDMVersion) || hexByte(t, req.RequestResponseCode) != codeGetMeasurements ||
				r.Request.Param1 != hexByte(t, req.Param1) || r.Request.Param2 != hexByte(t, req.Param2) || r.Request.SlotID != hexByte(t, req.SlotIDParam) {
				t.Errorf("request = %+v, want %+v", r.Request, req)
			}
			if n := r.Nonce(); !bytes.Equal(n[:], mustHex(t, req.Nonce)) {
				t.Errorf("nonce = %x, want %s", n, req.Nonce)
			}
			if r.Version != hexByte(t, want.SPDMVersion) || r.Param1 != hexByte(t, want.Param1) || r.Param2 != hexByte(t, want.Param2) {
				t.Errorf("response header %x %x %x, want %s %s %s", r.Version, r.Param1, r.Param2, want.SPDMVersion, want.Param1, want.Param2)
			}
			if len(r.Blocks) != want.NumberOfBlocks || len(want.MeasurementRecord.MeasurementBlocks) != want.NumberOfBlocks {
				t.Fatalf("%d blocks, want %d", len(r.Blocks), want.NumberOfBlocks)
			}
			for k, wb := range want.MeasurementRecord.MeasurementBlocks {
				idx, _ := strconv.Atoi(k)
				v, ok := r.Measurement(idx)
				if !ok || !bytes.Equal(v, mustHex(t, wb.DMTFSpecMeasurementValue)) || len(v) != wb.DMTFSpecMeasurementValueSize {
					t.Errorf("block %d = %x, want %s", idx, v, wb.DMTFSpecMeasurementValue)
				}
			}
			if !bytes.Equal(r.ResponderNonce[:], mustHex(t, want.Nonce)) {
				t.Errorf("responder nonce = %x, want %s", r.ResponderNonce, want.Nonce)
			}
			if !bytes.Equal(r.Signature, mustHex(t, want.Signature)) {
				t.Errorf("signature mismatch")
			}
			opLen := 0
			for _, f := range r.Opaque {
				opLen += 4 + len(f.Value)
			}
			if opLen != want.OpaqueLength {
				t.Errorf("opaque length %d, want %d", opLen, want.OpaqueLength)
			}
			checkOpaque(t, r, want.OpaqueData.OpaqueDataField)
		})
	}
}

func checkOpaque(t *testing.T, r *Report, fields map[string]json.RawMessage) {
	t.Helper()
	for name, raw := range fields {
		typ, ok := opaqueByName(name)
		if !ok {
			t.Errorf("unknown opaque field %s", name)
			continue
		}
		got, ok := r.OpaqueValue(typ)
		if !ok {
			t.Errorf("%s missing", name)
			continue
		}
		var s string
		if json.Unmarshal(raw, &s) == nil {
			if !bytes.Equal(got, mustHex(t, s)) {
				t.Errorf("%s = %x, want %s", name, got, s)
			}
			continue
		}
		if name == "OPAQUE_FIELD_ID_MSRSCNT" {
			var want []uint32
			if err := json.Unmarshal(raw, &want); err != nil {
				t.Fatal(err)
			}
			if got := r.MeasurementCounts(); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("MSRSCNT = %v, want %v", got, want)
			}
		}
		// The remaining lists (PDIs, ports) are NVIDIA's decoded views of
		// the bytes checked above through their containing field.
	}
}

// TestReportMatchesParsedText checks the nvtrust sample against NVIDIA's
// text dump of the same report.
func TestReportMatchesParsedText(t *testing.T) {
	r, err := ParseReport(readHex(t, "nvtrust_hopper_report.hex"))
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(readTestdata(t, "nvtrust_hopper_spdm_parsed_output.txt")))
	checked := 0
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " = ")
		if !ok {
			continue
		}
		k = strings.TrimPrefix(k, "SpdmMeasurementResponseMessage.")
		switch {
		case k == "Nonce":
			if !bytes.Equal(r.ResponderNonce[:], mustHex(t, v)) {
				t.Errorf("Nonce = %x, want %s", r.ResponderNonce, v)
			}
		case k == "Signature":
			if !bytes.Equal(r.Signature, mustHex(t, v)) {
				t.Errorf("Signature mismatch")
			}
		case k == "NumberOfBlocks":
			if strconv.Itoa(len(r.Blocks)) != v {
				t.Errorf("NumberOfBlocks = %d, want %s", len(r.Blocks), v)
			}
		case strings.HasSuffix(k, "].DMTFSpecMeasurementValue"):
			var idx int
			if _, err := fmt.Sscanf(k, "MeasurementRecord.MeasurementBlocks[%d]", &idx); err != nil {
				t.Fatal(err)
			}
			if got, _ := r.Measurement(idx); !bytes.Equal(got, mustHex(t, v)) {
				t.Errorf("block %d = %x, want %s", idx, got, v)
			}
		case strings.HasPrefix(k, "OpaqueData.OpaqueDataField['") && strings.HasSuffix(k, "']"):
			name := strings.TrimSuffix(strings.TrimPrefix(k, "OpaqueData.OpaqueDataField['"), "']")
			typ, ok := opaqueByName(name)
			if !ok {
				t.Errorf("unknown field %s", name)
				continue
			}
			if got, _ := r.OpaqueValue(typ); !bytes.Equal(got, mustHex(t, v)) {
				t.Errorf("%s = %x, want %s", name, got, v)
			}
		default:
			continue
		}
		checked++
	}
	if checked < 64+10 {
		t.Errorf("only %d lines checked", checked)
	}
	if r.DriverVersion() != "550.90.07" || r.VBIOSVersion() != "96.00.9F.00.01" {
		t.Errorf("versions %q %q", r.DriverVersion(), r.VBIOSVersion())
	}
}

func TestFormatVBIOSVersion(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
	}{
		{"009f009601000000", "96.00.9F.00.01"},
		{"0074009620000000", "96.00.74.00.20"},
		{"0102030405060708", "04.03.02.01.05"},
		{hex.EncodeToString([]byte("96.10.55.00.01")), "96.10.55.00.01"},
		{hex.EncodeToString([]byte("96.10.55.00.01\x00\x00")), "96.10.55.00.01"},
		{"", ""},
	} {
		t.Run(tc.want, func(t *testing.T) {
			if got := FormatVBIOSVersion(mustHex(t, tc.in)); got != tc.want {
				t.Errorf("FormatVBIOSVersion(%s) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// TestParseReportMalformed flips structure fields and expects
// ErrReportFormat.
func TestParseReportMalformed(t *testing.T) {
	good := readHex(t, "sdk_switch_report.hex")
	respOff := RequestLength
	recLen := int(good[respOff+5]) | int(good[respOff+6])<<8 | int(good[respOff+7])<<16
	opLenOff := respOff + 8 + recLen + NonceSize
	mod := func(f func(b []byte) []byte) []byte {
		return f(bytes.Clone(good))
	}
	cases := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"short", good[:100]},
		{"truncated signature", good[:len(good)-1]},
		{"trailing byte", append(bytes.Clone(good), 0)},
		{"SPDM 1.2", mod(func(b []byte) []byte { b[0], b[respOff] = 0x12, 0x12; return b })},
		{"not GET_MEASUREMENTS", mod(func(b []byte) []byte { b[1] = 0x81; return b })},
		{"no signature requested", mod(func(b []byte) []byte { b[2] = 0; return b })},
		{"version differs", mod(func(b []byte) []byte { b[respOff] = 0x10; return b })},
		{"not MEASUREMENTS", mod(func(b []byte) []byte { b[respOff+1] = 0x61; return b })},
		{"block count", mod(func(b []byte) []byte { b[respOff+4]++; return b })},
		{"record length", mod(func(b []byte) []byte { b[respOff+5]++; return b })},
		{"record overrun", mod(func(b []byte) []byte { b[respOff+7] = 0xff; return b })},
		{"block index 0", mod(func(b []byte) []byte { b[respOff+8] = 0; return b })},
		{"duplicate block", mod(func(b []byte) []byte { b[respOff+8] = 2; return b })},
		{"not DMTF", mod(func(b []byte) []byte { b[respOff+9] = 0x02; return b })},
		{"DMTF size", mod(func(b []byte) []byte { b[respOff+13]++; return b })},
		{"opaque length", mod(func(b []byte) []byte { b[opLenOff]++; return b })},
		{"opaque too long", mod(func(b []byte) []byte { binary.LittleEndian.PutUint16(b[opLenOff:], 2000); return b })},
		{"opaque field overrun", mod(func(b []byte) []byte { binary.LittleEndian.PutUint16(b[opLenOff+4:], 0xffff); return b })},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseReport(tc.in); !errors.Is(err, ErrReportFormat) {
				t.Errorf("ParseReport = %v, want ErrReportFormat", err)
			}
		})
	}
}

func TestParseOpaqueDuplicate(t *testing.T) {
	f := []byte{3, 0, 2, 0, '1', 0}
	if _, err := parseOpaque(append(bytes.Clone(f), f...)); !errors.Is(err, ErrReportFormat) {
		t.Errorf("duplicate DRIVER_VERSION: %v, want ErrReportFormat", err)
	}
	u := []byte{99, 0, 1, 0, 7}
	if fs, err := parseOpaque(append(bytes.Clone(u), u...)); err != nil || len(fs) != 2 {
		t.Errorf("duplicate unknown field: %v %v, want both kept", fs, err)
	}
	if _, err := parseOpaque([]byte{12, 0, 3, 0, 1, 2, 3}); !errors.Is(err, ErrReportFormat) {
		t.Errorf("MSRSCNT of 3 bytes: %v, want ErrReportFormat", err)
	}
}
