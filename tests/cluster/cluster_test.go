package cluster

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/teegate/teegate/attest/client"
	"github.com/teegate/teegate/enclave/sim"
	"github.com/teegate/teegate/internal/proctest"
	"github.com/teegate/teegate/policies"
)

func TestMain(m *testing.M) { os.Exit(proctest.Main(m)) }

// freeBase finds a base with the 32 ports the cluster uses free on
// loopback.
func freeBase(t *testing.T) int {
	t.Helper()
	for range 50 {
		base := 20000 + rand.N(30000)
		ok := true
		for off := 0; off < 32 && ok; off++ {
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(base+off))
			if err != nil {
				ok = false
				continue
			}
			ln.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free port range")
	return 0
}

type env struct {
	gateways []string
	key      string
	nats     string
	creds    string
	dir      string
}

func readEnv(t *testing.T, dir string) env {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "env"))
	if err != nil {
		t.Fatal(err)
	}
	vals := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		k, v, _ := strings.Cut(line, "=")
		uq, err := strconv.Unquote(v)
		if err != nil {
			t.Fatalf("env line %q: %v", line, err)
		}
		vals[k] = uq
	}
	return env{gateways: strings.Fields(vals["GATEWAY_URLS"]), key: vals["API_KEY"], nats: vals["NATS_URLS"], creds: vals["NATS_CREDS"], dir: dir}
}

