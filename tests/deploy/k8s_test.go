package deploy

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	nodev1 "k8s.io/api/node/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	psaapi "k8s.io/pod-security-admission/api"
	psa "k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/kustomize/api/krusty"
	ktypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/teegate/teegate/internal/natsconf"
	"github.com/teegate/teegate/internal/stacktest"
	"github.com/teegate/teegate/worker/wire"
)

// The kustomizations a user builds (kubectl apply -k DIR).
var kustomizeRoots = []string{
	"k8s/base", "k8s/workers", "keda", "k8s/overlays/dev", "k8s/overlays/production", "k8s/overlays/production-snp",
}

// scaledObject is the part of KEDA's ScaledObject (keda.sh/v1alpha1) these
// manifests use; decoding is strict, so a misspelt field fails.
type scaledObject struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion,omitempty"`
			Kind       string `json:"kind,omitempty"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		PollingInterval  *int32 `json:"pollingInterval,omitempty"`
		CooldownPeriod   *int32 `json:"cooldownPeriod,omitempty"`
		IdleReplicaCount *int32 `json:"idleReplicaCount,omitempty"`
		MinReplicaCount  *int32 `json:"minReplicaCount,omitempty"`
		MaxReplicaCount  *int32 `json:"maxReplicaCount,omitempty"`
		Triggers         []struct {
			Type     string            `json:"type"`
			Name     string            `json:"name,omitempty"`
			Metadata map[string]string `json:"metadata"`
		} `json:"triggers"`
	} `json:"spec"`
}

// natsJetStreamParams are the nats-jetstream scaler's parameters (keda.sh
// docs, scalers/nats-jetstream).
var natsJetStreamParams = []string{"natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold", "activationLagThreshold", "useHttps"}

// objects is one kustomize build, decoded into the API types.
type objects struct {
	root         string
	deployments  []appsv1.Deployment
	services     []corev1.Service
	pdbs         []policyv1.PodDisruptionBudget
	namespaces   []corev1.Namespace
	runtime      []nodev1.RuntimeClass
	netpols      []networkingv1.NetworkPolicy
	scaledObject []scaledObject
}

// decodeStrict decodes one manifest into the real type for its kind.
func decodeStrict(t testing.TB, where string, doc []byte, into *objects) {
	t.Helper()
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	var err error
	switch head.APIVersion + " " + head.Kind {
	case "apps/v1 Deployment":
		var o appsv1.Deployment
		err = yaml.UnmarshalStrict(doc, &o)
		into.deployments = append(into.deployments, o)
	case "v1 Service":
		var o corev1.Service
		err = yaml.UnmarshalStrict(doc, &o)
		into.services = append(into.services, o)
	case "policy/v1 PodDisruptionBudget":
		var o policyv1.PodDisruptionBudget
		err = yaml.UnmarshalStrict(doc, &o)
		into.pdbs = append(into.pdbs, o)
	case "v1 Namespace":
		var o corev1.Namespace
		err = yaml.UnmarshalStrict(doc, &o)
		into.namespaces = append(into.namespaces, o)
	case "node.k8s.io/v1 RuntimeClass":
		var o nodev1.RuntimeClass
		err = yaml.UnmarshalStrict(doc, &o)
		into.runtime = append(into.runtime, o)
	case "networking.k8s.io/v1 NetworkPolicy":
		var o networkingv1.NetworkPolicy
		err = yaml.UnmarshalStrict(doc, &o)
		into.netpols = append(into.netpols, o)
	case "keda.sh/v1alpha1 ScaledObject":
		var o scaledObject
		err = yaml.UnmarshalStrict(doc, &o)
		into.scaledObject = append(into.scaledObject, o)
	default:
		t.Fatalf("%s: no decoder for %s %s (add the real type here)", where, head.APIVersion, head.Kind)
	}
	if err != nil {
		t.Fatalf("%s: %s %s does not decode strictly: %v", where, head.APIVersion, head.Kind, err)
	}
}

// build runs kustomize on deploy/<root> and decodes what it makes.
func build(t testing.TB, root string) *objects {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), deployPath(t, root))
	if err != nil {
		t.Fatalf("kustomize build deploy/%s: %v", root, err)
	}
	o := &objects{root: root}
	for _, r := range m.Resources() {
		doc, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		decodeStrict(t, fmt.Sprintf("deploy/%s: %s/%s", root, r.GetKind(), r.GetName()), doc, o)
	}
	return o
}

func (o *objects) deployment(t testing.TB, name string) *appsv1.Deployment {
	t.Helper()
	for i := range o.deployments {
		if o.deployments[i].Name == name {
			return &o.deployments[i]
		}
	}
	t.Fatalf("deploy/%s has no Deployment %s", o.root, name)
	return nil
}

// yamlFiles lists every .yaml under deploy/<dir>.
func yamlFiles(t testing.TB, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(deployPath(t, dir), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".yaml") {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// Every kustomization decodes strictly into kustomize's own type, names
// files and folders that exist, and every manifest is named by one (no
// file is silently left out of every build).
func TestKustomizationsStrictAndComplete(t *testing.T) {
	named := map[string]bool{}
	for _, dir := range []string{"k8s", "keda"} {
		for _, p := range yamlFiles(t, dir) {
			if filepath.Base(p) != "kustomization.yaml" {
				continue
			}
			raw, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			var k ktypes.Kustomization
			if err := yaml.UnmarshalStrict(raw, &k); err != nil {
				t.Errorf("%s: not a strict kustomization: %v", p, err)
				continue
			}
			if k.Kind != ktypes.KustomizationKind && k.Kind != ktypes.ComponentKind {
				t.Errorf("%s: kind %q", p, k.Kind)
			}
			for _, ref := range append(append([]string(nil), k.Resources...), k.Components...) {
				target := filepath.Join(filepath.Dir(p), ref)
				st, err := os.Stat(target)
				if err != nil {
					t.Errorf("%s names %s, which does not exist", p, ref)
					continue
				}
				if st.IsDir() {
					if _, err := os.Stat(filepath.Join(target, "kustomization.yaml")); err != nil {
						t.Errorf("%s names folder %s without a kustomization.yaml", p, ref)
					}
				}
				named[target] = true
			}
		}
	}
	for _, dir := range []string{"k8s", "keda"} {
		for _, p := range yamlFiles(t, dir) {
			if filepath.Base(p) != "kustomization.yaml" && !named[p] {
				t.Errorf("%s is in no kustomization", p)
			}
		}
	}
}

// Every manifest file, document by document, decodes strictly into the
// real API type of its kind.
func TestManifestFilesDecodeStrictly(t *testing.T) {
	for _, dir := range []string{"k8s", "keda"} {
		for _, p := range yamlFiles(t, dir) {
			if filepath.Base(p) == "kustomization.yaml" {
				continue
			}
			raw, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			var o objects
			for i, doc := range bytes.Split(raw, []byte("\n---\n")) {
				decodeStrict(t, fmt.Sprintf("%s document %d", p, i+1), doc, &o)
			}
		}
	}
}

// Every build's objects decode strictly and hang together: selectors
// select their own pods, Services and PDBs select pods that exist, every
// Service port targets a container port, every probe port is one.
func TestBuildsConsistent(t *testing.T) {
	for _, root := range kustomizeRoots {
		t.Run(strings.ReplaceAll(root, "/", "_"), func(t *testing.T) {
			o := build(t, root)
			for _, d := range o.deployments {
				sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
				if err != nil || sel.Empty() {
					t.Fatalf("Deployment %s: selector %v %v", d.Name, d.Spec.Selector, err)
				}
				if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
					t.Errorf("Deployment %s: its selector %s does not select its own pods %v", d.Name, sel, d.Spec.Template.Labels)
				}
				for _, c := range d.Spec.Template.Spec.Containers {
					for _, p := range []*corev1.Probe{c.StartupProbe, c.LivenessProbe, c.ReadinessProbe} {
						if p != nil && p.HTTPGet != nil && !hasPort(c, p.HTTPGet.Port.String()) {
							t.Errorf("Deployment %s container %s: probe port %s is not a container port", d.Name, c.Name, p.HTTPGet.Port.String())
						}
					}
				}
			}
			// Every pod meets the Pod Security Standards' "restricted" level
			// (the production namespace enforces it), checked by the
			// admission plugin's own evaluator.
			for _, d := range o.deployments {
				if res := psa.AggregateCheckResults(restricted(t).EvaluatePod(psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()},
					&d.Spec.Template.ObjectMeta, &d.Spec.Template.Spec)); !res.Allowed {
					t.Errorf("Deployment %s violates the restricted Pod Security Standard: %s", d.Name, res.ForbiddenDetail())
				}
			}
			for _, s := range o.services {
				pods := o.selected(t, "Service "+s.Name, &metav1.LabelSelector{MatchLabels: s.Spec.Selector})
				for _, sp := range s.Spec.Ports {
					for _, d := range pods {
						if !slices.ContainsFunc(d.Spec.Template.Spec.Containers, func(c corev1.Container) bool { return hasPort(c, sp.TargetPort.String()) }) {
							t.Errorf("Service %s port %s targets %s, which no container of %s has", s.Name, sp.Name, sp.TargetPort.String(), d.Name)
						}
					}
				}
			}
			for _, p := range o.pdbs {
				o.selected(t, "PodDisruptionBudget "+p.Name, p.Spec.Selector)
			}
			for _, np := range o.netpols {
				checkNetworkPolicy(t, o, &np)
			}
			for _, so := range o.scaledObject {
				if len(o.deployments) > 0 { // deploy/keda alone holds no workers
					o.deployment(t, so.Spec.ScaleTargetRef.Name)
				}
			}
			if ns := o.namespaces; len(ns) > 0 {
				for _, d := range o.deployments {
					if d.Namespace != ns[0].Name {
						t.Errorf("Deployment %s in namespace %q, the overlay's is %q", d.Name, d.Namespace, ns[0].Name)
					}
				}
			}
		})
	}
}

// checkNetworkPolicy: the policy selects pods of the build, lets in only
// their container ports, and lets them reach NATS on the client port of the
// chart's namespace.
func checkNetworkPolicy(t testing.TB, o *objects, np *networkingv1.NetworkPolicy) {
	t.Helper()
	who := "NetworkPolicy " + np.Name
	pods := o.selected(t, who, &np.Spec.PodSelector)
	for _, in := range np.Spec.Ingress {
		for _, p := range in.Ports {
			for _, d := range pods {
				if p.Port == nil || !slices.ContainsFunc(d.Spec.Template.Spec.Containers, func(c corev1.Container) bool { return hasPort(c, p.Port.String()) }) {
					t.Errorf("%s lets in port %v, which no container of %s has", who, p.Port, d.Name)
				}
			}
		}
	}
	natsPort := portOf(t, natsClientURL(t))
	reachesNATS := false
	for _, out := range np.Spec.Egress {
		for _, to := range out.To {
			if to.NamespaceSelector == nil || to.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != natsNamespace {
				continue
			}
			for _, p := range out.Ports {
				if p.Port != nil && p.Port.String() == natsPort {
					reachesNATS = true
				}
			}
		}
	}
	if !reachesNATS {
		t.Errorf("%s does not let its pods reach NATS on %s:%s", who, natsNamespace, natsPort)
	}
}

func restricted(t testing.TB) psa.Evaluator {
	t.Helper()
	e, err := psa.NewEvaluator(psa.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// selected returns the Deployments whose pods sel selects; none fails.
func (o *objects) selected(t testing.TB, who string, ls *metav1.LabelSelector) []appsv1.Deployment {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil || sel.Empty() {
		t.Fatalf("%s: selector %v %v", who, ls, err)
	}
	var out []appsv1.Deployment
	for _, d := range o.deployments {
		if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			out = append(out, d)
		}
	}
	if len(out) == 0 {
		t.Errorf("%s selects no pods in deploy/%s", who, o.root)
	}
	return out
}

func hasPort(c corev1.Container, port string) bool {
	for _, p := range c.Ports {
		if p.Name == port || strconv.Itoa(int(p.ContainerPort)) == port {
			return true
		}
	}
	return false
}

// containerCLI returns the command a container runs (its command, else its
// image's entrypoint from the Dockerfile that builds the image) and the
// words after the binary and subcommand, args included.
func containerCLI(t testing.TB, c corev1.Container) (cli, []string) {
	t.Helper()
	argv := c.Command
	if len(argv) == 0 {
		img := imageFor(t, c.Image)
		argv = img.entrypoint
		if len(c.Args) == 0 {
			argv = append(append([]string(nil), argv...), img.cmd...)
		}
	} else if !imageFor(t, c.Image).copied[argv[0]] {
		t.Errorf("container %s runs %s, which image %s does not hold", c.Name, argv[0], c.Image)
	}
	argv = append(append([]string(nil), argv...), c.Args...)
	return cliOf(t, argv)
}

// envChecked checks that the container's env vars are used: by its args
// ($(NAME)), by the command (it reads the variable), or by the vLLM
// entrypoint script; vLLM's own variables are listed.
func envChecked(t testing.TB, where string, c corev1.Container, cmd cli) map[string]string {
	t.Helper()
	script, err := os.ReadFile(deployPath(t, "docker", "worker-vllm-entrypoint.sh"))
	if err != nil {
		t.Fatal(err)
	}
	readByVLLM := map[string]bool{"HF_TOKEN": true, "HF_HOME": true}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
		switch {
		case strings.Contains(strings.Join(c.Args, " "), "$("+e.Name+")"):
		case strings.HasPrefix(e.Name, "VLLM_"):
			if !strings.Contains(string(script), "${"+e.Name) && !strings.Contains(string(script), "$"+e.Name) {
				t.Errorf("%s: env %s: the vLLM entrypoint does not read it", where, e.Name)
			}
		case readByVLLM[e.Name]:
		default:
			if !envRead(t, cmd, e.Name) {
				t.Errorf("%s: env %s: %s does not read it", where, e.Name, cmd)
			}
		}
	}
	return env
}

// The gateway's Deployment runs `teegate gateway` with flags it has, on the
// port its --addr names, probed on the paths the gateway serves, with its
// NATS keys at the files `teegate nats-config` writes.
func TestGatewayDeployment(t *testing.T) {
	gw := cli{bin: "teegate", sub: []string{"gateway"}}
	defaultAddr := flags(t, gw)["addr"].Default
	if defaultAddr == "" {
		t.Fatal("teegate gateway -h shows no default -addr")
	}
	var probePaths []string
	for _, root := range []string{"k8s/overlays/dev", "k8s/overlays/production"} {
		o := build(t, root)
		d := o.deployment(t, "teegate-gateway")
		c := d.Spec.Template.Spec.Containers[0]
		where := fmt.Sprintf("deploy/%s gateway", root)
		cmd, args := containerCLI(t, c)
		if cmd.String() != gw.String() {
			t.Fatalf("%s runs %s", where, cmd)
		}
		got := parseArgs(t, where, cmd, args)
		env := envChecked(t, where, c, cmd)
		// The listen port is the code's default port, and the container's.
		if p := portOf(t, got["addr"]); p != portOf(t, defaultAddr) || !hasPort(c, p) {
			t.Errorf("%s: --addr %q: port must be the default's (%s) and a container port", where, got["addr"], defaultAddr)
		}
		for _, p := range []*corev1.Probe{c.StartupProbe, c.LivenessProbe, c.ReadinessProbe} {
			if p == nil || p.HTTPGet == nil {
				t.Fatalf("%s: every probe must be an HTTP GET", where)
			}
			probePaths = append(probePaths, p.HTTPGet.Path)
		}
		// /readyz fails while no worker can serve unless
		// --ready-without-workers: as the readiness probe of a fleet KEDA
		// may scale to zero it would take every gateway out of the Service
		// and starve the queue KEDA scales on. And the models KEDA scales
		// for must be declared, or their requests find no model at zero.
		for _, so := range o.scaledObject {
			if so.Spec.MinReplicaCount != nil && *so.Spec.MinReplicaCount > 0 {
				continue
			}
			if c.ReadinessProbe.HTTPGet.Path == "/readyz" && got["ready-without-workers"] != "true" {
				t.Errorf("%s: readiness on /readyz without --ready-without-workers, and %s scales the workers to zero", where, so.Metadata.Name)
			}
			target := o.deployment(t, so.Spec.ScaleTargetRef.Name)
			model := envOf(target.Spec.Template.Spec.Containers[0], "VLLM_SERVED_MODEL_NAME")
			if !slices.Contains(strings.Split(got["model[]"], "\n"), model) {
				t.Errorf("%s: %s scales %s to zero, but the gateway does not declare its model %q (--model)", where, so.Metadata.Name, target.Name, model)
			}
		}
		// The key files are the ones nats-config writes, in the mounted Secret.
		for name, file := range map[string]string{"NATS_CREDS": natsconf.ServiceSeedFile, "NATS_SYS_CREDS": natsconf.SystemSeedFile, "TEEGATE_ADMISSION_SEED": natsconf.AdmissionSeedFile} {
			v := env[name]
			if filepath.Base(v) != file || !mounted(c, filepath.Dir(v)) {
				t.Errorf("%s: %s=%q: want %s in a mounted volume", where, name, v, file)
			}
		}
		checkNATSURL(t, where, env["NATS_URL"])
		if root == "k8s/overlays/production" {
			if got["policy"] != "production" || got["allow-simulated"] != "" {
				t.Errorf("%s: production runs --policy production without --allow-simulated (got %v)", where, got)
			}
			if n, _ := strconv.Atoi(got["replicas"]); n != min(natsValues(t).Config.Cluster.Replicas, 3) {
				t.Errorf("%s: --replicas %s, the NATS cluster has %d nodes", where, got["replicas"], natsValues(t).Config.Cluster.Replicas)
			}
		}
	}
	// The probe paths answer 200 on a real gateway.
	s := stacktest.Start(t)
	for _, p := range probePaths {
		resp, err := http.Get(s.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s on a running gateway: %d", p, resp.StatusCode)
		}
	}
}

func envOf(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func mounted(c corev1.Container, dir string) bool {
	return slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == dir })
}

// checkNATSURL checks a URL names the Helm release's client Service on the
// client port.
func checkNATSURL(t testing.TB, where, url string) {
	t.Helper()
	if url == "" {
		t.Errorf("%s: no NATS_URL", where)
		return
	}
	if url != natsClientURL(t) {
		t.Errorf("%s: NATS_URL %q, the NATS chart's client Service is %s", where, url, natsClientURL(t))
	}
}

// The confidential workers: a Kata NVIDIA GPU runtime class, one
// passthrough GPU, teegate-worker with flags it has and the TEE that matches
// the runtime class, --engine openai on vLLM's port; KEDA scales them from
// the queue of the model vLLM serves.
func TestConfidentialWorkers(t *testing.T) {
	teeKinds := builtTEEs(t)
	for root, wantTEE := range map[string]string{"k8s/overlays/production": "tdx", "k8s/overlays/production-snp": "sev-snp"} {
		o := build(t, root)
		d := o.deployment(t, "teegate-worker")
		where := fmt.Sprintf("deploy/%s worker", root)
		ps := d.Spec.Template.Spec
		rc := map[string]string{"tdx": "kata-qemu-nvidia-gpu-tdx", "sev-snp": "kata-qemu-nvidia-gpu-snp"}[wantTEE]
		if ps.RuntimeClassName == nil || *ps.RuntimeClassName != rc {
			t.Errorf("%s: runtime class %v, want %s", where, ps.RuntimeClassName, rc)
		}
		if !slices.ContainsFunc(runtimeClasses(t), func(r nodev1.RuntimeClass) bool { return r.Name == rc && r.Handler == rc }) {
			t.Errorf("%s: runtime class %s is not among deploy/k8s/components/runtimeclasses", where, rc)
		}
		if len(ps.Containers) != 1 {
			t.Fatalf("%s: one container (vLLM and the worker share the GPU), got %d", where, len(ps.Containers))
		}
		c := ps.Containers[0]
		if q := c.Resources.Limits["nvidia.com/pgpu"]; q.Value() != 1 {
			t.Errorf("%s: limits nvidia.com/pgpu = %s, want 1", where, q.String())
		}
		cmd, args := containerCLI(t, c)
		if cmd.bin != "teegate-worker" {
			t.Fatalf("%s runs %s", where, cmd)
		}
		got := parseArgs(t, where, cmd, args)
		env := envChecked(t, where, c, cmd)
		if got["tee"] != wantTEE || !teeKinds[wantTEE] {
			t.Errorf("%s: --tee %q, want %s (this build has %v)", where, got["tee"], wantTEE, sortedKeys(teeKinds))
		}
		if got["gpu"] != "require" || got["engine"] != "openai" {
			t.Errorf("%s: want --gpu require --engine openai, got %v", where, got)
		}
		if portOf(t, got["engine-url"]) != env["VLLM_PORT"] {
			t.Errorf("%s: --engine-url %s is not vLLM's port %s", where, got["engine-url"], env["VLLM_PORT"])
		}
		checkNATSURL(t, where, env["NATS_URL"])
		if m := got["metrics-listen"]; m != "" && !hasPort(c, portOf(t, m)) {
			t.Errorf("%s: --metrics-listen %s is not a container port", where, m)
		}
		model := env["VLLM_SERVED_MODEL_NAME"]
		if model == "" {
			t.Fatalf("%s: no VLLM_SERVED_MODEL_NAME", where)
		}
		if len(o.scaledObject) != 1 {
			t.Fatalf("deploy/%s: %d ScaledObjects, want 1", root, len(o.scaledObject))
		}
		checkScaledObject(t, &o.scaledObject[0], d, model)
	}
}

func checkScaledObject(t testing.TB, so *scaledObject, target *appsv1.Deployment, model string) {
	t.Helper()
	if so.Spec.ScaleTargetRef.Name != target.Name || so.Metadata.Namespace != target.Namespace {
		t.Errorf("ScaledObject scales %s/%s, the workers are %s/%s", so.Metadata.Namespace, so.Spec.ScaleTargetRef.Name, target.Namespace, target.Name)
	}
	if len(so.Spec.Triggers) != 1 || so.Spec.Triggers[0].Type != "nats-jetstream" {
		t.Fatalf("ScaledObject: want one nats-jetstream trigger, got %+v", so.Spec.Triggers)
	}
	md := so.Spec.Triggers[0].Metadata
	for k := range md {
		if !slices.Contains(natsJetStreamParams, k) {
			t.Errorf("ScaledObject: the nats-jetstream scaler has no parameter %q", k)
		}
	}
	want := map[string]string{
		"account":                      natsconf.Account,
		"stream":                       wire.PendingStream,
		"consumer":                     wire.PendingConsumer(model),
		"natsServerMonitoringEndpoint": natsMonitorEndpoint(t),
	}
	for k, v := range want {
		if md[k] != v {
			t.Errorf("ScaledObject: %s = %q, want %q", k, md[k], v)
		}
	}
	for _, k := range []string{"lagThreshold", "activationLagThreshold"} {
		if _, err := strconv.Atoi(md[k]); err != nil {
			t.Errorf("ScaledObject: %s = %q is not a number", k, md[k])
		}
	}
}

// The dev overlay's simulated workers run `teegate worker` from the gateway
// image, with flags it has; the dev gateway admits simulated evidence.
func TestDevOverlay(t *testing.T) {
	o := build(t, "k8s/overlays/dev")
	d := o.deployment(t, "teegate-worker-simulated")
	c := d.Spec.Template.Spec.Containers[0]
	cmd, args := containerCLI(t, c)
	if cmd.String() != "teegate worker" {
		t.Fatalf("simulated worker runs %s", cmd)
	}
	got := parseArgs(t, "dev worker", cmd, args)
	envChecked(t, "dev worker", c, cmd)
	if got["tee"] != "simulated" {
		t.Errorf("dev worker: --tee %q", got["tee"])
	}
	gw := o.deployment(t, "teegate-gateway").Spec.Template.Spec.Containers[0]
	gcmd, gargs := containerCLI(t, gw)
	g := parseArgs(t, "dev gateway", gcmd, gargs)
	if g["policy"] != "dev" || g["allow-simulated"] != "true" {
		t.Errorf("dev gateway: want --policy dev --allow-simulated, got %v", g)
	}
	if len(o.scaledObject) != 0 || slices.ContainsFunc(o.deployments, func(d appsv1.Deployment) bool { return d.Spec.Template.Spec.RuntimeClassName != nil }) {
		t.Error("the dev overlay needs no KEDA and no confidential runtime")
	}
}

// runtimeClasses decodes deploy/k8s/components/runtimeclasses.
func runtimeClasses(t testing.TB) []nodev1.RuntimeClass {
	t.Helper()
	p := deployPath(t, "k8s", "components", "runtimeclasses", "runtimeclasses.yaml")
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var o objects
	for i, doc := range bytes.Split(raw, []byte("\n---\n")) {
		decodeStrict(t, fmt.Sprintf("%s document %d", p, i+1), doc, &o)
	}
	return o.runtime
}

// builtTEEs asks teegate-worker which --tee kinds it has.
func builtTEEs(t testing.TB) map[string]bool {
	t.Helper()
	out, _ := execOut(binary(t, "teegate-worker"), "--tee", "no-such-tee")
	m := regexp.MustCompile(`this build has: ([a-z, -]+)\)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("teegate-worker --tee no-such-tee did not list the kinds: %s", out)
	}
	kinds := map[string]bool{}
	for _, k := range strings.Split(m[1], ", ") {
		kinds[k] = true
	}
	return kinds
}

// natsClientURL is the chart's client Service for release "nats" in
// namespace "nats" (README: helm install nats ... --namespace nats).
func natsClientURL(t testing.TB) string {
	port := natsValues(t).Config.NATS.Port
	if port == 0 {
		port = nats.DefaultPort
	}
	return fmt.Sprintf("nats://%s.%s.svc.cluster.local:%d", natsRelease, natsNamespace, port)
}

// natsMonitorEndpoint is the chart's headless Service on the monitoring port.
func natsMonitorEndpoint(t testing.TB) string {
	v := natsValues(t).Config.Monitor
	if !v.Enabled {
		t.Fatal("the NATS values must enable monitoring (KEDA reads it)")
	}
	return fmt.Sprintf("%s-headless.%s.svc.cluster.local:%d", natsRelease, natsNamespace, v.Port)
}

const natsRelease, natsNamespace = "nats", "nats"
