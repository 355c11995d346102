package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/teegate/teegate/cmd/internal/cliutil"
	"github.com/teegate/teegate/gateway"
	"github.com/teegate/teegate/internal/gatewaynode"
)

// runAdmission runs the admission service alone: the gateway node's
// assembly (internal/gatewaynode) without its HTTP side. It answers the
// servers' auth callout in turn with every gateway replica that holds the
// same seed, keeping its decisions in the shared bucket.
func runAdmission(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlagSet("admission", stderr)
	var nf, sysf cliutil.NATSFlags
	nf.Register(fs)
	sysf.RegisterAuth(fs, "nats-sys", "NATS_SYS")
	var obs cliutil.ObserveFlags
	obs.Register(fs, "json", false)
	seed := fs.String("admission-seed", os.Getenv("TEEGATE_ADMISSION_SEED"), "file with the account nkey seed the servers' auth_callout names as issuer, the gateways' own (required; default $TEEGATE_ADMISSION_SEED)")
	policy := fs.String("policy", "production", "admission policy: production, dev, or a .rego file (watched; SIGHUP reloads); the fleet adopts the latest replica's")
	allowSim := fs.Bool("allow-simulated", false, "let simulated evidence verify (development clusters only; the policy still decides)")
	simRoot := fs.String("sim-root", "", "with -allow-simulated: the simulated root certificate (PEM) workers must chain to; others are refused")
	replicas := fs.Int("replicas", 1, "JetStream replicas of the buckets and streams it creates (3 on a three-node cluster)")
	timeout := fs.Duration("request-timeout", 10*time.Minute, "the gateways' deadline of one request: how long an admitted worker may answer one")
	name := fs.String("name", "", "this service's name in audit records and the policy bucket (default: the host name)")
	var af auditFlags
	af.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *seed == "" {
		return usageErrorf(fs, "-admission-seed is required")
	}
	if *replicas < 1 || *replicas > 5 {
		return usageErrorf(fs, "-replicas must be 1 to 5")
	}
	log, err := obs.Logger(stderr)
	if err != nil {
		return err
	}
	issuer, err := cliutil.ReadAccountSeed(*seed)
	if err != nil {
		return err
	}
	pinned, err := readSimRoots(flagPaths(*simRoot))
	if err != nil {
		return err
	}
	if *name == "" {
		*name, _ = os.Hostname()
	}
	nc, err := nf.Connect("teegate-admission", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	sys, err := connectSys(nf, sysf, log)
	if err != nil {
		return err
	}
	if sys != nil {
		defer sys.Close()
	}
	ac := af.streamConfig(*replicas)
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	n, err := gatewaynode.Start(startCtx, gatewaynode.Config{AdmissionOnly: true,
		Conn: nc, Sys: sys, Issuer: issuer, Policy: *policy, AllowSimulated: *allowSim, PinnedSimulatedRoots: pinned,
		Gateway: gateway.Config{RequestTimeout: *timeout}, Replicas: *replicas, Audit: ac, AuditCheckpointEvery: af.every,
		Name: *name, Logger: log})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		n.Close(sctx)
	}()
	log.Info("admission service running", "policy", n.Policy.Policy().Name(), "replicas", *replicas)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			rctx, cancel := context.WithTimeout(ctx, time.Minute)
			if err := n.ReloadPolicy(rctx); err != nil {
				log.Error("reloading the admission policy failed", "err", err)
			}
			cancel()
		}
	}
}

// connectSys opens the system-account connection of a node that answers
// the auth callout (nil when sysf names no credentials), to the same
// servers, with the same TLS, as nf.
func connectSys(nf, sysf cliutil.NATSFlags, log *slog.Logger) (*nats.Conn, error) {
	if !sysf.HasAuth() {
		return nil, nil
	}
	sysf.URLs, sysf.TLSCA, sysf.TLSCert, sysf.TLSKey, sysf.ConnectTimeout = nf.URLs, nf.TLSCA, nf.TLSCert, nf.TLSKey, nf.ConnectTimeout
	sysf.InOrder = nf.InOrder
	sys, err := sysf.Connect("teegate-admission-sys", log)
	if err != nil {
		return nil, fmt.Errorf("system account: %w", err)
	}
	return sys, nil
}