func pids(t *testing.T, dir string) []int {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.pid"))
	var out []int
	for _, f := range files {
		raw, _ := os.ReadFile(f)
		if p, err := strconv.Atoi(strings.TrimSpace(string(raw))); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func running(pid int) bool {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(raw), ')')
	return i < 0 || i+2 >= len(raw) || raw[i+2] != 'Z'
}

// The cluster's settings: a policy that pins the simulated TD's default
// MRTD (so a worker reporting another is refused), a request deadline the
// node-loss test can wait out, and workers slow enough per token that
// hundreds of requests are in flight at once.
const (
	requestTimeout = 15 * time.Second
	perToken       = 10 * time.Millisecond
)

// pinnedPolicy writes the dev policy plus one rule: the MRTD must be the
// simulated TD's default one.
func pinnedPolicy(t *testing.T) string {
	t.Helper()
	src, data, err := policies.BuiltinSource("dev")
	if err != nil {
		t.Fatal(err)
	}
	m := sim.MeasurementsLabeled("")
	src = append(src, []byte(`
deny contains "measurement mrtd is not pinned" if not mrtd_pinned

mrtd_pinned if {
	some m in data.pinned_mrtd
	input.measurements.mrtd == m
}
`)...)
	var d map[string]any
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	d["pinned_mrtd"] = []string{hex.EncodeToString(m.MRTD[:])}
	data, _ = json.Marshal(d)
	dir := t.TempDir()
	path := filepath.Join(dir, "pinned.rego")
	if err := os.WriteFile(path, src, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pinned.data.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestClusterOfProcesses brings one cluster up with `teegate cluster up`
// and runs every multi-process check against it; the node-loss check runs
// last, as it leaves the cluster one node short.
func TestClusterOfProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process cluster")
	}
	bin := proctest.Dir(t)
	dir := t.TempDir()
	base := freeBase(t)
	teegate := filepath.Join(bin, "teegate")
	up := exec.Command(teegate, "cluster", "up", "--dir", dir, "--port-base", strconv.Itoa(base), "--bin", bin,
		"--policy", pinnedPolicy(t), "--request-timeout", requestTimeout.String(), "--latency-per-token", perToken.String())
	var started []int
	t.Cleanup(func() {
		out, err := exec.Command(teegate, "cluster", "down", "--dir", dir).CombinedOutput()
		if err != nil {
			t.Errorf("cluster down: %v\n%s", err, out)
		}
		for _, p := range started {
			if running(p) {
				t.Errorf("process %d still runs after cluster down", p)
			}
		}
		if left, _ := filepath.Glob(filepath.Join(dir, "*.pid")); len(left) > 0 {
			t.Errorf("pid files left after cluster down: %v", left)
		}
		// TEEGATE_CLUSTER_LOGS=DIR keeps the whole logs of the run.
		if keep := os.Getenv("TEEGATE_CLUSTER_LOGS"); t.Failed() || keep != "" {
			logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				if t.Failed() {
					t.Logf("%s: %s", filepath.Base(l), tail(b))
				}
				if keep != "" {
					_ = os.WriteFile(filepath.Join(keep, filepath.Base(l)), b, 0o600)
				}
			}
		}
	})
	if out, err := up.CombinedOutput(); err != nil {
		started = pids(t, dir)
		t.Fatalf("cluster up: %v\n%s", err, out)
	}
	started = pids(t, dir)
	e := readEnv(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	t.Run("env file", func(t *testing.T) { checkEnvContract(t, dir, e) })
	t.Run("chat through each gateway", func(t *testing.T) { checkChat(t, ctx, e) })
	t.Run("same decisions", func(t *testing.T) {
		view := decisions(t, ctx, e, func(v map[string]string) bool { return len(v) == 2 })
		for id, d := range view {
			if !strings.Contains(d, " admitted ") {
				t.Fatalf("worker %s: %s", id, d)
			}
		}
	})
	t.Run("R3 buckets", func(t *testing.T) { checkReplicas(t, ctx, teegate, e, base) })
	t.Run("refused worker", func(t *testing.T) { checkRefusedWorker(t, ctx, e) })
	t.Run("bad connection", func(t *testing.T) { checkBadConnection(t, ctx, teegate, e) })
	t.Run("node killed", func(t *testing.T) { checkNodeKilled(t, ctx, e, base) })
}

// checkEnvContract: the env file is shell syntax naming GATEWAY_URLS (base
// URLs without /v1), API_KEY, NATS_URLS and NATS_CREDS (a file), and every
// process has a pid file naming a live process of the right program.
func checkEnvContract(t *testing.T, dir string, e env) {
	out, err := exec.Command("sh", "-c", `set -eu; . "$1"; printf '%s\n' "$GATEWAY_URLS" "$API_KEY" "$NATS_URLS" "$NATS_CREDS"`,
		"sh", filepath.Join(dir, "env")).Output()
	if err != nil {
		t.Fatalf("sourcing env: %v", err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	want := []string{strings.Join(e.gateways, " "), e.key, e.nats, e.creds}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("sh reads %q, the env file says %q", got, want)
	}
	if len(e.gateways) != 2 || e.key == "" || len(strings.Split(e.nats, ",")) != 3 {
		t.Fatalf("env %+v", e)
	}
	for _, g := range e.gateways {
		if !strings.HasPrefix(g, "http://127.0.0.1:") || strings.HasSuffix(g, "/v1") || strings.HasSuffix(g, "/") {
			t.Fatalf("GATEWAY_URLS entry %q", g)
		}
	}
	for _, u := range strings.Split(e.nats, ",") {
		if !strings.HasPrefix(u, "nats://127.0.0.1:") {
			t.Fatalf("NATS_URLS entry %q", u)
		}
	}
	if st, err := os.Stat(e.creds); err != nil || !st.Mode().IsRegular() {
		t.Fatalf("NATS_CREDS %s: %v", e.creds, err)
	}
	programs := map[string]string{"nats-n1": "nats-server", "nats-n2": "nats-server", "nats-n3": "nats-server",
		"gateway-1": "teegate", "gateway-2": "teegate", "worker-1": "teegate", "worker-2": "teegate"}
	files, _ := filepath.Glob(filepath.Join(dir, "*.pid"))
	if len(files) != len(programs) {
		t.Fatalf("pid files %v, want one for each of %v", files, programs)
	}
	for name, prog := range programs {
		pid := pidOf(t, dir, name)
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !running(pid) {
			t.Fatalf("%s: process %d does not run", name, pid)
		}
		if argv0 := strings.Split(string(cmdline), "\x00")[0]; filepath.Base(argv0) != prog {
			t.Fatalf("%s: process %d runs %s, want %s", name, pid, argv0, prog)
		}
	}
}

func pidOf(t *testing.T, dir, name string) int {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, name+".pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatalf("%s.pid: %v", name, err)
	}
	return pid
}

// checkChat: chat, streamed and not, through either gateway, verifies with
// the Go SDK middleware; its evidence and receipt answer on both.
func checkChat(t *testing.T, ctx context.Context, e env) {
	for _, gw := range e.gateways {
		c := sdkClient(t, gw, e.key)
		for i, stream := range []bool{false, true} {
			var res client.Result
			var hdr *http.Response
			rctx := client.WithResult(ctx, &res)
			p := openai.ChatCompletionNewParams{Model: "teegate-builtin", MaxTokens: openai.Int(8),
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Tell me about lighthouses.")}}
			if stream {
				st := c.Chat.Completions.NewStreaming(rctx, p, option.WithResponseInto(&hdr))
				for st.Next() {
				}
				if err := st.Err(); err != nil {
					t.Fatalf("%s stream: %v", gw, err)
				}
			} else if _, err := c.Chat.Completions.New(rctx, p, option.WithResponseInto(&hdr)); err != nil {
				t.Fatalf("%s completion: %v", gw, err)
			}
			if !res.Verified || res.EvidenceID == "" || res.Claims == nil || !res.Claims.Simulated {
				t.Fatalf("%s answer %d not verified: %+v", gw, i, res)
			}
			rid := hdr.Header.Get("X-Request-Id")
			for _, other := range e.gateways {
				if code := get(t, ctx, other+"/v1/attestation/evidence/"+res.EvidenceID, e.key, nil); code != 200 {
					t.Fatalf("evidence on %s: %d", other, code)
				}
				if code := pollCode(t, ctx, other+"/v1/attestation/receipts/"+rid, e.key); code != 200 {
					t.Fatalf("receipt %s on %s: %d", rid, other, code)
				}
			}
		}
	}
}

func sdkClient(t *testing.T, gw, key string) openai.Client {
	t.Helper()
	v, err := client.NewVerifier(client.Config{Options: client.Options{AllowSimulated: true}})
	if err != nil {
		t.Fatal(err)
	}
	return openai.NewClient(option.WithBaseURL(gw+"/v1"), option.WithAPIKey(key), option.WithMaxRetries(0), option.WithMiddleware(v.Middleware()))
}

type workerView struct {
	WorkerID   string   `json:"worker_id"`
	EvidenceID string   `json:"evidence_id"`
	Decision   string   `json:"decision"`
	Policy     string   `json:"policy"`
	Reasons    []string `json:"reasons"`
}

// decisions lists /v1/attestation/workers on every gateway until they
// agree (each replica learns the others' decisions by watching the shared
// bucket) and until ok accepts the list.
func decisions(t *testing.T, ctx context.Context, e env, ok func(map[string]string) bool) map[string]string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		views := make([]map[string]string, len(e.gateways))
		for i, gw := range e.gateways {
			var body struct {
				Data []workerView `json:"data"`
			}
			if code := get(t, ctx, gw+"/v1/attestation/workers", e.key, &body); code != 200 {
				t.Fatalf("workers on %s: %d", gw, code)
			}
			views[i] = map[string]string{}
			for _, w := range body.Data {
				views[i][w.WorkerID] = w.EvidenceID + " " + w.Decision + " " + w.Policy + " " + strings.Join(w.Reasons, "; ")
			}
		}
		agree := true
		for i := 1; i < len(views); i++ {
			agree = agree && fmt.Sprint(views[0]) == fmt.Sprint(views[i])
		}
		if agree && ok(views[0]) {
			return views[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replicas list %v", views)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func get(t *testing.T, ctx context.Context, url, key string, into any) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if into != nil && resp.StatusCode == 200 {
		if err := json.Unmarshal(b, into); err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
	}
	return resp.StatusCode
}

// pollCode waits for a receipt the gateway stores after answering.
func pollCode(t *testing.T, ctx context.Context, url, key string) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code := get(t, ctx, url, key, nil)
		if code == 200 || time.Now().After(deadline) {
			return code
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// checkReplicas: every bucket and stream teegate keeps lives on all three
// nodes (R3), also after the keys command, which does not know the
// cluster's size, opened the key bucket.
func checkReplicas(t *testing.T, ctx context.Context, teegate string, e env, base int) {
	out, err := exec.CommandContext(ctx, teegate, "keys", "create", "--tenant", "r3", "--nats", e.nats, "--nats-creds", e.creds).CombinedOutput()
	if err != nil {
		t.Fatalf("keys create: %v\n%s", err, out)
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://127.0.0.1:%d/jsz?accounts=true&streams=true&config=true", base+20), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var jsz struct {
		Accounts []struct {
			Streams []struct {
				Name   string `json:"name"`
				Config struct {
					Replicas int `json:"num_replicas"`
				} `json:"config"`
			} `json:"stream_detail"`
		} `json:"account_details"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&jsz); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, a := range jsz.Accounts {
		for _, s := range a.Streams {
			n++
			if s.Config.Replicas != 3 {
				t.Errorf("stream %s has %d replicas, want 3", s.Name, s.Config.Replicas)
			}
		}
	}
	if n < 8 {
		t.Fatalf("%d streams, want teegate's buckets and audit stream", n)
	}
}
