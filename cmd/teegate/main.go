// Command teegate is the operator CLI: `teegate dev` runs the whole product
// in one process; other subcommands run a gateway or worker against an
// external NATS, manage API keys, and verify attestation offline.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"
)

// command is one subcommand: it parses its own flags and runs.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"dev", "run everything in one process: embedded NATS, gateway, a simulated-TEE worker with the builtin engine", runDev},
		{"gateway", "run the OpenAI-compatible gateway against a NATS server", runGateway},
		{"worker", "run a worker (engine beside it) against a NATS server", runWorker},
		{"admission", "run the admission service alone (the auth callout that judges workers), beside or instead of gateway replicas", runAdmission},
		{"nats-config", "write the nats-server configs (accounts, JetStream, routes, auth callout) and keys of an external cluster", runNATSConfig},
		{"cluster", "up|down: a local multi-process cluster (3 nats-server nodes, 2 gateways, 2 simulated workers) for trying a fleet", runCluster},
		{"keys", "manage API keys: create, list, revoke, rotate", runKeys},
		{"audit", "verify, export and sum the audit log", runAudit},
		{"verify", "verify evidence, quotes, GPU reports and responses offline", runVerify},
		{"collateral", "fetch vendor collateral (Intel PCS, AMD KDS, NVIDIA OCSP and RIMs) for offline verification", runCollateral},
		{"policy", "evaluate a policy against claims; show the builtin policies", runPolicy},
		{"bench", "measure the stack against a direct upstream call, side by side (--quick, --json)", runBench},
		{"status", "print the fleet (workers, decisions, evidence) as a table, from a gateway", runStatus},
		{"probe", "show the TEE and confidential GPUs this machine offers", runProbe},
		{"version", "print the version", func(_ context.Context, _ []string, out, _ io.Writer) error {
			_, err := fmt.Fprintln(out, "teegate", version)
			return err
		}},
	}
}

var version = "dev"

// errUsage marks errors already explained to the user (exit 2).
var errUsage = errors.New("usage")

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		ctx, cancel := signalContext()
		defer cancel()
		err := c.run(ctx, args[1:], stdout, stderr)
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			return 2
		default:
			fmt.Fprintf(stderr, "teegate %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "teegate: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: teegate <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'teegate <command> -h' for a command's flags.")
}

// newFlagSet returns a flag set that reports errors as errUsage.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("teegate "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		// Shown like a flag error: the complaint, then the flags.
		fmt.Fprintf(fs.Output(), "unexpected arguments: %v\n", fs.Args())
		fs.Usage()
		return errUsage
	}
	return nil
}

// usageErrorf explains a bad invocation of fs's command on one line, shows
// its flags and returns errUsage.
func usageErrorf(fs *flag.FlagSet, format string, a ...any) error {
	fmt.Fprintf(fs.Output(), "%s: %s\n", fs.Name(), fmt.Sprintf(format, a...))
	fs.Usage()
	return errUsage
}

// parseNow reads a --now flag: the time to verify or evaluate at, the
// current time when the flag was not given.
func parseNow(arg string) (time.Time, error) {
	if arg == "" {
		return time.Now(), nil
	}
	t, err := time.Parse(time.RFC3339, arg)
	if err != nil {
		return time.Time{}, fmt.Errorf("--now: not an RFC 3339 time: %q", arg)
	}
	return t, nil
}
