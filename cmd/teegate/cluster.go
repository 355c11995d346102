package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teegate/teegate/cmd/internal/cliutil"
	"github.com/teegate/teegate/enclave/sim"
	"github.com/teegate/teegate/gateway"
	"github.com/teegate/teegate/internal/gatewaynode"
	"github.com/teegate/teegate/internal/natsconf"
)

// Cluster layout from a port base: NATS clients base+0..2, routes
// base+10..12, monitoring base+20..22, gateways base+30..31.
const (
	clusterNodes    = 3
	clusterGateways = 2
	clusterWorkers  = 2
	// DefaultClusterPortBase is CLUSTER_PORT_BASE's default.
	defaultClusterPortBase = 14200
)

func runNATSConfig(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("nats-config", stderr)
	dir := fs.String("dir", "", "folder to write the node configs and seed files to (required)")
	nodes := fs.Int("nodes", 3, "cluster nodes")
	host := fs.String("host", "127.0.0.1", "address the nodes listen on and reach each other at")
	base := fs.Int("port-base", 4222, "client ports from here; routes at +10, monitoring at +20")
	store := fs.String("store-dir", "", "JetStream state folder (default: <dir>/data); node <name> uses <store-dir>/<name>")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *dir == "" || *nodes < 1 || *nodes > 9 {
		return usageErrorf(fs, "-dir is required and -nodes must be 1 to 9")
	}
	paths, err := writeNATSConfig(*dir, *store, *host, *base, *nodes)
	if err != nil {
		return err
	}
	for _, p := range paths {
		fmt.Fprintln(stdout, p)
	}
	fmt.Fprintf(stdout, "gateways: --admission-seed %s --nats-creds %s --nats-sys-creds %s --replicas %d\n",
		filepath.Join(*dir, natsconf.AdmissionSeedFile), filepath.Join(*dir, natsconf.ServiceSeedFile), filepath.Join(*dir, natsconf.SystemSeedFile), min(*nodes, 3))
	return nil
}

func writeNATSConfig(dir, store, host string, base, nodes int) ([]string, error) {
	if store == "" {
		store = filepath.Join(dir, "data")
	}
	c := &natsconf.Config{}
	for i := range nodes {
		name := fmt.Sprintf("n%d", i+1)
		c.Nodes = append(c.Nodes, natsconf.Node{Name: name, Host: host, ClientPort: base + i, ClusterPort: base + 10 + i,
			MonitorPort: base + 20 + i, StoreDir: filepath.Join(store, name)})
	}
	return natsconf.Write(dir, c)
}

func runCluster(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "up" && args[0] != "down") {
		fmt.Fprintln(stderr, "usage: teegate cluster up|down [--dir DIR] [--port-base N] [--bin DIR] [--workers N] [--max-concurrency N]")
		return errUsage
	}
	fs := newFlagSet("cluster "+args[0], stderr)
	defDir := os.Getenv("CLUSTER_DIR")
	if defDir == "" {
		defDir = filepath.Join(cliutil.DefaultDataDir(), "cluster")
	}
	defBase := defaultClusterPortBase
	if v := os.Getenv("CLUSTER_PORT_BASE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("CLUSTER_PORT_BASE: %w", err)
		}
		defBase = n
	}
	dir := fs.String("dir", defDir, "state, logs, pid files and env of the cluster (default $CLUSTER_DIR, else under the data dir)")
	base := fs.Int("port-base", defBase, "first port (default $CLUSTER_PORT_BASE, else 14200): NATS +0..2, routes +10..12, monitoring +20..22, gateways +30..31")
	bin := fs.String("bin", "", "folder holding teegate and nats-server (default: this executable's folder)")
	var o clusterOptions
	fs.StringVar(&o.policy, "policy", "dev", "up: the gateways' admission policy (a shipped name or a .rego file)")
	fs.DurationVar(&o.requestTimeout, "request-timeout", 2*time.Minute, "up: the gateways' deadline of one request")
	fs.IntVar(&o.maxConcurrency, "max-concurrency", 256, "up: requests each worker serves at once")
	fs.DurationVar(&o.perToken, "latency-per-token", 0, "up: the workers' builtin engine waits this long per token (imitating a GPU)")
	fs.IntVar(&o.workers, "workers", clusterWorkers, "up: simulated workers to start (0: none; requests wait in the cold-start queue for one)")
	fs.IntVar(&o.queueLength, "queue-length", 0, "up: the gateways' -queue-length (0: their default)")
	fs.DurationVar(&o.coldStart, "cold-start-timeout", 0, "up: the gateways' -cold-start-timeout (0: their default)")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if o.workers < 0 || o.workers > 16 || o.maxConcurrency < 1 || o.queueLength < 0 || o.coldStart < 0 {
		return usageErrorf(fs, "-workers must be 0 to 16, -max-concurrency positive, -queue-length and -cold-start-timeout >= 0")
	}
	if args[0] == "down" {
		return clusterDown(*dir, stdout)
	}
	if *bin == "" {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		*bin = filepath.Dir(self)
	}
	upCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if o.policy != "dev" && o.policy != "production" {
		// The gateways run from the cluster's folder: give them the path
		// as the caller meant it.
		abs, err := filepath.Abs(o.policy)
		if err != nil {
			return err
		}
		o.policy = abs
	}
	if err := clusterUp(upCtx, *dir, *bin, *base, o, stdout); err != nil {
		_ = clusterDown(*dir, io.Discard)
		return err
	}
	return nil
}

