package wire

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
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

// The typed decoders read what another process wrote: they never panic,
// and what they accept is bounded and well formed.
func FuzzParseRequest(f *testing.F) {
	f.Add("1", "req_1", OpChat, "m", "1", "64", "1795768664123", "1")
	f.Add("2", "", "images", "", "", "", "", "")
	f.Add("1", "a.b c", OpResponses, "m\x00", "yes", "-5", "soon", "0")
	f.Fuzz(func(t *testing.T, version, id, op, model, stream, window, deadline, accept string) {
		h := nats.Header{}
		for k, v := range map[string]string{HdrVersion: version, HdrRequestID: id, HdrOp: op, HdrModel: model,
			HdrStream: stream, HdrWindow: window, HdrDeadline: deadline, HdrAccept: accept} {
			h.Set(k, v)
		}
		r, err := ParseRequest(h, []byte("body"))
		if err != nil {
			if !errors.Is(err, ErrVersion) && !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error %v is neither ErrVersion nor ErrBadRequest", err)
			}
			return
		}
		if version != Version || !ValidOp(r.Op) {
			t.Fatalf("accepted version %q op %q", version, op)
		}
		if r.ID != "" && (len(r.ID) > MaxRequestID || Token(r.ID) != r.ID) {
			t.Fatalf("kept id %q", r.ID)
		}
		if r.Stream && r.Window <= 0 || !r.Stream && r.Window != 0 {
			t.Fatalf("window %d (stream %v)", r.Window, r.Stream)
		}
		// What was accepted writes back as the same request.
		again, err := ParseRequest((&r).Msg("s").Header, r.Body)
		if err != nil || again.ID != r.ID || again.Op != r.Op || again.Stream != r.Stream || again.Window != r.Window || !again.Deadline.Equal(r.Deadline) {
			t.Fatalf("round trip %+v → %+v (%v)", r, again, err)
		}
	})
}

func FuzzParseReply(f *testing.F) {
	f.Add(KindResponse, "200", "", "application/json", "w-1", "eyJh", "")
	f.Add(KindError, "503", CodeBusy, "", "", "", "")
	f.Add(KindError, "500", CodeBusy, "text/html", "w 1", "a+b", "zz")
	f.Add("data", "099", "", "application/json; charset=UTF-8", "", "", strings.Repeat("ab", 32))
	f.Fuzz(func(t *testing.T, kind, status, code, ct, worker, receipt, evidenceID string) {
		m := &nats.Msg{Header: nats.Header{}, Data: []byte("{}")}
		for k, v := range map[string]string{HdrKind: kind, HdrStatus: status, HdrError: code, HdrContentType: ct,
			HdrWorker: worker, HdrReceipt: receipt, HdrEvidenceID: evidenceID} {
			if v != "" {
				m.Header.Set(k, v)
			}
		}
		r, err := ParseReply(m)
		if err != nil {
			if !errors.Is(err, ErrBadReply) {
				t.Fatalf("error %v is not ErrBadReply", err)
			}
			return
		}
		switch {
		case r.Kind == KindResponse && (r.Status < 200 || r.Status > 299),
			r.Kind == KindError && (r.Status < 400 || r.Status > 599),
			r.Kind != KindResponse && r.Kind != KindError:
			t.Fatalf("accepted kind %q status %d", r.Kind, r.Status)
		}
		if s, ok := Spec(r.Code); r.Kind == KindError && ok && s.Fixed && s.Status != r.Status {
			t.Fatalf("accepted code %q with status %d", r.Code, r.Status)
		}
		if !IsBase64URL(r.Attestation.Get(HdrReceipt)) || r.Worker != "" && Token(r.Worker) != r.Worker ||
			!strings.HasPrefix(strings.ToLower(r.ContentType), "application/json") {
			t.Fatalf("accepted %+v", r)
		}
	})
}

func FuzzParseAccept(f *testing.F) {
	f.Add("w-1", strings.Repeat("0f", 32), "_TGW.UKEY.a.b")
	f.Add("", "", "_TGW.UKEY.>")
	f.Add("w 1", "xyz", "a..b")
	f.Fuzz(func(t *testing.T, worker, evidenceID, control string) {
		m := (Accept{Worker: worker, EvidenceID: evidenceID, Control: control}).Msg("i")
		a, err := ParseAccept(m)
		if err != nil {
			if !errors.Is(err, ErrBadReply) {
				t.Fatalf("error %v is not ErrBadReply", err)
			}
			return
		}
		if strings.ContainsAny(a.Control, "*> \t\r\n") || strings.Contains(a.Control, "..") || len(a.Control) > MaxControlSubject ||
			a.EvidenceID != "" && !HexID(a.EvidenceID) {
			t.Fatalf("accepted %+v", a)
		}
	})
}

// A stream message decodes only as the next message, of a stream kind,
// with a well-formed event name where one is needed, and the checked
// control subject on data.
func FuzzStreamDecode(f *testing.F) {
	f.Add(KindData, "1", "", "c", true)
	f.Add(KindEnd, "1", "response.completed", "", true)
	f.Add(KindError, "01", "x\ny", "c", false)
	f.Add("accept", "+1", "", "", false)
	f.Fuzz(func(t *testing.T, kind, seq, event, reply string, events bool) {
		r := NewStreamReceiver(func(*nats.Msg) error { return nil }, "i", 8, events)
		r.SetControl("c")
		m := &nats.Msg{Header: nats.Header{}, Reply: reply}
		m.Header.Set(HdrKind, kind)
		m.Header.Set(HdrSeq, seq)
		m.Header.Set(HdrEvent, event)
		c, err := r.Decode(m)
		if err != nil {
			if !errors.Is(err, ErrBadReply) || r.Next() != 1 {
				t.Fatalf("error %v, next %d", err, r.Next())
			}
			return
		}
		if c.Seq != 1 || r.Next() != 2 || c.Kind != KindData && c.Kind != KindEnd && c.Kind != KindError {
			t.Fatalf("accepted %+v", c)
		}
		if c.Kind == KindData && reply != "c" || events && c.Event != "" && !ValidEventName(c.Event) || !events && c.Event != "" {
			t.Fatalf("accepted %+v (reply %q)", c, reply)
		}
	})
}
