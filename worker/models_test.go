package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/teegate/teegate/internal/enginetest"
	"github.com/teegate/teegate/internal/natsembed"
	"github.com/teegate/teegate/worker"
	"github.com/teegate/teegate/worker/engine"
	"github.com/teegate/teegate/worker/wire"
)

// changingEngine is a Gated engine whose model list the test changes and
// which can be made to fail its refreshes (an engine that is down).
type changingEngine struct {
	*enginetest.Gated
	mu     sync.Mutex
	models []string
	down   bool
}

func (e *changingEngine) Models(context.Context) ([]engine.Model, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.down {
		return nil, errors.New("engine down")
	}
	var out []engine.Model
	for _, m := range e.models {
		out = append(out, engine.Model{ID: m, Object: "model", OwnedBy: "test"})
	}
	return out, nil
}

func (e *changingEngine) RefreshModels(ctx context.Context) ([]engine.Model, error) {
	return e.Models(ctx)
}

func (e *changingEngine) set(models ...string) { e.mu.Lock(); e.models = models; e.mu.Unlock() }
func (e *changingEngine) setDown(d bool)       { e.mu.Lock(); e.down = d; e.mu.Unlock() }

func chatRequest(subject, model string) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Header.Set(wire.HdrVersion, wire.Version)
	m.Header.Set(wire.HdrOp, wire.OpChat)
	m.Header.Set(wire.HdrRequestID, "req_test")
	m.Data = []byte(`{"model":"` + model + `","messages":[{"role":"user","content":"hi"}]}`)
	return m
}

// A worker on a static connection follows its engine's model list: an
// added model is served on its queue and direct subjects and listed in
// the record, a removed one is neither; a failed refresh makes the record
// not ready and a good one ready again. The record's in_flight moves
// without waiting for a heartbeat.
func TestWorkerFollowsEngineModels(t *testing.T) {
	srv, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	client, err := srv.Connect("gateway")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	wconn, err := srv.Connect("worker")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(wconn.Close)
	eng := &changingEngine{Gated: enginetest.NewGated("m"), models: []string{"m"}}
	w, err := worker.New(worker.Config{Conn: wconn, Engine: eng, ID: "w1", MaxConcurrency: 4,
		ModelRefresh: 10 * time.Millisecond, Heartbeat: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Stop(ctx)
	})
	js, _ := jetstream.New(client)
	kv, err := js.KeyValue(context.Background(), wire.RegistryBucket)
	if err != nil {
		t.Fatal(err)
	}
	record := func() wire.WorkerRecord {
		e, err := kv.Get(context.Background(), "w1")
		if err != nil {
			t.Fatal(err)
		}
		var rec wire.WorkerRecord
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			t.Fatal(err)
		}
		return rec
	}
	ids := func(rec wire.WorkerRecord) []string {
		var out []string
		for _, m := range rec.Models {
			out = append(out, m.ID)
		}
		return out
	}
	answers := func(subject, model string) bool {
		r, err := client.RequestMsg(chatRequest(subject, model), 5*time.Second)
		return err == nil && r.Header.Get(wire.HdrStatus) == "200"
	}
	if rec := record(); !rec.Ready || rec.MaxConcurrency != 4 || !slices.Equal(ids(rec), []string{"m"}) {
		t.Fatalf("record at start: %+v", rec)
	}
	if !answers(wire.DirectSubject("m", "w1"), "m") || !answers(wire.InferSubject("m"), "m") {
		t.Fatal("not served on its direct and queue subjects")
	}

	eng.set("m", "n")
	eventually(t, "the added model in the record", func() bool { return slices.Equal(ids(record()), []string{"m", "n"}) })
	if !answers(wire.DirectSubject("n", "w1"), "n") || !answers(wire.InferSubject("n"), "n") || !answers(wire.DirectSubject("m", "w1"), "m") {
		t.Fatal("the added model is not served, or the kept one no longer")
	}

	eng.set("n")
	eventually(t, "the removed model out of the record", func() bool { return slices.Equal(ids(record()), []string{"n"}) })
	eventually(t, "the removed model's subjects to go", func() bool {
		_, err := client.RequestMsg(chatRequest(wire.InferSubject("m"), "m"), 5*time.Second)
		return errors.Is(err, nats.ErrNoResponders)
	})
	if !answers(wire.DirectSubject("n", "w1"), "n") {
		t.Fatal("the kept model is not served after a removal")
	}

	eng.setDown(true)
	eventually(t, "the record to say not ready", func() bool { return !record().Ready })
	if w.Ready() || !slices.Equal(ids(record()), []string{"n"}) {
		t.Fatal("a worker whose engine is down says ready, or forgot its models")
	}
	eng.setDown(false)
	eventually(t, "the record to say ready again", func() bool { return record().Ready })

	// A stream held open counts in flight at once (a quarter of 4 is one
	// request), and its end too; the heartbeat is an hour away.
	inbox := client.NewRespInbox()
	sub, err := client.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	req := streamRequest(8, inbox)
	req.Subject = wire.DirectSubject("n", "w1")
	req.Data = []byte(`{"model":"n","messages":[{"role":"user","content":"hi"}],"stream":true}`)
	if err := client.PublishMsg(req); err != nil {
		t.Fatal(err)
	}
	eventually(t, "in_flight 1", func() bool { return record().InFlight == 1 })
	close(eng.Feed)
	for {
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if k := m.Header.Get(wire.HdrKind); k == wire.KindEnd || k == wire.KindError {
			break
		}
	}
	eventually(t, "in_flight 0", func() bool { return record().InFlight == 0 })
}
