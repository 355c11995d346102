package nodesdk

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestIndependentVerifier runs the JavaScript verifier of
// docs/attestation.md against attest/testdata/vectors. It needs node only
// (no npm packages): the verifier uses Node's built-in crypto, which is the
// point — a third party can check teegate's formats without our code.
func TestIndependentVerifier(t *testing.T) {
	dir, err := filepath.Abs("../node")
	if err != nil {
		t.Fatal(err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("TEEGATE_REQUIRE_NODE") != "" {
			t.Fatalf("node is missing: %v", err)
		}
		t.Skip("SKIPPED: the independent verifier needs node (make test runs it)")
	}
	cmd := exec.Command(node, "--test", "independent-verifier.test.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NODE_NO_WARNINGS=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("independent verifier failed: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
