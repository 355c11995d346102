package natsconf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nkeys"
)

// Account names, shared with the embedded server (natsembed) and the
// admission service (admission.DefaultAccount).
const (
	Account       = "TEEGATE"
	SystemAccount = "SYS"
	ClusterName   = "teegate"
)

// Files written by Write.
const (
	AdmissionSeedFile = "admission.nk" // the callout issuer: every gateway replica
	ServiceSeedFile   = "service.nk"   // gateways, `teegate keys`, `teegate audit` (NATS_CREDS)
	SystemSeedFile    = "sys.nk"       // the gateways' system-account connection (NATS_SYS_CREDS)
)

// ErrConfig wraps every configuration problem.
var ErrConfig = errors.New("invalid nats cluster config")

// Node is one server of the cluster.
type Node struct {
	Name string
	// Host is the address the node listens on and peers reach it at.
	Host string
	// ClientPort, ClusterPort and MonitorPort (0: no monitoring endpoint).
	ClientPort, ClusterPort, MonitorPort int
	// StoreDir holds the node's JetStream state.
	StoreDir string
}

// Keys are the public keys the configuration names.
type Keys struct {
	Issuer  string // account key: the auth callout's issuer
	Service string // user key of the services (auth_users)
	System  string // user key of the system account (auth_users)
}

// Config is the whole cluster.
type Config struct {
	Nodes []Node
	Keys  Keys
	// MaxPayload in bytes (default 8 MiB, the embedded server's).
	MaxPayload int
}

// Validate checks c.
func (c *Config) Validate() error {
	if len(c.Nodes) == 0 {
		return fmt.Errorf("no nodes: %w", ErrConfig)
	}
	if !nkeys.IsValidPublicAccountKey(c.Keys.Issuer) || !nkeys.IsValidPublicUserKey(c.Keys.Service) || !nkeys.IsValidPublicUserKey(c.Keys.System) {
		return fmt.Errorf("keys must be an account key and two user keys: %w", ErrConfig)
	}
	names := map[string]bool{}
	for _, n := range c.Nodes {
		if n.Name == "" || strings.ContainsAny(n.Name, " \t\n\"'{}[]:#") || names[n.Name] {
			return fmt.Errorf("node name %q: %w", n.Name, ErrConfig)
		}
		names[n.Name] = true
		if n.Host == "" || strings.ContainsAny(n.Host, " \t\n\"'{}[]#") || n.ClientPort <= 0 || n.ClusterPort <= 0 || n.StoreDir == "" {
			return fmt.Errorf("node %s needs a host, client and cluster ports, and a store dir: %w", n.Name, ErrConfig)
		}
	}
	if c.MaxPayload <= 0 {
		c.MaxPayload = 8 << 20
	}
	return nil
}

// Render returns node i's configuration file.
func (c *Config) Render(i int) (string, error) {
	if err := c.Validate(); err != nil {
		return "", err
	}
	if i < 0 || i >= len(c.Nodes) {
		return "", fmt.Errorf("node %d of %d: %w", i, len(c.Nodes), ErrConfig)
	}
	n := c.Nodes[i]
	var b strings.Builder
	fmt.Fprintf(&b, "# teegate cluster node %s (teegate nats-config)\n", n.Name)
	fmt.Fprintf(&b, "server_name: %q\nlisten: \"%s:%d\"\n", n.Name, n.Host, n.ClientPort)
	if n.MonitorPort > 0 {
		fmt.Fprintf(&b, "http: \"%s:%d\"\n", n.Host, n.MonitorPort)
	}
	fmt.Fprintf(&b, "max_payload: %d\n", c.MaxPayload)
	fmt.Fprintf(&b, "jetstream {\n  store_dir: %q\n}\n", n.StoreDir)
	if len(c.Nodes) > 1 {
		var routes []string
		for j, p := range c.Nodes {
			if j != i {
				routes = append(routes, fmt.Sprintf("%q", fmt.Sprintf("nats://%s:%d", p.Host, p.ClusterPort)))
			}
		}
		fmt.Fprintf(&b, "cluster {\n  name: %s\n  listen: \"%s:%d\"\n  routes: [%s]\n}\n", ClusterName, n.Host, n.ClusterPort, strings.Join(routes, ", "))
	}
	fmt.Fprintf(&b, "accounts {\n  %s { jetstream: enabled, users: [{nkey: %s}] }\n  %s { users: [{nkey: %s}] }\n}\n",
		Account, c.Keys.Service, SystemAccount, c.Keys.System)
	fmt.Fprintf(&b, "system_account: %s\n", SystemAccount)
	// Workers present no credential of theirs: the callout judges them.
	fmt.Fprintf(&b, "authorization {\n  timeout: 2\n  auth_callout {\n    issuer: %s\n    account: %s\n    auth_users: [%s, %s]\n  }\n}\n",
		c.Keys.Issuer, Account, c.Keys.Service, c.Keys.System)
	return b.String(), nil
}

// Write creates fresh keys in dir (seed files 0600), fills c.Keys and
// writes node-<name>.conf for every node; it returns the config paths.
// Existing seed files are kept, so running it again keeps the cluster's
// identity.
func Write(dir string, c *Config) ([]string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("writing nats config: %w", err)
	}
	var err error
	if c.Keys.Issuer, err = seedFile(filepath.Join(dir, AdmissionSeedFile), nkeys.CreateAccount); err != nil {
		return nil, err
	}
	if c.Keys.Service, err = seedFile(filepath.Join(dir, ServiceSeedFile), nkeys.CreateUser); err != nil {
		return nil, err
	}
	if c.Keys.System, err = seedFile(filepath.Join(dir, SystemSeedFile), nkeys.CreateUser); err != nil {
		return nil, err
	}
	var paths []string
	for i, n := range c.Nodes {
		text, err := c.Render(i)
		if err != nil {
			return nil, err
		}
		p := filepath.Join(dir, "node-"+n.Name+".conf")
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			return nil, fmt.Errorf("writing nats config: %w", err)
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// seedFile returns the public key of the seed in path, creating one with
// create when the file is missing.
func seedFile(path string, create func() (nkeys.KeyPair, error)) (string, error) {
	if raw, err := os.ReadFile(path); err == nil {
		kp, err := nkeys.ParseDecoratedNKey(raw)
		if err != nil {
			return "", fmt.Errorf("reading %s: %w", path, err)
		}
		return kp.PublicKey()
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	kp, err := create()
	if err != nil {
		return "", fmt.Errorf("creating a key: %w", err)
	}
	seed, err := kp.Seed()
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, append(seed, '\n'), 0o600); err != nil {
		return "", fmt.Errorf("writing %s: %w", path, err)
	}
	return kp.PublicKey()
}
