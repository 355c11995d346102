package wire

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// The gateway publishes acks and cancels only to subjects this accepts:
// literal subjects (no wildcards, no empty tokens, no spaces) inside the
// named worker's own inbox space.
func FuzzAckSubjectOK(f *testing.F) {
	nk := "UABCDEFGHIJKLMNOPQRSTUVWXYZ234567ABCDEFGHIJKLMNOPQRSTUV"
	f.Add(WorkerInboxPrefix(nk)+".abc.1", nk)
	f.Add(WorkerInboxPrefix(nk)+".*", nk)
	f.Add(WorkerInboxPrefix(nk)+".>", nk)
	f.Add(WorkerInboxPrefix(nk)+"..x", nk)
	f.Add(WorkerInboxPrefix(nk)+". x", nk)
	f.Add(WorkerInboxPrefix("UOTHER")+".a", nk)
	f.Add("_INBOX.abc", nk)
	f.Add(WorkerInboxPrefix("")+".a", "")
	f.Fuzz(func(t *testing.T, subject, nkey string) {
		if !AckSubjectOK(subject, nkey) {
			return
		}
		if nkey == "" || !strings.HasPrefix(subject, WorkerInboxPrefix(nkey)+".") {
			t.Fatalf("accepted %q outside the inbox space of %q", subject, nkey)
		}
		rest := strings.TrimPrefix(subject, WorkerInboxPrefix(nkey)+".")
		if strings.ContainsAny(rest, "*> \t\r\n") || rest == "" || strings.Contains(rest, "..") || strings.HasSuffix(rest, ".") {
			t.Fatalf("accepted a non-literal subject %q", subject)
		}
		if len(subject) > 256 {
			t.Fatalf("accepted a %d-byte subject", len(subject))
		}
	})
}

// An SSE event name from the worker is written after "event: ": accepted
// names cannot end the line or start another field.
func FuzzValidEventName(f *testing.F) {
	for _, s := range []string{"response.output_text.delta", "", "a\nb", "data: x", "x\r", strings.Repeat("a", 200)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if ValidEventName(name) && (name == "" || len(name) > MaxEventName || strings.ContainsAny(name, "\r\n: ")) {
			t.Fatalf("accepted event name %q", name)
		}
	})
}

// Admission statuses arrive from the bus as JSON: decoding never panics
// and a decoded status re-encodes to an equal value.
func FuzzAdmissionStatusJSON(f *testing.F) {
	f.Add([]byte(`{"evidence_id":"ab","allow":true,"reasons":["x"],"evaluated_at":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"error":"unknown evidence"}`))
	f.Add([]byte(`{"allow":"yes"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var st AdmissionStatus
		if json.Unmarshal(b, &st) != nil {
			return
		}
		again, err := json.Marshal(st)
		if err != nil {
			return // a time outside what RFC 3339 can say
		}
		var st2 AdmissionStatus
		if err := json.Unmarshal(again, &st2); err != nil {
			t.Fatalf("re-decoding %s: %v", again, err)
		}
		if !reflect.DeepEqual(st.Reasons, st2.Reasons) && len(st.Reasons)+len(st2.Reasons) > 0 || st.Allow != st2.Allow ||
			st.EvidenceID != st2.EvidenceID || !st.ExpiresAt.Equal(st2.ExpiresAt) || st.Error != st2.Error {
			t.Fatalf("status does not round-trip: %+v vs %+v", st, st2)
		}
	})
}
