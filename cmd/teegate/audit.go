package main

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teegate/teegate/attest/verifiers"
	"github.com/teegate/teegate/cmd/internal/cliutil"
	"github.com/teegate/teegate/gateway/audit"
	"github.com/teegate/teegate/worker/wire"
)

// auditFlags configure a gateway's audit log.
type auditFlags struct {
	retention time.Duration
	replicas  int
	every     int
}

func (a *auditFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&a.retention, "audit-retention", 0, "keep audit records this long (0: forever)")
	fs.IntVar(&a.replicas, "audit-replicas", 0, "JetStream replicas of the audit stream and key bucket in a cluster (0: -replicas)")
	fs.IntVar(&a.every, "audit-checkpoint-every", 100, "records between signed audit checkpoints")
}

// streamConfig is the audit stream of a gateway node whose buckets have
// replicas copies: -audit-replicas, when set above 1, wins.
func (a *auditFlags) streamConfig(replicas int) audit.StreamConfig {
	c := audit.StreamConfig{MaxAge: a.retention, Replicas: a.replicas}
	if c.Replicas <= 1 {
		c.Replicas = replicas
	}
	return c
}

// open opens the audit log with the shared audit key.
func (a *auditFlags) open(ctx context.Context, js jetstream.JetStream, name string, log *slog.Logger) (*audit.Log, error) {
	key, err := audit.LoadOrCreateKey(ctx, js, a.replicas)
	if err != nil {
		return nil, err
	}
	return audit.Open(ctx, audit.Config{JS: js, Gateway: name, Key: key, CheckpointEvery: a.every,
		Stream: audit.StreamConfig{MaxAge: a.retention, Replicas: a.replicas}, Logger: log.With("component", "audit")})
}

const auditUsage = `usage: teegate audit <command> [flags]

commands:
  verify --nats URL | --file EXPORT   replay the chain, every checkpoint and every receipt signature against its evidence
  export --nats URL --tenant T [--since TIME]   write a tenant's JSON Lines export (other tenants' records as digests only)
  usage  --nats URL --by provider|worker|tenant|model [--since TIME]   sum tokens and requests from verified receipts only`

func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(stderr, auditUsage)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	cmd := args[0]
	fs := newFlagSet("audit "+cmd, stderr)
	var nf cliutil.NATSFlags
	nf.Register(fs)
	var (
		file, tenant, since, by, pin string
		allowSim, asJSON             bool
	)
	switch cmd {
	case "verify":
		fs.StringVar(&file, "file", "", "verify this export offline instead of the stream")
	case "export":
		fs.StringVar(&tenant, "tenant", "", "tenant to export (required)")
		fs.StringVar(&since, "since", "", "first record time, RFC 3339 (default: the whole log)")
	case "usage":
		fs.StringVar(&by, "by", "provider", "sum by provider, worker, tenant or model")
		fs.StringVar(&since, "since", "", "sum receipts at or after this time, RFC 3339")
		fs.StringVar(&file, "file", "", "sum from this export instead of the stream")
	default:
		fmt.Fprintf(stderr, "teegate audit: unknown command %q\n\n%s\n", cmd, auditUsage)
		return errUsage
	}
	if cmd != "export" {
		fs.StringVar(&pin, "audit-key", "", "hex Ed25519 public key the checkpoints must be signed with (recommended)")
		fs.BoolVar(&allowSim, "allow-simulated", false, "accept evidence from the simulated TEE (development only)")
		fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	}
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	var sinceT time.Time
	if since != "" {
		t, err := time.Parse(time.RFC3339, since)
		if err != nil {
			return usageErrorf(fs, "--since: not an RFC 3339 time: %q", since)
		}
		sinceT = t
	}
	if cmd == "export" && tenant == "" {
		return usageErrorf(fs, "--tenant is required")
	}
	if cmd == "usage" {
		if _, err := audit.Ledger(nil, by); err != nil {
			return usageErrorf(fs, "%v", err)
		}
	}
	opts := audit.VerifyOptions{Bundles: verifiers.Options(verifiers.Config{AllowSimulated: allowSim}), Since: sinceT}
	if pin != "" {
		b, err := hex.DecodeString(pin)
		if err != nil || len(b) != ed25519.PublicKeySize {
			return usageErrorf(fs, "--audit-key: not a hex Ed25519 public key")
		}
		opts.AuditKey = b
	}
	var rep *audit.Report
	if file != "" {
		f, err := os.Open(file)
		if err != nil {
			return fmt.Errorf("opening export: %w", err)
		}
		defer f.Close()
		if rep, err = audit.VerifyFile(ctx, f, opts); err != nil {
			return err
		}
	} else {
		nc, err := nf.Connect("teegate-audit", nil)
		if err != nil {
			return err
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return fmt.Errorf("connecting to jetstream: %w", err)
		}
		evidence := evidenceLookup(js)
		if cmd == "export" {
			return audit.Export(ctx, js, stdout, tenant, sinceT, evidence)
		}
		opts.Evidence = evidence
		if rep, err = audit.VerifyStream(ctx, js, opts); err != nil {
			return err
		}
	}
	if cmd == "usage" {
		if !rep.OK() {
			printProblems(stderr, rep)
			return errors.New("the audit log does not verify: no ledger from it")
		}
		sums, _ := audit.Ledger(rep.Served, by)
		if asJSON {
			return json.NewEncoder(stdout).Encode(sums)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "%s\tREQUESTS\tPROMPT\tCOMPLETION\tTOTAL\n", by)
		for _, s := range sums {
			k := s.Key
			if k == "" {
				k = "(none)"
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\n", k, s.Requests, s.PromptTokens, s.CompletionTokens, s.TotalTokens)
		}
		return tw.Flush()
	}
	if asJSON {
		if err := json.NewEncoder(stdout).Encode(reportJSON(rep)); err != nil {
			return err
		}
	} else {
		printReport(stdout, rep)
	}
	if !rep.OK() {
		printProblems(stderr, rep)
		return fmt.Errorf("the audit log does not verify: %d problems, the first at record %d", len(rep.Problems), rep.Problems[0].Seq)
	}
	return nil
}

