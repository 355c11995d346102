package policies

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/teegate/teegate/attest/claims"
)

// Package is the Rego package every policy must declare.
const Package = "teegate.policy"

// Errors returned by Load, LoadBytes and Eval. Test with errors.Is.
var (
	// ErrPolicyFormat: the Rego source does not parse or compile.
	ErrPolicyFormat = errors.New("malformed policy")
	// ErrDataFormat: the reference-value data is not a JSON object, or
	// collides with the policy's own package.
	ErrDataFormat = errors.New("malformed policy data")
	// ErrEvaluation: evaluating the policy failed. The Decision returned
	// with it denies.
	ErrEvaluation = errors.New("evaluating policy failed")
	// ErrUnknownPolicy: Builtin was asked for a policy it does not ship.
	ErrUnknownPolicy = errors.New("unknown builtin policy")
)

// Decision is the outcome of evaluating a policy over one claims set.
type Decision struct {
	Allow bool `json:"allow"`
	// Reasons are the human-readable deny reasons, sorted and deduplicated.
	// Empty when Allow is true.
	Reasons []string `json:"reasons,omitempty"`
	// PolicyHash identifies the policy source and data (see Policy.Hash).
	PolicyHash string `json:"policy_hash"`
	PolicyName string `json:"policy_name"`
}

// Policy is a compiled Rego policy with its reference data. It is immutable
// after Load and safe for concurrent use.
type Policy struct {
	name   string
	hash   string
	source []byte
	data   []byte // canonical JSON
	query  rego.PreparedEvalQuery
	cache  *decisionCache
}

// The query collects allow and deny into arrays so that an undefined rule
// yields an empty array instead of an undefined (empty) result set: Eval can
// then tell "the policy has no allow rule" from "allow is false".
const evalQuery = `allow := [a | a := data.teegate.policy.allow]; deny := [d | d := data.teegate.policy.deny]`

// Load reads a policy file and the reference data beside it. For
// dir/NAME.rego the data is dir/NAME.data.json and/or the *.json files of
// the directory dir/NAME.data/, merged at the root of the data document (a
// top-level key defined twice is an error). Missing data is not an error: a
// fail-closed policy then denies for lack of reference values. The policy's
// name is NAME.
func Load(path string) (*Policy, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading policy: %w", err)
	}
	base := strings.TrimSuffix(path, filepath.Ext(path))
	data, err := loadData(base)
	if err != nil {
		return nil, err
	}
	return LoadBytes(filepath.Base(base), src, data)
}

// dataFiles lists the data files Load reads for the policy dir/NAME.rego
// (base is dir/NAME), in merge order. The Watcher polls the same list, so
// what it watches is exactly what Load reads.
func dataFiles(base string) ([]string, error) {
	var files []string
	if _, err := os.Stat(base + ".data.json"); err == nil {
		files = append(files, base+".data.json")
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("reading policy data: %w", err)
	}
	dirFiles, err := filepath.Glob(filepath.Join(base+".data", "*.json"))
	if err != nil {
		return nil, fmt.Errorf("listing policy data: %w", err)
	}
	sort.Strings(dirFiles)
	return append(files, dirFiles...), nil
}

func loadData(base string) (map[string]any, error) {
	files, err := dataFiles(base)
	if err != nil {
		return nil, err
	}
	merged := map[string]any{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading policy data: %w", err)
		}
		var doc map[string]any
		if err := util.UnmarshalJSON(raw, &doc); err != nil || doc == nil {
			return nil, fmt.Errorf("parsing policy data %s: %w", filepath.Base(f), ErrDataFormat)
		}
		for k, v := range doc {
			if _, dup := merged[k]; dup {
				return nil, fmt.Errorf("merging policy data %s: key %q defined twice: %w", filepath.Base(f), k, ErrDataFormat)
			}
			merged[k] = v
		}
	}
	return merged, nil
}

