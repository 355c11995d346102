package attest

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"
)

// epochMember is the canonical epoch member of the fake bundles.
const epochMember = `"epoch":{"grace_seconds":300,"not_after":"2026-11-27T11:00:00Z","not_before":"2026-11-27T10:00:00Z"}`

func TestBundleEpochEncoding(t *testing.T) {
	raw := string(mustEncode(t, newFakeMachine("m1").bundle(newFakeKeys("k"), [32]byte{1}, 1)))
	if !strings.Contains(raw, `"created":"2026-11-27T10:00:00Z",`+epochMember+`,"epoch_nonce":`) {
		t.Fatalf("epoch member not in canonical place: %.300s", raw)
	}
	b, err := DecodeBundle([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	if !b.Epoch.Equal(testEpoch) || !b.Epoch.ErasedAt().Equal(testTime.Add(65*time.Minute)) {
		t.Fatalf("decoded window %+v", b.Epoch)
	}
}

// TestDecodeBundleEpochRejects: every malformed window, and a version 1
// bundle (no window), fail by name.
func TestDecodeBundleEpochRejects(t *testing.T) {
	raw := string(mustEncode(t, newFakeMachine("m1").bundle(newFakeKeys("k"), [32]byte{1}, 1)))
	edit := func(member string) string { return strings.Replace(raw, epochMember, member, 1) }
	for _, tt := range []struct {
		name string
		in   string
		want error
	}{
		{"missing epoch", edit(`"epocx":{}`), ErrMalformed},
		{"empty epoch", edit(`"epoch":{}`), ErrMalformed},
		{"members out of order", edit(`"epoch":{"not_after":"2026-11-27T11:00:00Z","grace_seconds":300,"not_before":"2026-11-27T10:00:00Z"}`), ErrNonCanonical},
		{"unknown member", edit(`"epoch":{"grace_seconds":300,"not_after":"2026-11-27T11:00:00Z","not_before":"2026-11-27T10:00:00Z","x":1}`), ErrMalformed},
		{"negative grace", edit(`"epoch":{"grace_seconds":-1,"not_after":"2026-11-27T11:00:00Z","not_before":"2026-11-27T10:00:00Z"}`), ErrMalformed},
		{"fractional grace", edit(`"epoch":{"grace_seconds":1.5,"not_after":"2026-11-27T11:00:00Z","not_before":"2026-11-27T10:00:00Z"}`), ErrMalformed},
		{"grace over 30 days", edit(`"epoch":{"grace_seconds":2592001,"not_after":"2026-11-27T11:00:00Z","not_before":"2026-11-27T10:00:00Z"}`), ErrMalformed},
		{"huge grace", edit(`"epoch":{"grace_seconds":18446744073709551615,"not_after":"2026-11-27T11:00:00Z","not_before":"2026-11-27T10:00:00Z"}`), ErrMalformed},
		{"not_after before not_before", edit(`"epoch":{"grace_seconds":300,"not_after":"2026-11-27T09:00:00Z","not_before":"2026-11-27T10:00:00Z"}`), ErrMalformed},
		{"empty window", edit(`"epoch":{"grace_seconds":300,"not_after":"2026-11-27T10:00:00Z","not_before":"2026-11-27T10:00:00Z"}`), ErrMalformed},
		{"time fraction", edit(`"epoch":{"grace_seconds":300,"not_after":"2026-11-27T11:00:00.5Z","not_before":"2026-11-27T10:00:00Z"}`), ErrMalformed},
		{"time offset", edit(`"epoch":{"grace_seconds":300,"not_after":"2026-11-27T11:00:00+00:00","not_before":"2026-11-27T10:00:00Z"}`), ErrMalformed},
		{"year 1999", edit(`"epoch":{"grace_seconds":300,"not_after":"2026-11-27T11:00:00Z","not_before":"1999-11-27T10:00:00Z"}`), ErrMalformed},
		{"created before the epoch", edit(`"epoch":{"grace_seconds":300,"not_after":"2026-11-27T11:00:00Z","not_before":"2026-11-27T10:00:01Z"}`), ErrMalformed},
		{"created after the erasure", edit(`"epoch":{"grace_seconds":0,"not_after":"2026-11-27T09:59:59Z","not_before":"2026-11-27T09:00:00Z"}`), ErrMalformed},
		{"version 1 with a window", strings.Replace(raw, `"version":2`, `"version":1`, 1), ErrUnsupportedVersion},
		{"version 1", strings.Replace(strings.Replace(raw, epochMember+",", "", 1), `"version":2`, `"version":1`, 1), ErrUnsupportedVersion},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeBundle([]byte(tt.in))
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if strings.HasPrefix(tt.name, "version 1") && !strings.Contains(err.Error(), "version 1 is no longer accepted") {
				t.Fatalf("version 1 not refused by name: %v", err)
			}
		})
	}
}

