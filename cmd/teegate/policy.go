package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/teegate/teegate/attest/claims"
	"github.com/teegate/teegate/policies"
)

// errDenied is returned by `teegate policy eval` when the policy denies, so
// scripts can gate on the exit status; its message carries the first reason.
var errDenied = errors.New("denied")

// runPolicy dispatches `teegate policy eval|show`: operators test a policy
// and its reference data against claims before deploying it, and start
// their own policy from a shipped one.
func runPolicy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	subs := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"eval": runPolicyEval,
		"show": runPolicyShow,
	}
	if len(args) == 0 || subs[args[0]] == nil {
		fmt.Fprintln(stderr, "usage: teegate policy eval --claims FILE --policy FILE|production|dev [--now RFC3339] [--json]")
		fmt.Fprintln(stderr, "       teegate policy show production|dev [--rego|--data]")
		return errUsage
	}
	return subs[args[0]](ctx, args[1:], stdout, stderr)
}

func runPolicyEval(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("policy eval", stderr)
	claimsPath := fs.String("claims", "", "claims JSON file (the normalized claims a verifier produced)")
	policyArg := fs.String("policy", "", "policy: a .rego file (data beside it, see policies/README.md) or a builtin: "+strings.Join(policies.BuiltinNames(), ", "))
	nowArg := fs.String("now", "", "evaluation time, RFC 3339 (default: the current time)")
	asJSON := fs.Bool("json", false, "print the decision as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *claimsPath == "" || *policyArg == "" {
		fmt.Fprintln(stderr, "teegate policy eval: --claims and --policy are required")
		return errUsage
	}
	now, err := parseNow(*nowArg)
	if err != nil {
		fmt.Fprintf(stderr, "teegate policy eval: %v\n", err)
		return errUsage
	}

	raw, err := os.ReadFile(*claimsPath)
	if err != nil {
		return fmt.Errorf("reading claims: %w", err)
	}
	c, err := decodeClaims(raw)
	if err != nil {
		return err
	}
	p, err := policies.Resolve(*policyArg)
	if err != nil {
		return fmt.Errorf("loading policy: %w", err)
	}
	d, evalErr := p.Eval(ctx, c, now)
	if err := printDecision(stdout, d, *asJSON); err != nil {
		return err
	}
	switch {
	case evalErr != nil:
		return evalErr
	case !d.Allow && len(d.Reasons) > 0:
		return fmt.Errorf("%w: %s", errDenied, d.Reasons[0])
	case !d.Allow:
		// Eval always gives a reason; this guards the exit status anyway.
		return errDenied
	}
	return nil
}

// decodeClaims parses a claims file strictly: an unknown field is most
// likely a typo, and a typo in a claims file under test would silently
// evaluate something else than the operator meant.
func decodeClaims(raw []byte) (*claims.Claims, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var c claims.Claims
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("decoding claims: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("decoding claims: trailing data after the claims object")
	}
	return &c, nil
}

func printDecision(w io.Writer, d policies.Decision, asJSON bool) error {
	if asJSON {
		b, err := json.MarshalIndent(d, "", "  ")
		if err != nil {
			return fmt.Errorf("encoding decision: %w", err)
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	var b strings.Builder
	if d.Allow {
		b.WriteString("allow\n")
	} else {
		b.WriteString("deny\n")
	}
	for _, r := range d.Reasons {
		fmt.Fprintf(&b, "  reason: %s\n", r)
	}
	fmt.Fprintf(&b, "policy: %s\nhash: %s\n", d.PolicyName, d.PolicyHash)
	_, err := io.WriteString(w, b.String())
	return err
}

// runPolicyShow prints a shipped policy's Rego and data, the starting point
// for an operator's own (see policies/README.md for the data schema).
func runPolicyShow(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("policy show", stderr)
	onlyRego := fs.Bool("rego", false, "print only the Rego source")
	onlyData := fs.Bool("data", false, "print only the data JSON")
	// The name may come before or after the flags.
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	parseFlags := func(args []string) error {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return errUsage
		}
		return nil
	}
	if err := parseFlags(args); err != nil {
		return err
	}
	if name == "" && fs.NArg() > 0 {
		name = fs.Arg(0)
		if err := parseFlags(fs.Args()[1:]); err != nil {
			return err
		}
	}
	if name == "" || fs.NArg() > 0 || (*onlyRego && *onlyData) {
		fmt.Fprintf(stderr, "usage: teegate policy show %s [--rego|--data]\n", strings.Join(policies.BuiltinNames(), "|"))
		return errUsage
	}
	src, data, err := policies.BuiltinSource(name)
	if err != nil {
		return err
	}
	switch {
	case *onlyRego:
		_, err = stdout.Write(src)
	case *onlyData:
		_, err = stdout.Write(data)
	default:
		p, perr := policies.Builtin(name)
		if perr != nil {
			return perr
		}
		// Rego comments, so the Rego part can be cut out and used as is.
		_, err = fmt.Fprintf(stdout, "# %s.rego (policy hash %s)\n%s\n# %s.data.json\n%s", name, p.Hash(), src, name, data)
	}
	return err
}
