package deploy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/teegate/teegate/internal/natsconf"
)

// helmValues is the part of the NATS chart's values (nats-io/k8s,
// helm/charts/nats/values.yaml, chart 2.14) that deploy/nats/values.yaml
// sets, with the chart's key names; decoding is strict, so a key the chart
// does not have (a typo) fails.
type helmValues struct {
	Config struct {
		Cluster struct {
			Enabled  bool           `json:"enabled"`
			Replicas int            `json:"replicas"`
			Merge    map[string]any `json:"merge,omitempty"`
		} `json:"cluster"`
		JetStream struct {
			Enabled   bool `json:"enabled"`
			FileStore struct {
				Enabled bool   `json:"enabled"`
				Dir     string `json:"dir,omitempty"`
				PVC     struct {
					Enabled          bool    `json:"enabled"`
					Size             string  `json:"size"`
					StorageClassName *string `json:"storageClassName,omitempty"`
				} `json:"pvc"`
			} `json:"fileStore"`
			MemoryStore struct {
				Enabled bool   `json:"enabled"`
				MaxSize string `json:"maxSize,omitempty"`
			} `json:"memoryStore"`
		} `json:"jetstream"`
		NATS struct {
			Port int `json:"port,omitempty"`
		} `json:"nats,omitempty"`
		Monitor struct {
			Enabled bool `json:"enabled"`
			Port    int  `json:"port"`
		} `json:"monitor"`
		Merge map[string]any `json:"merge"`
	} `json:"config"`
	Container struct {
		Env   map[string]corev1.EnvVarSource `json:"env"`
		Merge struct {
			Resources corev1.ResourceRequirements `json:"resources"`
		} `json:"merge"`
	} `json:"container"`
	PodTemplate struct {
		TopologySpreadConstraints map[string]corev1.TopologySpreadConstraint `json:"topologySpreadConstraints"`
	} `json:"podTemplate"`
	PodDisruptionBudget struct {
		Enabled bool `json:"enabled"`
	} `json:"podDisruptionBudget"`
	NatsBox struct {
		Enabled bool `json:"enabled"`
	} `json:"natsBox"`
}

var (
	valuesOnce sync.Once
	values     helmValues
	valuesErr  error
)

func natsValues(t testing.TB) *helmValues {
	t.Helper()
	valuesOnce.Do(func() {
		raw, err := os.ReadFile(deployPath(t, "nats", "values.yaml"))
		if err != nil {
			valuesErr = err
			return
		}
		var generic map[string]any
		if err := yaml.Unmarshal(raw, &generic); err != nil {
			valuesErr = err
			return
		}
		// The chart takes an env var as a map holding a valueFrom
		// (templates/_helpers.tpl nats.env): decode that into EnvVarSource.
		if c, ok := generic["container"].(map[string]any); ok {
			if env, ok := c["env"].(map[string]any); ok {
				for k, v := range env {
					m, _ := v.(map[string]any)
					env[k] = m["valueFrom"]
					if len(m) != 1 {
						valuesErr = &strictErr{"container.env." + k + " must hold only valueFrom"}
						return
					}
				}
			}
		}
		flat, _ := json.Marshal(generic)
		valuesErr = yaml.UnmarshalStrict(flat, &values)
	})
	if valuesErr != nil {
		t.Fatalf("deploy/nats/values.yaml: %v", valuesErr)
	}
	return &values
}

type strictErr struct{ s string }

func (e *strictErr) Error() string { return e.s }

// raw matches the chart's "<< x >>" strings, which it writes unquoted into
// nats.conf (templates/_helpers.tpl nats.formatConfig).
var raw = regexp.MustCompile(`"<<\s+(.*?)\s+>>"`)

// renderMerge writes config.merge as the chart renders it into nats.conf.
func renderMerge(t testing.TB, extra map[string]any) string {
	t.Helper()
	doc := map[string]any{}
	for k, v := range natsValues(t).Config.Merge {
		doc[k] = v
	}
	for k, v := range extra {
		doc[k] = v
	}
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		t.Fatal(err)
	}
	return raw.ReplaceAllString(b.String(), "${1}")
}

