package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teegate/teegate/cmd/internal/cliutil"
	"github.com/teegate/teegate/gateway"
	"github.com/teegate/teegate/gateway/audit"
	"github.com/teegate/teegate/internal/gatewaynode"
)

const keysUsage = `usage: teegate keys <command> --nats URL [connection flags] [flags]

commands:
  create --tenant T [--name N] [--models a,b] [--rpm N] [--tpm N] [--budget-tokens N] [--admin]
         store a new key and print its secret (shown once, stored only as a SHA-256)
  list   list the keys (id, tenant, models, limits; never secrets)
  revoke --id ID | --key SECRET
         delete a key; every gateway replica refuses it within about a second
  rotate --id ID
         move a key's record (tenant, limits, budget spent) to a new secret, printed once; the old one stops working
  add    (deprecated: use create) store a key, optionally with a given --key secret`

func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(stderr, keysUsage)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	cmd := args[0]
	fs := newFlagSet("keys "+cmd, stderr)
	var nf cliutil.NATSFlags
	nf.Register(fs)
	var (
		name, tenant, models, id, secret string
		admin                            bool
		rpm, tpm, budget                 int64
	)
	switch cmd {
	case "create", "add":
		fs.StringVar(&tenant, "tenant", "", "tenant the key belongs to (required)")
		fs.StringVar(&name, "name", "", "key name")
		fs.StringVar(&models, "models", "", "comma-separated models the key may use (default: all)")
		fs.Int64Var(&rpm, "rpm", 0, "requests per minute (0: the gateway's default)")
		fs.Int64Var(&tpm, "tpm", 0, "tokens per minute (0: unlimited)")
		fs.Int64Var(&budget, "budget-tokens", 0, "tokens the key may spend in all (0: unlimited)")
		fs.BoolVar(&admin, "admin", false, "admin key (may list workers)")
		if cmd == "add" {
			fs.StringVar(&secret, "key", "", "use this secret instead of generating one")
		}
	case "revoke":
		fs.StringVar(&id, "id", "", "the key's id (from list)")
		fs.StringVar(&secret, "key", "", "the key's secret (instead of --id)")
	case "rotate":
		fs.StringVar(&id, "id", "", "the key's id (from list)")
	case "list":
	default:
		fmt.Fprintf(stderr, "teegate keys: unknown command %q\n\n%s\n", cmd, keysUsage)
		return errUsage
	}
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if cmd == "add" && tenant == "" {
		tenant = "default"
	}
	if cmd == "create" && tenant == "" {
		return usageErrorf(fs, "--tenant is required")
	}
	if (cmd == "rotate" || cmd == "revoke") && id == "" && secret == "" {
		return usageErrorf(fs, "--id is required")
	}
	if rpm < 0 || tpm < 0 || budget < 0 {
		return usageErrorf(fs, "limits must be >= 0")
	}
	nc, err := nf.Connect("teegate-keys", nil)
	if err != nil {
		return err
	}
	defer nc.Close()
	plain, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("connecting to jetstream: %w", err)
	}
	// Opening the key bucket and the audit stream keeps their replicas
	// (R3 on a cluster).
	js := gatewaynode.Replicated(plain, 0)
	kv, err := gateway.EnsureKeysBucket(ctx, js)
	if err != nil {
		return err
	}
	rec := gateway.APIKey{Name: name, Tenant: tenant, Admin: admin, Models: splitList(models), RPM: rpm, TPM: tpm, BudgetTokens: budget}
	switch cmd {
	case "create":
		s, rec, err := gateway.CreateKey(ctx, kv, rec)
		if err != nil {
			return err
		}
		if err := keyAudit(ctx, js, rec, "create"); err != nil {
			return err
		}
		fmt.Fprintln(stdout, s)
		fmt.Fprintf(stderr, "key %s for tenant %s created; the secret above is shown only once\n", rec.ID, rec.Tenant)
		return nil
	case "add":
		fmt.Fprintln(stderr, "teegate keys add is deprecated: use `teegate keys create --tenant T`")
		if secret == "" {
			s, rec, err := gateway.CreateKey(ctx, kv, rec)
			if err != nil {
				return err
			}
			fmt.Fprintln(stdout, s)
			return keyAudit(ctx, js, rec, "create")
		}
		if err := gateway.AddKey(ctx, kv, secret, rec); err != nil {
			return err
		}
		fmt.Fprintln(stdout, secret)
		rec.ID = "key_" + gateway.KeyID(secret)[:16]
		return keyAudit(ctx, js, rec, "create")
	case "revoke":
		if id == "" {
			id = gateway.KeyID(secret)
		}
		k, err := gateway.RevokeKey(ctx, kv, id)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "key %s revoked\n", k.ID)
		return keyAudit(ctx, js, k.APIKey, "revoke")
	case "rotate":
		s, k, err := gateway.RotateKey(ctx, kv, id)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, s)
		fmt.Fprintf(stderr, "key %s rotated; the old secret no longer works\n", k.ID)
		return keyAudit(ctx, js, k.APIKey, "rotate")
	}
	all, err := gateway.ListKeys(ctx, kv)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tTENANT\tMODELS\tRPM\tTPM\tBUDGET\tADMIN\tCREATED")
	for _, k := range all {
		ms := strings.Join(k.Models, ",")
		if ms == "" {
			ms = "*"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%v\t%s\n", k.ID, k.Name, k.Tenant, ms, limit(k.RPM), limit(k.TPM), limit(k.BudgetTokens), k.Admin, k.Created.Format(time.RFC3339))
	}
	return tw.Flush()
}

func limit(n int64) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprint(n)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// keyAudit records a key change in the audit log (ids and limits, never
// the secret).
func keyAudit(ctx context.Context, js jetstream.JetStream, k gateway.APIKey, action string) error {
	l, err := audit.Open(ctx, audit.Config{JS: js, Gateway: "teegate keys"})
	if err != nil {
		return err
	}
	defer l.Close()
	e := audit.Entry{Kind: audit.KindKey, Action: action, Tenant: k.Tenant, KeyID: k.ID, Models: k.Models}
	if err := l.AppendWait(ctx, e); err != nil {
		return fmt.Errorf("recording the key change in the audit log: %w", err)
	}
	return nil
}
