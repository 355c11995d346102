package attest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/teegate/teegate/attest/claims"
)

// jcs is an independent RFC 8785 encoder over generic JSON values, used to
// prove the hand-written encoders emit JCS.
func jcs(t testing.TB, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	var enc func(v any)
	enc = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			keys := make([]string, 0, len(x))
			for k := range x {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			buf.WriteByte('{')
			for i, k := range keys {
				if i > 0 {
					buf.WriteByte(',')
				}
				buf.Write(appendJSONString(nil, k))
				buf.WriteByte(':')
				enc(x[k])
			}
			buf.WriteByte('}')
		case []any:
			buf.WriteByte('[')
			for i, e := range x {
				if i > 0 {
					buf.WriteByte(',')
				}
				enc(e)
			}
			buf.WriteByte(']')
		case string:
			buf.Write(jcsString(x))
		case json.Number:
			buf.WriteString(x.String())
		case bool:
			fmt.Fprint(&buf, x)
		default:
			t.Fatalf("unexpected JSON value %T", v)
		}
	}
	enc(v)
	return buf.Bytes()
}

// jcsString escapes per RFC 8785 §3.2.2.2 written out independently.
func jcsString(s string) []byte {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return []byte(b.String())
}

func assertJCS(t *testing.T, raw []byte) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	if got := jcs(t, v); !bytes.Equal(got, raw) {
		t.Fatalf("not RFC 8785:\n got %s\nwant %s", raw, got)
	}
}

