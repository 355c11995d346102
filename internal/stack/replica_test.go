package stack_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/teegate/teegate/internal/stacktest"
	"github.com/teegate/teegate/worker"
	"github.com/teegate/teegate/worker/engine/builtin"
)

// A replica is the whole gateway node: with the first gateway's admission
// service stopped, a worker joining is judged by the replica's and served
// through both gateways (decisions and the registry are shared).
func TestReplicaAnswersAdmission(t *testing.T) {
	s := stacktest.Start(t, stacktest.WithEngines())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := s.AddGateway(ctx, "gateway-b")
	if err != nil {
		t.Fatal(err)
	}
	if r.Node.Admission == nil || r.Node.Evidence == nil || r.Node.Receipts == nil {
		t.Fatal("the replica runs without admission or stores")
	}
	s.Node.Admission.Stop()
	eng := stacktest.Builtin(t, builtin.Config{})
	w, err := s.AddWorker(ctx, eng, worker.Config{}, "late-worker")
	if err != nil {
		t.Fatal(err)
	}
	if !w.Admission().Admitted {
		t.Fatalf("a worker joining while only the replica judges: %+v", w.Admission())
	}
	for _, base := range []string{s.URL, r.URL} {
		stacktest.Eventually(t, 30*time.Second, func() bool {
			req, _ := http.NewRequest("GET", base+"/v1/models/teegate-builtin", nil)
			req.Header.Set("Authorization", "Bearer "+stacktest.APIKey)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		}, "the worker's model through "+base)
	}
}