// LoadBytes compiles a policy from its Rego source (v1 syntax) and its
// reference data, which becomes the root of the data document. data may be
// nil. The inputs are copied; later changes to them do not affect the Policy.
func LoadBytes(name string, regoSrc []byte, data map[string]any) (*Policy, error) {
	canonical, store, err := canonicalData(data)
	if err != nil {
		return nil, err
	}
	src := bytes.Clone(regoSrc)
	mod, err := ast.ParseModuleWithOpts(name+".rego", string(src), ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		return nil, fmt.Errorf("parsing policy %s: %w: %w", name, ErrPolicyFormat, err)
	}
	query, err := rego.New(
		rego.Query(evalQuery),
		rego.ParsedModule(mod),
		rego.Store(store),
		// Reading data as AST values skips a Go-to-AST conversion of the
		// reference values on every evaluation.
		rego.StoreReadAST(true),
		rego.SetRegoVersion(ast.RegoV1),
		// A builtin error (a type mismatch in data, say) must fail the
		// evaluation rather than silently make a deny rule undefined.
		rego.StrictBuiltinErrors(true),
	).PrepareForEval(context.Background())
	if err != nil {
		return nil, fmt.Errorf("compiling policy %s: %w: %w", name, ErrPolicyFormat, err)
	}
	return &Policy{
		name:   name,
		hash:   policyHash(src, canonical),
		source: src,
		data:   canonical,
		query:  query,
		cache:  newDecisionCache(decisionCacheSize),
	}, nil
}

// canonicalData round-trips data through JSON: the result is the canonical
// encoding hashed into the policy hash (sorted keys, no insignificant
// whitespace, numbers as written) and a private store for OPA.
func canonicalData(data map[string]any) ([]byte, storage.Store, error) {
	if data == nil {
		data = map[string]any{}
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding policy data: %w: %w", ErrDataFormat, err)
	}
	var doc map[string]any
	if err := util.UnmarshalJSON(raw, &doc); err != nil {
		return nil, nil, fmt.Errorf("decoding policy data: %w: %w", ErrDataFormat, err)
	}
	if _, ok := doc["teegate"]; ok {
		return nil, nil, fmt.Errorf("checking policy data: top-level key %q would shadow the policy package: %w", "teegate", ErrDataFormat)
	}
	canonical, err := json.Marshal(doc)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding policy data: %w: %w", ErrDataFormat, err)
	}
	return canonical, inmem.NewFromObjectWithOpts(doc, inmem.OptReturnASTValuesOnRead(true)), nil
}

// policyHash is SHA-256 over a domain tag and the length-prefixed source and
// canonical data, so no two (source, data) pairs share an encoding.
func policyHash(src, canonicalData []byte) string {
	h := sha256.New()
	h.Write([]byte("teegate/policy/v1\x00"))
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(src)))
	h.Write(n[:])
	h.Write(src)
	binary.BigEndian.PutUint64(n[:], uint64(len(canonicalData)))
	h.Write(n[:])
	h.Write(canonicalData)
	return hex.EncodeToString(h.Sum(nil))
}

// Name is the policy's name (the file name without .rego for Load).
func (p *Policy) Name() string { return p.name }

// Hash is the lowercase hex SHA-256 identifying the policy source and its
// canonical data; it changes whenever either does.
func (p *Policy) Hash() string { return p.hash }

// Source returns a copy of the Rego source.
func (p *Policy) Source() []byte { return bytes.Clone(p.source) }

// Data returns a copy of the canonical JSON encoding of the reference data.
func (p *Policy) Data() []byte { return bytes.Clone(p.data) }

// Eval evaluates the policy over the claims at time now (truncated to the
// second, UTC, passed as input.now). It fails closed: the returned Decision
// denies, with a reason, whenever the claims are missing, evaluation fails
// (the error then wraps ErrEvaluation), or the policy does not define allow
// and deny. Decisions are cached per (claims, now second): the same inputs
// always produce the same decision, so the cache only saves work.
func (p *Policy) Eval(ctx context.Context, c *claims.Claims, now time.Time) (Decision, error) {
	// OPA notices cancellation only now and then; check up front so a
	// canceled caller always gets the same answer.
	if err := ctx.Err(); err != nil {
		return p.deny("policy evaluation canceled"), fmt.Errorf("evaluating policy %s: %w: %w", p.name, ErrEvaluation, err)
	}
	raw, digest, err := encodeInput(c, now)
	if err != nil {
		return p.deny("claims could not be encoded as policy input"), err
	}
	if d, ok := p.cache.get(digest); ok {
		return d, nil
	}
	in, err := parseInput(raw, now)
	if err != nil {
		return p.deny("claims could not be encoded as policy input"), err
	}
	d, err := p.evalInput(ctx, in)
	if err == nil {
		p.cache.put(digest, d)
	}
	return d, err
}

func (p *Policy) deny(reasons ...string) Decision {
	return Decision{Allow: false, Reasons: reasons, PolicyHash: p.hash, PolicyName: p.name}
}

