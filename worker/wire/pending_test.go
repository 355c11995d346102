package wire

import (
	"errors"
	"strings"
	"testing"
)

func TestTicket(t *testing.T) {
	ok := Ticket{RequestID: "req_1", Model: "m", Gateway: "gw", Deadline: 1}
	raw, err := ok.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeTicket(raw); err != nil || got != ok {
		t.Fatalf("%+v %v", got, err)
	}
	for name, tk := range map[string]Ticket{
		"no request id": {Model: "m", Gateway: "gw", Deadline: 1},
		"no model":      {RequestID: "r", Gateway: "gw", Deadline: 1},
		"no gateway":    {RequestID: "r", Model: "m", Deadline: 1},
		"no deadline":   {RequestID: "r", Model: "m", Gateway: "gw"},
		"too large":     {RequestID: strings.Repeat("r", MaxTicketSize), Model: "m", Gateway: "gw", Deadline: 1},
	} {
		if _, err := tk.Encode(); !errors.Is(err, ErrBadTicket) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := DecodeTicket([]byte(`{"request_id":"r","model":"m","gateway":"g"}`)); !errors.Is(err, ErrBadTicket) {
		t.Fatalf("no deadline decoded: %v", err)
	}
	if PendingSubject("a.b") != "teegate.v1.pending.a%2Eb" || PendingConsumer("a.b") != "pending-a%2Eb" {
		t.Fatal(PendingSubject("a.b"), PendingConsumer("a.b"))
	}
}

func FuzzDecodeTicket(f *testing.F) {
	f.Add([]byte(`{"request_id":"req_1","model":"m","gateway":"gw-1","deadline":1700000000000}`))
	f.Add([]byte(`{"request_id":"","model":"m","gateway":"g","deadline":1}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		tk, err := DecodeTicket(b)
		if err != nil {
			if !errors.Is(err, ErrBadTicket) {
				t.Fatalf("error %v does not wrap ErrBadTicket", err)
			}
			return
		}
		again, err := tk.Encode()
		if err != nil {
			t.Fatalf("a decoded ticket does not encode: %v", err)
		}
		if back, err := DecodeTicket(again); err != nil || back != tk {
			t.Fatalf("round trip: %+v %v", back, err)
		}
	})
}