// The values run 3 servers in one JetStream cluster with file storage, and
// configure the same accounts, users, system account, auth callout and
// payload limit as `teegate nats-config` (internal/natsconf): both parsed by
// the real server agree, with the keys nats-config made, through the
// environment variables the values take from the ConfigMap.
func TestNATSHelmValues(t *testing.T) {
	v := natsValues(t)
	c := v.Config
	if !c.Cluster.Enabled || c.Cluster.Replicas != 3 || !c.JetStream.Enabled || !c.JetStream.FileStore.Enabled || !c.JetStream.FileStore.PVC.Enabled || c.JetStream.MemoryStore.Enabled {
		t.Errorf("want a 3-node cluster with JetStream on file storage: %+v %+v", c.Cluster, c.JetStream)
	}
	if c.Cluster.Merge["name"] != natsconf.ClusterName {
		t.Errorf("cluster name %v, natsconf's is %s", c.Cluster.Merge["name"], natsconf.ClusterName)
	}
	// The keys nats-config writes, as the ConfigMap would give them.
	dir := t.TempDir()
	nc := &natsconf.Config{Nodes: []natsconf.Node{{Name: "n1", Host: "127.0.0.1", ClientPort: 4222, ClusterPort: 6222, StoreDir: filepath.Join(dir, "js")}}}
	if _, err := natsconf.Write(dir, nc); err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{"issuer": nc.Keys.Issuer, "service": nc.Keys.Service, "system": nc.Keys.System}
	used := map[string]bool{}
	for _, m := range regexp.MustCompile(`\$([A-Z][A-Z0-9_]*)`).FindAllStringSubmatch(renderMerge(t, nil), -1) {
		used[m[1]] = true
	}
	for name, src := range v.Container.Env {
		ref := src.ConfigMapKeyRef
		if ref == nil || ref.Name != "teegate-nats-keys" || keys[ref.Key] == "" {
			t.Fatalf("container.env.%s: want a key (issuer, service, system) of ConfigMap teegate-nats-keys, got %+v", name, src)
		}
		if !used[name] {
			t.Errorf("container.env.%s: the configuration does not use $%s", name, name)
		}
		t.Setenv(name, keys[ref.Key])
	}
	for name := range used {
		if _, ok := v.Container.Env[name]; !ok {
			t.Errorf("the configuration uses $%s, which container.env does not set", name)
		}
	}

	helm := parseConf(t, renderMerge(t, map[string]any{"jetstream": map[string]any{"store_dir": filepath.Join(dir, "helm-js")}, "port": -1}))
	text, err := nc.Render(0)
	if err != nil {
		t.Fatal(err)
	}
	gen := parseConf(t, text)

	if helm.SystemAccount != gen.SystemAccount || helm.MaxPayload != gen.MaxPayload {
		t.Errorf("system account %q max payload %d; nats-config: %q %d", helm.SystemAccount, helm.MaxPayload, gen.SystemAccount, gen.MaxPayload)
	}
	if a, b := accountNames(helm), accountNames(gen); !slices.Equal(a, b) {
		t.Errorf("accounts %v; nats-config: %v", a, b)
	}
	if a, b := nkeyUsers(helm), nkeyUsers(gen); !slices.Equal(a, b) {
		t.Errorf("nkey users %v; nats-config: %v", a, b)
	}
	if helm.AuthCallout == nil || gen.AuthCallout == nil {
		t.Fatalf("auth callout: %+v; nats-config: %+v", helm.AuthCallout, gen.AuthCallout)
	}
	ha, ga := *helm.AuthCallout, *gen.AuthCallout
	sort.Strings(ha.AuthUsers)
	sort.Strings(ga.AuthUsers)
	if ha.Issuer != ga.Issuer || ha.Account != ga.Account || !slices.Equal(ha.AuthUsers, ga.AuthUsers) || ha.XKey != ga.XKey {
		t.Errorf("auth callout %+v; nats-config: %+v", ha, ga)
	}
	if helm.AuthTimeout != gen.AuthTimeout {
		t.Errorf("auth timeout %v; nats-config %v", helm.AuthTimeout, gen.AuthTimeout)
	}

	// The real server starts with it, JetStream on in the workers' account.
	helm.Cluster = server.ClusterOpts{}
	helm.NoLog, helm.NoSigs = true, true
	s, err := server.NewServer(helm)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(10e9) {
		t.Fatal("server not ready")
	}
	acc, err := s.LookupAccount(natsconf.Account)
	if err != nil || !acc.JetStreamEnabled() {
		t.Fatalf("account %s: JetStream enabled %v (%v)", natsconf.Account, acc != nil && acc.JetStreamEnabled(), err)
	}
}

// Without the keys in its environment the server refuses the
// configuration: nothing starts with an empty issuer or user.
func TestNATSHelmValuesNeedKeys(t *testing.T) {
	for _, name := range sortedKeys(natsValues(t).Container.Env) {
		t.Setenv(name, "placeholder")
		os.Unsetenv(name)
	}
	if _, err := parseConfErr(t, renderMerge(t, nil)); err == nil {
		t.Error("a configuration without its keys parsed")
	}
}

func parseConf(t testing.TB, text string) *server.Options {
	t.Helper()
	o, err := parseConfErr(t, text)
	if err != nil {
		t.Fatalf("nats-server refuses the configuration: %v\n%s", err, text)
	}
	return o
}

func parseConfErr(t testing.TB, text string) (*server.Options, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return server.ProcessConfigFile(p)
}

func accountNames(o *server.Options) []string {
	var names []string
	for _, a := range o.Accounts {
		names = append(names, a.Name)
	}
	sort.Strings(names)
	return names
}

func nkeyUsers(o *server.Options) []string {
	var users []string
	for _, u := range o.Nkeys {
		acc := ""
		if u.Account != nil {
			acc = u.Account.Name
		}
		users = append(users, u.Nkey+"@"+acc)
	}
	sort.Strings(users)
	return users
}
