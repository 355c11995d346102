package policies

import (
	"context"
	"os"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
)

// TestRego runs the OPA unit tests (test_ rules) beside each shipped policy,
// with the policy's shipped data in the store, and fails on any failure.
func TestRego(t *testing.T) {
	for _, name := range BuiltinNames() {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			modules := map[string]*ast.Module{}
			for _, file := range []string{name + ".rego", name + "_test.rego"} {
				src, err := os.ReadFile(file)
				if err != nil {
					t.Fatal(err)
				}
				mod, err := ast.ParseModuleWithOpts(file, string(src), ast.ParserOptions{RegoVersion: ast.RegoV1})
				if err != nil {
					t.Fatal(err)
				}
				modules[file] = mod
			}
			store := inmem.NewFromObject(readData(t, name+".data.json"))
			txn := storage.NewTransactionOrDie(ctx, store)
			defer store.Abort(ctx, txn)

			ch, err := tester.NewRunner().
				SetDefaultRegoVersion(ast.RegoV1).
				SetStore(store).
				SetModules(modules).
				RaiseBuiltinErrors(true).
				RunTests(ctx, txn)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for r := range ch {
				n++
				if r.Error != nil {
					t.Errorf("%s: error: %v", r.Name, r.Error)
				} else if r.Fail {
					t.Errorf("%s: FAIL", r.Name)
				}
			}
			if n == 0 {
				t.Fatal("no Rego tests found")
			}
			t.Logf("%d Rego tests", n)
		})
	}
}