// clusterOptions tune the gateways and workers `cluster up` starts.
type clusterOptions struct {
	policy         string
	requestTimeout time.Duration
	maxConcurrency int
	perToken       time.Duration
	workers        int
	queueLength    int
	coldStart      time.Duration
}

// clusterUp starts every process detached (its own session, so they
// outlive `make cluster`), with a pid file and a log each, and returns once
// all are ready.
func clusterUp(ctx context.Context, dir, bin string, base int, o clusterOptions, stdout io.Writer) error {
	if pids, _ := filepath.Glob(filepath.Join(dir, "*.pid")); len(pids) > 0 {
		return fmt.Errorf("a cluster already runs from %s (teegate cluster down first)", dir)
	}
	natsDir := filepath.Join(dir, "nats")
	if _, err := writeNATSConfig(natsDir, filepath.Join(dir, "data"), "127.0.0.1", base, clusterNodes); err != nil {
		return err
	}
	var urls []string
	var nodes []int
	for i := range clusterNodes {
		name := fmt.Sprintf("n%d", i+1)
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", base+i))
		pid, err := spawn(dir, "nats-"+name, filepath.Join(bin, "nats-server"), "-c", filepath.Join(natsDir, "node-"+name+".conf"))
		if err != nil {
			return err
		}
		nodes = append(nodes, pid)
	}
	for i := range clusterNodes {
		if err := waitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/healthz", base+20+i), nodes[i]); err != nil {
			return fmt.Errorf("nats node n%d not ready (see %s): %w", i+1, filepath.Join(dir, fmt.Sprintf("nats-n%d.log", i+1)), err)
		}
	}
	// One simulated root for the cluster's workers, created before they
	// start (two first starts would race on it).
	simDir := filepath.Join(dir, "sim")
	if _, err := sim.LoadOrCreateRoot(filepath.Join(simDir, sim.RootDir)); err != nil {
		return err
	}
	natsURLs := strings.Join(urls, ",")
	// Each process tries the nodes in its own order, so that the fleet is
	// spread the same way every time: gateway-1 on n1, gateway-2 and the
	// workers on n3 (losing n3 loses a gateway's and the workers' server
	// at once, the case tests/cluster kills). Each falls back on the others.
	from := func(first int) string {
		return strings.Join(append(append([]string(nil), urls[first:]...), urls[:first]...), ",")
	}
	creds := filepath.Join(natsDir, natsconf.ServiceSeedFile)
	var gws []string
	for j := range clusterGateways {
		addr := fmt.Sprintf("127.0.0.1:%d", base+30+j)
		gws = append(gws, "http://"+addr)
		args := []string{"gateway",
			"--nats", from([]int{0, clusterNodes - 1}[j]), "--nats-in-order", "--nats-creds", creds, "--nats-sys-creds", filepath.Join(natsDir, natsconf.SystemSeedFile),
			"--admission-seed", filepath.Join(natsDir, natsconf.AdmissionSeedFile), "--policy", o.policy, "--allow-simulated",
			"--sim-root", filepath.Join(simDir, sim.RootDir, sim.RootCertFile),
			"--replicas", "3", "--addr", addr, "--name", fmt.Sprintf("gateway-%d", j+1), "--request-timeout", o.requestTimeout.String(),
			// The workers' model exists with none running: requests wait.
			"--model", "teegate-builtin"}
		if o.queueLength > 0 {
			args = append(args, "--queue-length", strconv.Itoa(o.queueLength))
		}
		if o.coldStart > 0 {
			args = append(args, "--cold-start-timeout", o.coldStart.String())
		}
		pid, err := spawn(dir, fmt.Sprintf("gateway-%d", j+1), filepath.Join(bin, "teegate"), args...)
		if err != nil {
			return err
		}
		// One at a time: the first creates the replicated buckets, which
		// two replicas racing to create on a fresh cluster can stall.
		if err := waitHTTP(ctx, "http://"+addr+"/healthz", pid); err != nil {
			return fmt.Errorf("gateway %s not ready (see gateway-%d.log in %s): %w", addr, j+1, dir, err)
		}
	}
	key, err := clusterKey(ctx, natsURLs, creds)
	if err != nil {
		return err
	}
	for k := range o.workers {
		if _, err := spawn(dir, fmt.Sprintf("worker-%d", k+1), filepath.Join(bin, "teegate"), "worker",
			"--nats", from(clusterNodes-1), "--nats-in-order", "--tee", "simulated", "--data-dir", simDir, "--id", fmt.Sprintf("worker-%d", k+1),
			"--max-concurrency", strconv.Itoa(o.maxConcurrency), "--latency-per-token", o.perToken.String()); err != nil {
			return err
		}
	}
	for _, g := range gws {
		if err := waitWorkers(ctx, g, key, o.workers); err != nil {
			return fmt.Errorf("workers not admitted through %s (see the worker logs in %s): %w", g, dir, err)
		}
	}
	env := fmt.Sprintf("GATEWAY_URLS=%q\nAPI_KEY=%q\nNATS_URLS=%q\nNATS_CREDS=%q\n", strings.Join(gws, " "), key, natsURLs, creds)
	if err := os.WriteFile(filepath.Join(dir, "env"), []byte(env), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "teegate cluster is up: 3 NATS nodes, 2 gateways, %d simulated workers (development only)\n%s(source %s)\n",
		o.workers, env, filepath.Join(dir, "env"))
	return nil
}