// TestVerifyBundleEpochBinding: the window is in the report data. Changed
// and re-signed by the epoch key (which vouches for created and worker),
// it still fails: the hardware evidence commits to the window it stated.
// Changed without re-signing, the bundle signature fails first.
func TestVerifyBundleEpochBinding(t *testing.T) {
	m, k := newFakeMachine("m1"), newFakeKeys("k")
	for name, edit := range map[string]func(w *EpochWindow){
		"not_before earlier": func(w *EpochWindow) { w.NotBefore = w.NotBefore.Add(-time.Hour) },
		"not_after later":    func(w *EpochWindow) { w.NotAfter = w.NotAfter.AddDate(1, 0, 0) },
		"not_after earlier":  func(w *EpochWindow) { w.NotAfter = w.NotAfter.Add(-time.Second) },
		"longer grace":       func(w *EpochWindow) { w.Grace += time.Second },
		"no grace":           func(w *EpochWindow) { w.Grace = 0 },
	} {
		t.Run(name, func(t *testing.T) {
			b := m.bundle(k, [32]byte{3}, 2)
			edit(&b.Epoch)
			// Unsigned: the bundle signature covers the window too.
			if _, err := VerifyBundle(context.Background(), mustEncode(t, b), testOpts(m)); !errors.Is(err, ErrBundleSignature) {
				t.Fatalf("unsigned edit: got %v, want ErrBundleSignature", err)
			}
			k.signBundle(b)
			if _, err := VerifyBundle(context.Background(), mustEncode(t, b), testOpts(m)); !errors.Is(err, ErrBindingReportData) {
				t.Fatalf("re-signed edit: got %v, want ErrBindingReportData", err)
			}
		})
	}
	// The genuine bundle's claims carry the window.
	c, err := VerifyBundle(context.Background(), mustEncode(t, m.bundle(k, [32]byte{3}, 2)), testOpts(m))
	if err != nil {
		t.Fatal(err)
	}
	if c.Epoch == nil || !c.Epoch.NotBefore.Equal(testEpoch.NotBefore) || !c.Epoch.NotAfter.Equal(testEpoch.NotAfter) ||
		c.Epoch.GraceSeconds != 300 || !c.Epoch.ErasedAt.Equal(testEpoch.ErasedAt()) || c.Sources["epoch"] == "" {
		t.Fatalf("claims epoch %+v", c.Epoch)
	}
}

// TestVerifyReceiptEpoch performs the attack of issue 11 finding 3: receipts
// genuinely signed by the epoch's key but dated before the epoch began or
// after its keys were to be erased fail with ErrReceiptEpoch (which is also
// an ErrReceiptTime); the skew is allowed at both ends; IgnoreEpoch lifts
// the bound.
func TestVerifyReceiptEpoch(t *testing.T) {
	f := newFixture(t)
	skew := DefaultMaxClockSkew
	erased := testEpoch.ErasedAt()
	for _, tc := range []struct {
		name    string
		created time.Time
		want    error
		ignored error // with IgnoreEpoch
	}{
		{"at not_before", testEpoch.NotBefore, nil, nil},
		{"within skew before not_before", testEpoch.NotBefore.Add(-skew), nil, nil},
		{"before the epoch", testEpoch.NotBefore.Add(-skew - time.Second), ErrReceiptEpoch, ErrReceiptTime},
		{"in the grace period", testEpoch.NotAfter.Add(time.Minute), nil, nil},
		{"at the erasure", erased, nil, nil},
		{"within skew after the erasure", erased.Add(skew), nil, nil},
		{"after the erasure", erased.Add(skew + time.Second), ErrReceiptEpoch, nil},
		{"a year later", erased.AddDate(1, 0, 0), ErrReceiptEpoch, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := f.r
			r.Created = tc.created
			sr := signReceipt(f.k.sign, r)
			chk := ReceiptCheck{Request: testRequest, Response: testResponse, Now: tc.created.Add(time.Minute)}
			err := VerifyReceipt(sr, f.ev, nil, chk)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if tc.want != nil && (!errors.Is(err, ErrReceiptTime) || !regexp.MustCompile(`(before its key epoch|keys were erased)`).MatchString(err.Error())) {
				t.Fatalf("not named: %v", err)
			}
			chk.IgnoreEpoch = true
			err = VerifyReceipt(sr, f.ev, nil, chk)
			if !errors.Is(err, tc.ignored) || (tc.ignored == nil) != (err == nil) || errors.Is(err, ErrReceiptEpoch) {
				t.Fatalf("IgnoreEpoch: got %v, want %v", err, tc.ignored)
			}
		})
	}
}

func TestNewEpochWindow(t *testing.T) {
	start := time.Date(2026, 11, 27, 10, 0, 0, 300_000_000, time.UTC)
	w := NewEpochWindow(start, 50*time.Millisecond, 1500*time.Millisecond)
	if !w.NotBefore.Equal(start.Truncate(time.Second)) || !w.NotAfter.Equal(start.Truncate(time.Second).Add(time.Second)) || w.Grace != 2*time.Second {
		t.Fatalf("window %+v does not cover the real one", w)
	}
	if err := w.validate(); err != nil {
		t.Fatal(err)
	}
	w = NewEpochWindow(testTime, time.Hour, 5*time.Minute)
	if !w.Equal(testEpoch) || !w.Contains(testTime) || !w.Contains(w.ErasedAt()) || w.Contains(w.ErasedAt().Add(time.Second)) || w.Contains(testTime.Add(-time.Second)) {
		t.Fatalf("window %+v", w)
	}
}
