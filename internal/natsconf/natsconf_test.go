package natsconf

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

func cluster(dir string) *Config {
	c := &Config{}
	for i, name := range []string{"n1", "n2", "n3"} {
		c.Nodes = append(c.Nodes, Node{Name: name, Host: "127.0.0.1", ClientPort: 4222 + i, ClusterPort: 6222 + i, MonitorPort: 8222 + i,
			StoreDir: filepath.Join(dir, name)})
	}
	return c
}

// The real server accepts every node's file and reads the accounts, the
// routes and the callout the way admission expects them.
func TestWriteParsesInServer(t *testing.T) {
	dir := t.TempDir()
	c := cluster(dir)
	paths, err := Write(dir, c)
	if err != nil {
		t.Fatal(err)
	}
	again := cluster(dir)
	if _, err := Write(dir, again); err != nil || again.Keys != c.Keys {
		t.Fatalf("a second run changed the keys: %v", err)
	}
	for i, p := range paths {
		opts, err := server.ProcessConfigFile(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if opts.ServerName != c.Nodes[i].Name || opts.Port != c.Nodes[i].ClientPort || len(opts.Routes) != 2 || opts.Cluster.Name != ClusterName {
			t.Fatalf("node %d parsed as %s:%d routes %d", i, opts.ServerName, opts.Port, len(opts.Routes))
		}
		if opts.SystemAccount != SystemAccount || !opts.JetStream {
			t.Fatalf("system account %q jetstream %v", opts.SystemAccount, opts.JetStream)
		}
		if ac := opts.AuthCallout; ac == nil || ac.Issuer != c.Keys.Issuer || ac.Account != Account || len(ac.AuthUsers) != 2 {
			t.Fatalf("callout %+v", opts.AuthCallout)
		}
		if len(opts.Nkeys) != 2 {
			t.Fatalf("%d nkey users", len(opts.Nkeys))
		}
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	c := cluster(dir)
	if _, err := Write(dir, c); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Config){
		"no nodes":       func(c *Config) { c.Nodes = nil },
		"duplicate name": func(c *Config) { c.Nodes[1].Name = c.Nodes[0].Name },
		"quote in name":  func(c *Config) { c.Nodes[0].Name = `a"b` },
		"no port":        func(c *Config) { c.Nodes[0].ClusterPort = 0 },
		"issuer is user": func(c *Config) { c.Keys.Issuer = c.Keys.Service },
	} {
		t.Run(name, func(t *testing.T) {
			cc := *c
			cc.Nodes = append([]Node(nil), c.Nodes...)
			mut(&cc)
			if _, err := cc.Render(0); !errors.Is(err, ErrConfig) {
				t.Fatalf("Render: %v", err)
			}
		})
	}
}