// clusterKey stores a fresh admin API key.
func clusterKey(ctx context.Context, urls, creds string) (string, error) {
	nf := cliutil.NATSFlags{URLs: urls, Creds: creds}
	nc, err := nf.Connect("teegate-cluster", nil)
	if err != nil {
		return "", err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return "", err
	}
	// Opening the bucket keeps its replicas (R3 on a cluster).
	kv, err := gateway.EnsureKeysBucket(ctx, gatewaynode.Replicated(js, 0))
	if err != nil {
		return "", err
	}
	key, err := gateway.NewSecret()
	if err != nil {
		return "", err
	}
	if err := gateway.AddKey(ctx, kv, key, gateway.APIKey{Name: "cluster", Tenant: "default", Admin: true}); err != nil {
		return "", err
	}
	return key, nil
}

// spawn starts name detached, logging to dir/name.log, its pid in
// dir/name.pid, and returns the pid.
func spawn(dir, name, path string, args ...string) (int, error) {
	logf, err := os.OpenFile(filepath.Join(dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("starting %s: %w", name, err)
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release()
	return pid, os.WriteFile(filepath.Join(dir, name+".pid"), []byte(strconv.Itoa(pid)+"\n"), 0o600)
}

// errExited: a process of the cluster stopped before it was ready.
var errExited = errors.New("the process exited")

// waitHTTP waits until url answers 200, or pid exits.
func waitHTTP(ctx context.Context, url string, pid int) error {
	c := &http.Client{Timeout: 2 * time.Second}
	for {
		if !alive(pid) {
			return errExited
		}
		if resp, err := c.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitWorkers waits until the gateway lists n admitted, serving workers.
func waitWorkers(ctx context.Context, gw, key string, n int) error {
	c := &http.Client{Timeout: 2 * time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", gw+"/v1/attestation/workers", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		if resp, err := c.Do(req); err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Count(string(body), `"decision":"admitted"`) >= n && strings.Count(string(body), `"serving":true`) >= n {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// clusterDown stops every process with a pid file in dir (workers and
// gateways first, gracefully, then the servers), kills what does not stop,
// and removes the pid files.
func clusterDown(dir string, stdout io.Writer) error {
	var errs []error
	for _, prefix := range []string{"worker-", "gateway-", "nats-"} {
		pids, _ := filepath.Glob(filepath.Join(dir, prefix+"*.pid"))
		var procs []int
		for _, p := range pids {
			raw, err := os.ReadFile(p)
			if err != nil {
				continue
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
			if err != nil || pid <= 1 {
				continue
			}
			if syscall.Kill(pid, syscall.SIGTERM) == nil {
				procs = append(procs, pid)
			}
			_ = os.Remove(p)
		}
		deadline := time.Now().Add(20 * time.Second)
		for _, pid := range procs {
			for alive(pid) && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			if alive(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				for i := 0; i < 100 && alive(pid); i++ {
					time.Sleep(20 * time.Millisecond)
				}
			}
			if alive(pid) {
				errs = append(errs, fmt.Errorf("process %d did not stop", pid))
			}
		}
	}
	if len(errs) == 0 {
		fmt.Fprintf(stdout, "teegate cluster in %s is down\n", dir)
	}
	return errors.Join(errs...)
}

// alive reports whether pid runs (a zombie counts as gone).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	if i := strings.LastIndexByte(string(raw), ')'); i >= 0 && i+2 < len(raw) {
		return raw[i+2] != 'Z'
	}
	return true
}