// encodeInput returns the claims JSON and the cache key: SHA-256 over that
// JSON and the evaluation second, everything the input document holds.
func encodeInput(c *claims.Claims, now time.Time) ([]byte, [sha256.Size]byte, error) {
	var digest [sha256.Size]byte
	if c == nil {
		return nil, digest, fmt.Errorf("building policy input: %w: nil claims", ErrEvaluation)
	}
	raw, err := json.Marshal(c)
	if err != nil {
		return nil, digest, fmt.Errorf("encoding claims: %w: %w", ErrEvaluation, err)
	}
	h := sha256.New()
	h.Write(raw)
	h.Write([]byte{0})
	if !now.IsZero() {
		h.Write([]byte(nowText(now)))
	}
	h.Sum(digest[:0])
	return raw, digest, nil
}

func nowText(now time.Time) string {
	return now.UTC().Truncate(time.Second).Format(time.RFC3339)
}

// parseInput builds the input document (claims JSON plus "now") as an AST
// value, so OPA does not convert a Go map on every evaluation.
func parseInput(raw []byte, now time.Time) (ast.Value, error) {
	v, err := ast.ValueFromReader(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("converting claims: %w: %w", ErrEvaluation, err)
	}
	obj, ok := v.(ast.Object)
	if !ok {
		return nil, fmt.Errorf("converting claims: %w: not an object", ErrEvaluation)
	}
	if !now.IsZero() {
		obj.Insert(ast.InternedTerm("now"), ast.StringTerm(nowText(now)))
	}
	return obj, nil
}

func (p *Policy) evalInput(ctx context.Context, in ast.Value) (Decision, error) {
	rs, err := p.query.Eval(ctx, rego.EvalParsedInput(in))
	if err != nil {
		return p.deny("policy evaluation failed"), fmt.Errorf("evaluating policy %s: %w: %w", p.name, ErrEvaluation, err)
	}
	if len(rs) != 1 {
		return p.deny("policy produced no decision"), nil
	}
	allowVals, _ := rs[0].Bindings["allow"].([]any)
	denyVals, _ := rs[0].Bindings["deny"].([]any)

	var reasons []string
	switch {
	case len(denyVals) == 0:
		reasons = append(reasons, "policy defines no deny rule ("+Package+".deny is undefined)")
	default:
		reasons = append(reasons, denyReasons(denyVals[0])...)
	}
	allow := false
	switch {
	case len(allowVals) == 0:
		reasons = append(reasons, "policy defines no allow rule ("+Package+".allow is undefined)")
	default:
		b, ok := allowVals[0].(bool)
		if !ok {
			reasons = append(reasons, "policy allow rule is not a boolean")
		}
		allow = b
	}
	if allow && len(reasons) == 0 {
		return Decision{Allow: true, PolicyHash: p.hash, PolicyName: p.name}, nil
	}
	if len(reasons) == 0 {
		reasons = append(reasons, "policy did not allow the claims (no deny reason given)")
	}
	sort.Strings(reasons)
	return p.deny(slices.Compact(reasons)...), nil
}

// denyReasons turns the deny document (a set, which OPA returns as an
// array) into strings; anything that is not a string is shown as JSON so a
// sloppy policy still denies with a readable reason.
func denyReasons(v any) []string {
	items, ok := v.([]any)
	if !ok {
		return []string{"policy deny rule is not a set of strings"}
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		if s, ok := it.(string); ok {
			out = append(out, s)
			continue
		}
		b, _ := json.Marshal(it)
		out = append(out, string(b))
	}
	return out
}

// decisionCacheSize bounds the per-policy decision cache. A gateway admits a
// few workers per key epoch; a verifier sees one claims set per receipt
// batch, so a small cache covers the hot set.
const decisionCacheSize = 1024

// decisionCache maps an input digest to its decision. When full it is
// emptied at once: simpler than LRU, and a miss only costs one evaluation.
type decisionCache struct {
	mu  sync.RWMutex
	max int
	m   map[[sha256.Size]byte]Decision
}

func newDecisionCache(max int) *decisionCache {
	return &decisionCache{max: max, m: make(map[[sha256.Size]byte]Decision)}
}

func (c *decisionCache) get(k [sha256.Size]byte) (Decision, bool) {
	c.mu.RLock()
	d, ok := c.m[k]
	c.mu.RUnlock()
	if ok {
		d.Reasons = slices.Clone(d.Reasons)
	}
	return d, ok
}

func (c *decisionCache) put(k [sha256.Size]byte, d Decision) {
	d.Reasons = slices.Clone(d.Reasons)
	c.mu.Lock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[k] = d
	c.mu.Unlock()
}
