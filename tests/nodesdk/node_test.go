package nodesdk

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/teegate/teegate/internal/stacktest"
)

func TestNodeSDKSmoke(t *testing.T) {
	dir, err := filepath.Abs("../node")
	if err != nil {
		t.Fatal(err)
	}
	_, nodeErr := exec.LookPath("node")
	_, sdkErr := os.Stat(filepath.Join(dir, "node_modules", "openai"))
	if nodeErr != nil || sdkErr != nil {
		if os.Getenv("TEEGATE_REQUIRE_NODE") != "" {
			t.Fatalf("node or the openai npm package is missing (node: %v, sdk: %v); run `make node-deps`", nodeErr, sdkErr)
		}
		t.Skip("SKIPPED: node SDK smoke tests need node and `make node-deps` (make test runs them)")
	}
	s := stacktest.Start(t)
	cmd := exec.Command("node", "--test", "smoke.test.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TEEGATE_BASE_URL="+s.URL+"/v1", "TEEGATE_API_KEY="+stacktest.APIKey, "NODE_NO_WARNINGS=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node smoke tests failed: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