func TestJSONStringEscapes(t *testing.T) {
	for _, s := range []string{"", "plain", `q"b\`, "\x00\x01\x1f\b\f\n\r\t", "<>&/\u2028é😀", "\x7f"} {
		if got, want := appendJSONString(nil, s), jcsString(s); !bytes.Equal(got, want) {
			t.Errorf("%q: got %s want %s", s, got, want)
		}
	}
	if got := appendJSONString(nil, "a\xffb"); string(got) != "\"a\uFFFDb\"" {
		t.Errorf("invalid UTF-8: %q", got)
	}
}

func TestBundleRoundTrip(t *testing.T) {
	m := newFakeMachine("m1")
	for _, n := range []int{0, 1, 3} {
		t.Run(fmt.Sprint(n, "gpus"), func(t *testing.T) {
			b := m.bundle(newFakeKeys("k"), [32]byte{1}, n)
			b.Worker.ID = "w \"quoted\" \n é"
			if n == 1 {
				b.Worker.Provider = "provider \"p\" é"
			}
			if n == 3 {
				b.SimulatedRoots = [][]byte{{1, 2, 3}}
				b.Worker.Models = nil
				// An unreported mode is omitted, others are written.
				b.GPUs[1].CCMode, b.GPUs[2].CCMode = "", CCModeDevTools
			}
			raw := mustEncode(t, b)
			assertJCS(t, raw)
			got, err := DecodeBundle(raw)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, b) {
				t.Fatalf("round trip differs:\n%+v\n%+v", got, b)
			}
			if got.ID() != b.ID() || got.ID() != BundleID(raw) {
				t.Fatal("ids differ")
			}
		})
	}
}

func TestDecodeBundleRejects(t *testing.T) {
	m := newFakeMachine("m1")
	raw := string(mustEncode(t, m.bundle(newFakeKeys("k"), [32]byte{1}, 1)))
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"leading space", " " + raw, ErrNonCanonical},
		{"space after colon", strings.Replace(raw, `"tee":`, `"tee": `, 1), ErrNonCanonical},
		{"trailing newline", raw + "\n", ErrNonCanonical},
		{"trailing value", raw + "{}", ErrMalformed},
		{"unknown member", strings.Replace(raw, `{"cpu_evidence"`, `{"a":1,"cpu_evidence"`, 1), ErrMalformed},
		{"duplicate member", strings.Replace(raw, `"tee":"tdx"`, `"tee":"tdx","tee":"tdx"`, 1), ErrNonCanonical},
		{"member case", strings.Replace(raw, `"tee"`, `"TEE"`, 1), ErrNonCanonical},
		{"escaped letter", strings.Replace(raw, `"tee":"tdx"`, `"tee":"\u0074dx"`, 1), ErrNonCanonical},
		{"padded base64", strings.Replace(raw, `"epoch_nonce":"`, `"epoch_nonce":"=`, 1), ErrMalformed},
		{"version 3", strings.Replace(raw, `"version":2`, `"version":3`, 1), ErrUnsupportedVersion},
		{"version 1", strings.Replace(raw, `"version":2`, `"version":1`, 1), ErrUnsupportedVersion},
		{"version 02", strings.Replace(raw, `"version":2`, `"version":02`, 1), ErrMalformed},
		{"version 2.0", strings.Replace(raw, `"version":2`, `"version":2.0`, 1), ErrMalformed},
		{"tee", strings.Replace(raw, `"tee":"tdx"`, `"tee":"simulated"`, 1), ErrMalformed},
		{"time fraction", strings.Replace(raw, `10:00:00Z`, `10:00:00.5Z`, 1), ErrNonCanonical},
		{"no signature", strings.Replace(raw, `"signature":`, `"signaturx":`, 1), ErrMalformed},
		{"time offset", strings.Replace(raw, `10:00:00Z`, `10:00:00+00:00`, 1), ErrMalformed},
		{"empty worker", strings.Replace(raw, `"id":"worker-1"`, `"id":""`, 1), ErrMalformed},
		{"empty provider", strings.Replace(raw, `"id":"worker-1"`, `"id":"worker-1","provider":""`, 1), ErrNonCanonical},
		{"provider before id", strings.Replace(raw, `"id":"worker-1"`, `"provider":"p","id":"worker-1"`, 1), ErrNonCanonical},
		{"provider too long", strings.Replace(raw, `"id":"worker-1"`, `"id":"worker-1","provider":"`+strings.Repeat("p", 257)+`"`, 1), ErrMalformed},
		{"missing gpus", strings.Replace(raw, `"gpus":[`, `"gpux":[`, 1), ErrMalformed},
		{"cc_mode outside the schema", strings.Replace(raw, `"cc_mode":"on"`, `"cc_mode":"unknown"`, 1), ErrMalformed},
		{"cc_mode case", strings.Replace(raw, `"cc_mode":"on"`, `"cc_mode":"ON"`, 1), ErrMalformed},
		{"cc_mode empty", strings.Replace(raw, `"cc_mode":"on"`, `"cc_mode":""`, 1), ErrNonCanonical},
		{"cc_mode null", strings.Replace(raw, `"cc_mode":"on"`, `"cc_mode":null`, 1), ErrNonCanonical},
		{"cc_mode after cert_chain", strings.Replace(strings.Replace(raw, `"cc_mode":"on",`, ``, 1), `"report":`, `"cc_mode":"on","report":`, 1), ErrNonCanonical},
		{"line break in base64", strings.Replace(raw, `"epoch_nonce":"`, `"epoch_nonce":"
`, 1), ErrMalformed},
		{"CR in base64", strings.Replace(raw, `"epoch_nonce":"`, `"epoch_nonce":"
`, 1), ErrMalformed},
		{"not json", "xyz", ErrMalformed},
		{"empty", "", ErrMalformed},
		{"too big", raw + strings.Repeat(" ", MaxBundleSize), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeBundle([]byte(tt.in))
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestVerifyBundle(t *testing.T) {
	m := newFakeMachine("m1")
	k := newFakeKeys("k")
	for _, n := range []int{0, 1, 2} {
		t.Run(fmt.Sprint(n, "gpus"), func(t *testing.T) {
			raw := mustEncode(t, m.bundle(k, [32]byte{7}, n))
			c, err := VerifyBundle(context.Background(), raw, testOpts(m))
			if err != nil {
				t.Fatal(err)
			}
			if c.TEE != "tdx" || c.Simulated || len(c.GPUs) != n || c.Binding == nil ||
				!c.Binding.ReportDataMatched || !c.Binding.GPUNoncesMatched || c.AgeSeconds != 60 ||
				!c.CreatedAt.Equal(testTime) || c.Version != claims.Version {
				t.Fatalf("claims: %+v", c)
			}
			for i, g := range c.GPUs {
				if g.Index != i || g.Arch != "hopper" || g.CCMode != CCModeOn {
					t.Fatalf("gpu %d: %+v", i, g)
				}
			}
		})
	}
}

// TestVerifyBundleCCMode: the claims carry the bundle's cc_mode whatever the
// GPU verifier said, and "unknown" for a producer that did not report it.
func TestVerifyBundleCCMode(t *testing.T) {
	m := newFakeMachine("m1")
	k := newFakeKeys("k")
	pub := []byte(k.sign.Public().(ed25519.PublicKey))
	nonce := [32]byte{7}
	for _, mode := range []string{CCModeOn, CCModeOff, CCModeDevTools, ""} {
		t.Run("mode "+mode, func(t *testing.T) {
			b := m.bundle(k, nonce, 2)
			b.GPUs[0].CCMode, b.GPUs[1].CCMode = mode, mode
			b.CPUEvidence = m.cpuEvidence(ReportData(pub, k.hpke, GPUEvidenceDigest(b.GPUs), nonce, b.Epoch))
			k.signBundle(b)
			c, err := VerifyBundle(context.Background(), mustEncode(t, b), testOpts(m))
			if err != nil {
				t.Fatal(err)
			}
			want := mode
			if mode == "" {
				want = CCModeUnknown
			}
			for _, g := range c.GPUs {
				if g.CCMode != want {
					t.Fatalf("claims cc_mode %q, want %q", g.CCMode, want)
				}
			}
			if c.Sources["gpu_cc_mode"] != "attest.binding_v2" {
				t.Fatalf("sources %v", c.Sources)
			}
		})
	}
}

func TestVerifyBundleRejects(t *testing.T) {
	m, other := newFakeMachine("m1"), newFakeMachine("m2")
	k := newFakeKeys("k")
	nonce := [32]byte{7}
	ctx := context.Background()

	// rebind recomputes the CPU evidence for the bundle as it stands, which
	// only the genuine machine could do: used to isolate the GPU nonce check.
	rebind := func(b *Bundle) {
		rd := ReportData(b.SigningPub, b.HPKEPub, GPUEvidenceDigest(b.GPUs), b.EpochNonce, b.Epoch)
		b.CPUEvidence = m.cpuEvidence(rd)
	}
	flip := func(p []byte, i int) { p[i] ^= 0x01 }
	attacker := newFakeKeys("attacker")
	tests := []struct {
		name   string
		mutate func(b *Bundle, o *VerifyOptions)
		want   error
		// unsigned: leave the signature as it was; otherwise the bundle is
		// re-signed with k after mutate, isolating the check under test.
		unsigned bool
	}{
		{"signing_pub", func(b *Bundle, o *VerifyOptions) {
			b.SigningPub = attacker.sign.Public().(ed25519.PublicKey)
			attacker.signBundle(b)
		}, ErrBindingReportData, true},
		{"signing_pub byte", func(b *Bundle, o *VerifyOptions) { flip(b.SigningPub, 3) }, ErrBundleSignature, true},
		{"signature byte", func(b *Bundle, o *VerifyOptions) { flip(b.Signature, 3) }, ErrBundleSignature, true},
		{"created", func(b *Bundle, o *VerifyOptions) { b.Created = b.Created.Add(time.Second) }, ErrBundleSignature, true},
		{"worker", func(b *Bundle, o *VerifyOptions) { b.Worker.ID = "worker-2" }, ErrBundleSignature, true},
		{"hpke_pub", func(b *Bundle, o *VerifyOptions) { flip(b.HPKEPub, 3) }, ErrBindingReportData, false},
		{"epoch_nonce", func(b *Bundle, o *VerifyOptions) { b.EpochNonce[31] ^= 1 }, ErrBindingReportData, false},
		{"gpu evidence from another machine", func(b *Bundle, o *VerifyOptions) {
			b.GPUs[1] = other.gpuEvidence(GPUNonce(b.SigningPub, b.EpochNonce))
		}, ErrBindingReportData, false},
		{"gpu arch label", func(b *Bundle, o *VerifyOptions) { b.GPUs[0].Arch = "blackwell" }, ErrBindingReportData, false},
		{"gpu cc_mode, not re-signed", func(b *Bundle, o *VerifyOptions) { b.GPUs[1].CCMode = CCModeDevTools }, ErrBundleSignature, true},
		{"gpu cc_mode", func(b *Bundle, o *VerifyOptions) { b.GPUs[1].CCMode = CCModeDevTools }, ErrBindingReportData, false},
		{"gpu cc_mode removed", func(b *Bundle, o *VerifyOptions) { b.GPUs[0].CCMode = "" }, ErrBindingReportData, false},
		{"gpu dropped", func(b *Bundle, o *VerifyOptions) { b.GPUs = b.GPUs[:1] }, ErrBindingReportData, false},
		{"gpu nonce of another epoch", func(b *Bundle, o *VerifyOptions) {
			b.GPUs[1] = m.gpuEvidence(GPUNonce(b.SigningPub, [32]byte{8}))
			rebind(b)
		}, ErrBindingGPUNonce, false},
		{"gpu nonce of another key", func(b *Bundle, o *VerifyOptions) {
			b.GPUs[0] = m.gpuEvidence(GPUNonce(make([]byte, 32), b.EpochNonce))
			rebind(b)
		}, ErrBindingGPUNonce, false},
		{"cpu evidence byte", func(b *Bundle, o *VerifyOptions) { flip(b.CPUEvidence, 20) }, ErrCPUEvidence, false},
		{"cpu quote from another genuine machine", func(b *Bundle, o *VerifyOptions) {
			b.CPUEvidence = other.cpuEvidence([64]byte{})
		}, ErrBindingReportData, false},
		{"cpu from an untrusted machine", func(b *Bundle, o *VerifyOptions) {
			b.CPUEvidence = newFakeMachine("m3").cpuEvidence(ReportData(b.SigningPub, b.HPKEPub, GPUEvidenceDigest(b.GPUs), b.EpochNonce, b.Epoch))
		}, ErrCPUEvidence, false},
		{"gpu report byte", func(b *Bundle, o *VerifyOptions) { flip(b.GPUs[0].Report, 50) }, ErrGPUEvidence, false},
		{"gpu chain byte", func(b *Bundle, o *VerifyOptions) { flip(b.GPUs[1].CertChain, 0) }, ErrGPUEvidence, false},
		{"unknown tee", func(b *Bundle, o *VerifyOptions) { b.TEE = "sev-snp" }, ErrUnknownTEE, false},
		{"no gpu verifier", func(b *Bundle, o *VerifyOptions) { o.GPU = nil }, ErrNoGPUVerifier, false},
		{"simulated not allowed", func(b *Bundle, o *VerifyOptions) { b.SimulatedRoots = [][]byte{simRootDER(t)} }, ErrSimulatedNotAllowed, false},
		{"simulated root not pinned", func(b *Bundle, o *VerifyOptions) {
			b.SimulatedRoots = [][]byte{simRootDER(t)}
			o.AllowSimulated, o.PinnedSimulatedRoots = true, [][]byte{simRootDER(t)}
		}, ErrSimulatedRootUntrusted, false},
		{"simulated root garbage", func(b *Bundle, o *VerifyOptions) {
			b.SimulatedRoots = [][]byte{{1, 2}}
			o.AllowSimulated = true
		}, ErrMalformed, false},
		{"too old", func(b *Bundle, o *VerifyOptions) { o.MaxAge = 30 * time.Second }, ErrEvidenceExpired, false},
		{"future", func(b *Bundle, o *VerifyOptions) { b.Created = testTime.Add(time.Hour) }, ErrEvidenceExpired, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := m.bundle(k, nonce, 2)
			opts := testOpts(m, other)
			tt.mutate(b, &opts)
			if !tt.unsigned {
				k.signBundle(b)
			}
			raw := mustEncode(t, b)
			_, err := VerifyBundle(ctx, raw, opts)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

// TestVerifyBundleEveryByte flips each byte of a valid bundle in turn: no
// single-byte change may verify.
func TestVerifyBundleEveryByte(t *testing.T) {
	m := newFakeMachine("m1")
	raw := mustEncode(t, m.bundle(newFakeKeys("k"), [32]byte{7}, 1))
	opts := testOpts(m)
	for i := range raw {
		mut := bytes.Clone(raw)
		mut[i] ^= 0x01
		if _, err := VerifyBundle(context.Background(), mut, opts); err == nil {
			t.Fatalf("byte %d flipped still verifies", i)
		}
	}
}

func TestVerifyBundleSimulated(t *testing.T) {
	m := newFakeMachine("m1")
	root := simRootDER(t)
	b := m.bundle(newFakeKeys("k"), [32]byte{7}, 1)
	b.SimulatedRoots = [][]byte{root}
	newFakeKeys("k").signBundle(b)
	raw := mustEncode(t, b)
	var sawRoots int
	opts := testOpts(m)
	inner := opts.CPU["tdx"]
	opts.CPU["tdx"] = CPUVerifierFunc(func(ctx context.Context, ev []byte, o CPUOptions) (*claims.Claims, error) {
		sawRoots = len(o.SimulatedRoots)
		return inner.VerifyCPU(ctx, ev, o)
	})
	opts.AllowSimulated = true
	for _, pinned := range [][][]byte{nil, {root}} {
		opts.PinnedSimulatedRoots = pinned
		c, err := VerifyBundle(context.Background(), raw, opts)
		if err != nil {
			t.Fatal(err)
		}
		if c.TEE != claims.TEESimulated || !c.Simulated || c.GPUs[0].Arch != "simulated" || sawRoots != 1 {
			t.Fatalf("claims %+v, roots passed %d", c, sawRoots)
		}
	}
}

func TestVerifierCache(t *testing.T) {
	m := newFakeMachine("m1")
	calls := 0
	opts := testOpts(m)
	inner := opts.CPU["tdx"]
	opts.CPU["tdx"] = CPUVerifierFunc(func(ctx context.Context, ev []byte, o CPUOptions) (*claims.Claims, error) {
		calls++
		return inner.VerifyCPU(ctx, ev, o)
	})
	now := testTime.Add(time.Minute)
	opts.Now = func() time.Time { return now }
	opts.MaxAge = time.Hour
	v := NewVerifier(opts, 2)
	var ids []string
	for i := range 3 {
		raw := mustEncode(t, m.bundle(newFakeKeys("k"), [32]byte{byte(i)}, 1))
		for range 2 {
			vd, err := v.Bundle(context.Background(), raw)
			if err != nil {
				t.Fatal(err)
			}
			if vd.ID != BundleID(raw) {
				t.Fatal("id")
			}
		}
		ids = append(ids, BundleID(raw))
	}
	if calls != 3 || v.Cache().Len() != 2 {
		t.Fatalf("calls %d, cached %d", calls, v.Cache().Len())
	}
	if _, ok := v.Known(ids[0]); ok {
		t.Fatal("LRU kept the oldest")
	}
	vd, ok := v.Known(ids[2])
	if !ok || vd.Claims.AgeSeconds != 60 {
		t.Fatal("known")
	}
	now = now.Add(30 * time.Second)
	if vd, _ := v.Known(ids[2]); vd.Claims.AgeSeconds != 90 {
		t.Fatalf("age not refreshed: %d", vd.Claims.AgeSeconds)
	}
	now = now.Add(2 * time.Hour)
	if _, ok := v.Known(ids[2]); ok {
		t.Fatal("expired verdict served")
	}
}

func FuzzDecodeBundle(f *testing.F) {
	m := newFakeMachine("m1")
	for n := range 3 {
		raw, _ := m.bundle(newFakeKeys("k"), [32]byte{1}, n).Encode()
		f.Add(raw)
	}
	if raw, err := readVector("bundle.json"); err == nil {
		f.Add(raw)
	}
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		b, err := DecodeBundle(raw)
		if err != nil {
			return
		}
		// Whatever decodes must re-encode to the very same bytes.
		enc, err := b.Encode()
		if err != nil || !bytes.Equal(enc, raw) {
			t.Fatalf("decoded bundle does not re-encode to its input: %v", err)
		}
	})
}