func evidenceLookup(js jetstream.JetStream) func(ctx context.Context, id string) ([]byte, error) {
	return func(ctx context.Context, id string) ([]byte, error) {
		kv, err := js.KeyValue(ctx, wire.EvidenceBucket)
		if err != nil {
			return nil, err
		}
		e, err := kv.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		return e.Value(), nil
	}
}

func printReport(w io.Writer, r *audit.Report) {
	pinned := "not pinned: pass --audit-key to pin it"
	if r.Pinned {
		pinned = "pinned"
	}
	if r.Tenant != "" {
		fmt.Fprintf(w, "export of tenant %s\n", r.Tenant)
	}
	fmt.Fprintf(w, "chain: records %d to %d (%d with content, %d as digests)\n", r.FirstSeq, r.HeadSeq, r.Records, r.Links)
	fmt.Fprintf(w, "receipts: %d verified against their evidence\n", r.Receipts)
	fmt.Fprintf(w, "checkpoints: %d valid, signed through record %d by %s (%s)\n", r.Checkpoints, r.Anchored, r.Signer, pinned)
	if r.Anchored < r.HeadSeq {
		fmt.Fprintf(w, "records %d to %d are not covered by a checkpoint yet\n", r.Anchored+1, r.HeadSeq)
	}
	if r.OK() {
		fmt.Fprintln(w, "OK")
	}
}

func printProblems(w io.Writer, r *audit.Report) {
	for i, p := range r.Problems {
		if i == 20 {
			fmt.Fprintf(w, "… and %d more\n", len(r.Problems)-20)
			break
		}
		fmt.Fprintln(w, "FAIL", p.Error())
	}
}

func reportJSON(r *audit.Report) any {
	probs := make([]map[string]any, len(r.Problems))
	for i, p := range r.Problems {
		probs[i] = map[string]any{"seq": p.Seq, "error": p.Err.Error()}
	}
	return map[string]any{"ok": r.OK(), "first_seq": r.FirstSeq, "head_seq": r.HeadSeq, "records": r.Records,
		"links": r.Links, "kinds": r.Kinds, "receipts": r.Receipts, "checkpoints": r.Checkpoints, "anchored": r.Anchored,
		"signer": r.Signer, "pinned": r.Pinned, "tenant": r.Tenant, "problems": probs}
}
