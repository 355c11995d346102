package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/teegate/teegate/gateway"
	"github.com/teegate/teegate/internal/stacktest"
)

func TestStatusPrintsTheFleet(t *testing.T) {
	s := stacktest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const admin = "sk-status-admin"
	if err := s.AddKey(ctx, admin, gateway.APIKey{Name: "ops", Tenant: "ops", Admin: true}); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"status", "--url", s.URL, "--api-key", admin}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	fleet, queue, _ := strings.Cut(strings.TrimSpace(out.String()), "\n\n")
	lines := strings.Split(fleet, "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "WORKER") {
		t.Fatalf("table:\n%s", out.String())
	}
	// The cold-start queue per model: nothing waits.
	if q := strings.Fields(queue); len(q) != 8 || q[0] != "MODEL" || q[5] != "teegate-builtin" || q[6] != "0" || q[7] != "0" {
		t.Fatalf("queue table:\n%s", out.String())
	}
	for _, want := range []string{"teegate-worker-0", "ADMITTED", "simulated", "teegate-builtin", " 0/64 ", "MRTD "} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row lacks %q:\n%s", want, out.String())
		}
	}
	// A key that is not an admin's gets the gateway's refusal, exit 1.
	out.Reset()
	errb.Reset()
	if code := run([]string{"status", "--url", s.URL, "--api-key", stacktest.APIKey}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "403") {
		t.Fatalf("non-admin: exit %d: %s", code, errb.String())
	}
	// No key: a usage error.
	t.Setenv("TEEGATE_API_KEY", "")
	if code := run([]string{"status", "--url", s.URL}, &out, &errb); code != 2 {
		t.Fatalf("no key: exit %d", code)
	}
}
