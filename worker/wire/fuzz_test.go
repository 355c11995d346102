package wire

import (
	"encoding/json"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// The header decoders read values another process wrote: they never
// panic, and what they accept is in range and reads back the same.
func FuzzHeaders(f *testing.F) {
	f.Add("1795768664123", "64", "503", []byte(nil))
	f.Add("soon", "-3", "", []byte("x"))
	f.Add("0", "99999999999999999999", "503", []byte(""))
	f.Add("-1", "+7", "200", []byte(`{"error":{}}`))
	f.Add("9223372036854775807", "0x10", "503 No Responders", []byte(nil))
	f.Fuzz(func(t *testing.T, deadline, window, status string, data []byte) {
		h := nats.Header{}
		h.Set(HdrDeadline, deadline)
		h.Set(HdrWindow, window)
		if dl, ok := Deadline(h); ok {
			ms := dl.UnixMilli()
			if ms <= 0 {
				t.Fatalf("Deadline(%q) accepted a non-positive time %d", deadline, ms)
			}
			// What was accepted writes back as the same instant.
			h2 := nats.Header{}
			SetDeadline(h2, dl)
			if again, ok := Deadline(h2); !ok || !again.Equal(dl) {
				t.Fatalf("Deadline(%q) = %v does not round-trip (%v, %v)", deadline, dl, again, ok)
			}
		} else if n, err := strconv.ParseInt(deadline, 10, 64); err == nil && n > 0 {
			t.Fatalf("Deadline refused the valid value %q", deadline)
		}
		const def = 7
		n := IntHeader(h, HdrWindow, def)
		if n < 0 {
			t.Fatalf("IntHeader(%q) = %d is negative", window, n)
		}
		if want, err := strconv.Atoi(window); err == nil && want >= 0 && n != want {
			t.Fatalf("IntHeader(%q) = %d, want %d", window, n, want)
		} else if (err != nil || want < 0) && n != def {
			t.Fatalf("IntHeader(%q) = %d, want the default", window, n)
		}
		m := &nats.Msg{Header: nats.Header{}, Data: data}
		m.Header.Set("Status", status)
		if got, want := IsNoResponders(m), len(data) == 0 && status == "503"; got != want {
			t.Fatalf("IsNoResponders(status %q, %d bytes) = %v", status, len(data), got)
		}
	})
}

// Registry records and admission statuses are JSON other processes write
// into shared state: a decoded value re-encodes and decodes to itself.
func FuzzRegistryJSON(f *testing.F) {
	rec, _ := json.Marshal(WorkerRecord{ID: "w-1", Version: Version, Models: []ModelInfo{{ID: "m", Created: 1, OwnedBy: "o"}},
		TEE: "tdx", EvidenceID: "e", MaxConcurrency: 64, StartedAt: time.Unix(1, 0).UTC(), HeartbeatAt: time.Unix(2, 5).UTC()})
	st, _ := json.Marshal(AdmissionStatus{EvidenceID: "e", WorkerID: "w", Allow: true, Reasons: []string{"r"}, ExpiresAt: time.Unix(3, 0).UTC()})
	f.Add(rec)
	f.Add(st)
	f.Add([]byte(`{"id":"w","models":[{"id":"m"}],"max_concurrency":2,"in_flight":-3,"ready":true,"draining":false}`))
	f.Add([]byte(`{"models":null,"started_at":"2026-01-01T00:00:00+01:00"}`))
	f.Add([]byte(`{"error":"unknown evidence"}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		roundTrip(t, raw, &WorkerRecord{}, &WorkerRecord{})
		roundTrip(t, raw, &AdmissionStatus{}, &AdmissionStatus{})
	})
}

func roundTrip(t *testing.T, raw []byte, v, again any) {
	t.Helper()
	if json.Unmarshal(raw, v) != nil {
		return
	}
	enc, err := json.Marshal(v)
	if err != nil {
		// A time outside years 0-9999 decodes but cannot be encoded; the
		// writer could not have produced it either.
		return
	}
	if err := json.Unmarshal(enc, again); err != nil {
		t.Fatalf("re-encoded %T does not decode: %v: %s", v, err, enc)
	}
	enc2, _ := json.Marshal(again)
	if string(enc) != string(enc2) || !reflect.DeepEqual(normalize(v), normalize(again)) {
		t.Fatalf("%T changes on a round trip:\n%s\n%s", v, enc, enc2)
	}
}

// normalize compares times by instant: a decoded time keeps its zone,
// which equal instants need not share.
func normalize(v any) any {
	switch x := v.(type) {
	case *WorkerRecord:
		c := *x
		c.StartedAt, c.HeartbeatAt = c.StartedAt.UTC(), c.HeartbeatAt.UTC()
		return c
	case *AdmissionStatus:
		c := *x
		c.EvaluatedAt, c.ExpiresAt = c.EvaluatedAt.UTC(), c.ExpiresAt.UTC()
		return c
	}
	return v
}
