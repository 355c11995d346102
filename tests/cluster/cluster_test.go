package cluster

import (
	"context"
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
)

// build compiles teegate and nats-server into a temporary folder.
func build(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	for _, pkg := range [][2]string{{"teegate", "github.com/teegate/teegate/cmd/teegate"}, {"nats-server", "github.com/nats-io/nats-server/v2"}} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(bin, pkg[0]), pkg[1]).CombinedOutput()
		if err != nil {
			t.Fatalf("building %s: %v\n%s", pkg[0], err, out)
		}
	}
	return bin
}

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

func TestClusterOfProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process cluster")
	}
	bin := build(t)
	dir := t.TempDir()
	base := freeBase(t)
	teegate := filepath.Join(bin, "teegate")
	up := exec.Command(teegate, "cluster", "up", "--dir", dir, "--port-base", strconv.Itoa(base), "--bin", bin)
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
	})
	if out, err := up.CombinedOutput(); err != nil {
		started = pids(t, dir)
		logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			t.Logf("%s: %s", filepath.Base(l), tail(b))
		}
		t.Fatalf("cluster up: %v\n%s", err, out)
	}
	started = pids(t, dir)
	if len(started) != 7 {
		t.Fatalf("%d pid files, want 7 (3 nats, 2 gateways, 2 workers)", len(started))
	}
	e := readEnv(t, dir)
	if len(e.gateways) != 2 || e.key == "" || len(strings.Split(e.nats, ",")) != 3 {
		t.Fatalf("env %+v", e)
	}
	if _, err := os.Stat(e.creds); err != nil {
		t.Fatalf("NATS_CREDS: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Chat, streamed and not, through either gateway, verifies with the
	// Go SDK middleware; its evidence and receipt answer on both.
	for _, gw := range e.gateways {
		v, err := client.NewVerifier(client.Config{Options: client.Options{AllowSimulated: true}})
		if err != nil {
			t.Fatal(err)
		}
		c := openai.NewClient(option.WithBaseURL(gw+"/v1"), option.WithAPIKey(e.key), option.WithMaxRetries(0), option.WithMiddleware(v.Middleware()))
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

	// Both replicas list the same decisions.
	views := make([]map[string]string, len(e.gateways))
	for i, gw := range e.gateways {
		var body struct {
			Data []struct {
				WorkerID   string `json:"worker_id"`
				EvidenceID string `json:"evidence_id"`
				Decision   string `json:"decision"`
				Policy     string `json:"policy"`
			} `json:"data"`
		}
		if code := get(t, ctx, gw+"/v1/attestation/workers", e.key, &body); code != 200 {
			t.Fatalf("workers on %s: %d", gw, code)
		}
		views[i] = map[string]string{}
		for _, w := range body.Data {
			views[i][w.WorkerID] = w.EvidenceID + " " + w.Decision + " " + w.Policy
		}
	}
	if len(views[0]) != 2 || fmt.Sprint(views[0]) != fmt.Sprint(views[1]) {
		t.Fatalf("the replicas disagree: %v vs %v", views[0], views[1])
	}
	for id, d := range views[0] {
		if !strings.Contains(d, " admitted ") {
			t.Fatalf("worker %s: %s", id, d)
		}
	}

	// A wrong credential or an unreachable cluster: one error line and a
	// non-zero exit, never a hang.
	bad := filepath.Join(t.TempDir(), "bad.nk")
	if err := os.WriteFile(bad, []byte("SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "nats://" + ln.Addr().String()
	ln.Close()
	for name, args := range map[string][]string{
		"wrong credential": {"gateway", "--nats", e.nats, "--nats-creds", bad, "--addr", "127.0.0.1:0"},
		"unreachable":      {"gateway", "--nats", dead, "--nats-creds", e.creds, "--addr", "127.0.0.1:0", "--nats-timeout", "2s"},
	} {
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		out, err := exec.CommandContext(cctx, teegate, args...).CombinedOutput()
		hung := cctx.Err() != nil
		cancel()
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		last := lines[len(lines)-1]
		if err == nil || hung || len(lines) != 1 || !strings.Contains(last, "connecting to NATS") {
			t.Fatalf("%s: err %v, output:\n%s", name, err, out)
		}
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
