package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/teegate/teegate/enclave/sim"
	"github.com/teegate/teegate/internal/natsembed"
	"github.com/teegate/teegate/internal/proctest"
	"github.com/teegate/teegate/internal/stacktest"
	"github.com/teegate/teegate/internal/workernode"
	"github.com/teegate/teegate/worker"
	"github.com/teegate/teegate/worker/engine/builtin"
)

// teegate admission alone answers the servers' auth callout: a worker
// joining a server with no gateway at all is judged and admitted by it.
func TestAdmissionCommandJudgesWorkers(t *testing.T) {
	issuer, _ := nkeys.CreateAccount()
	pub, _ := issuer.PublicKey()
	seed, _ := issuer.Seed()
	dir := t.TempDir()
	seedFile := filepath.Join(dir, "admission.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	svc := natsembed.User{Name: "svc", Password: "svc-password"}
	srv, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir(), Listen: "127.0.0.1:0",
		Auth: &natsembed.Auth{CalloutIssuer: pub, Services: []natsembed.User{svc}}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	ctx, cancel := context.WithCancel(context.Background())
	var logs proctest.Buffer
	done := make(chan error, 1)
	go func() {
		done <- runAdmission(ctx, []string{"--nats", srv.ClientURL(), "--nats-user", svc.Name, "--nats-password", svc.Password,
			"--admission-seed", seedFile, "--policy", "dev", "--allow-simulated", "--name", "adm"}, &logs, &logs)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("teegate admission: %v", err)
		}
	}()
	stacktest.Eventually(t, time.Minute, func() bool {
		select {
		case err := <-done:
			t.Fatalf("teegate admission exited: %v\n%s", err, logs.String())
		default:
		}
		return strings.Contains(logs.String(), "admission service running")
	}, "teegate admission to start")
	eng, err := builtin.New(builtin.Config{})
	if err != nil {
		t.Fatal(err)
	}
	att, _, err := sim.OpenAttester(t.TempDir(), sim.Config{GPUs: 1, QuoteDelay: sim.NoDelay})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), time.Minute)
	defer wcancel()
	w, err := workernode.Start(wctx, workernode.Config{Engine: eng, Attester: att, Worker: worker.Config{ID: "w"},
		Dial: func(o ...nats.Option) (*nats.Conn, error) { return nats.Connect(srv.ClientURL(), o...) }})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.Background())
	if !w.Worker.Admission().Admitted {
		t.Fatalf("not admitted: %v\n%s", w.Worker.Admission().Reasons, logs.String())
	}
	// The decision is logged after the worker is told; wait for the line.
	stacktest.Eventually(t, 30*time.Second, func() bool { return strings.Contains(logs.String(), `"admitted":true`) },
		"the admission service to log the decision")
}

// Without the seed it refuses to start.
func TestAdmissionCommandNeedsTheSeed(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"admission", "--nats", "nats://127.0.0.1:1"}, &out, &out); code != 2 || !strings.Contains(out.String(), "-admission-seed is required") {
		t.Fatalf("exit %d: %s", code, out.String())
	}
}
