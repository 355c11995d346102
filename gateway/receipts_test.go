package gateway

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/teegate/teegate/internal/natsembed"
)

type discardLog struct{}

func (discardLog) Error(string, ...any) {}

type countLog struct{ n int }

func (l *countLog) Error(string, ...any) { l.n++ }

func receiptsKV(t testing.TB) (*nats.Conn, jetstream.KeyValue) {
	t.Helper()
	srv, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect("gw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := EnsureReceiptsBucket(ctx, js, 0)
	if err != nil {
		t.Fatal(err)
	}
	return nc, kv
}

// receiptJSON stands for a signed receipt (the store does not parse it
// without metrics).
func receiptJSON(i int) []byte {
	return fmt.Appendf(nil, `{"receipt":"eyJ2IjoxfQ","signature":"c2ln","n":%d}`, i)
}

// TestReceiptStoreBatches writes more receipts than one batch holds and
// finds every one in the bucket once the store is closed.
func TestReceiptStoreBatches(t *testing.T) {
	nc, kv := receiptsKV(t)
	s, err := newReceiptStore(nc, kv, discardLog{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 3*receiptBatch + 7
	for i := range n {
		s.put(fmt.Sprintf("req_%04d", i), receiptJSON(i))
	}
	s.close()
	s.close() // a second close waits the same way
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range n {
		e, err := kv.Get(ctx, fmt.Sprintf("req_%04d", i))
		if err != nil {
			t.Fatalf("receipt %d: %v", i, err)
		}
		if string(e.Value()) != string(receiptJSON(i)) {
			t.Fatalf("receipt %d: got %s", i, e.Value())
		}
	}
}

// TestReceiptStoreRefusedIsLogged: a receipt the server refuses (over the
// bucket's value size) is logged, and the others of its batch are stored.
func TestReceiptStoreRefusedIsLogged(t *testing.T) {
	nc, kv := receiptsKV(t)
	l := &countLog{}
	s, err := newReceiptStore(nc, kv, l, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.put("req_ok1", receiptJSON(1))
	s.put("req_big", make([]byte, 65<<10))
	s.put("req_ok2", receiptJSON(2))
	s.close()
	if l.n != 1 {
		t.Errorf("%d errors logged, want 1", l.n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, id := range []string{"req_ok1", "req_ok2"} {
		if _, err := kv.Get(ctx, id); err != nil {
			t.Errorf("%s: %v", id, err)
		}
	}
	if _, err := kv.Get(ctx, "req_big"); err == nil {
		t.Error("the refused receipt is in the bucket")
	}
}

// BenchmarkReceiptStore is the receipt writer's cost per receipt (b.N
// receipts queued, then the store closed once all are written), against
// BenchmarkReceiptKVPut, one synchronous Put per receipt as the writer
// did before batching, in the same run.
func BenchmarkReceiptStore(b *testing.B) {
	nc, kv := receiptsKV(b)
	s, err := newReceiptStore(nc, kv, discardLog{}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	body := receiptJSON(0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		s.put(fmt.Sprintf("req_%08d", i), body)
	}
	s.close()
}

func BenchmarkReceiptKVPut(b *testing.B) {
	_, kv := receiptsKV(b)
	body := receiptJSON(0)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := kv.Put(ctx, fmt.Sprintf("req_%08d", i), body); err != nil {
			b.Fatal(err)
		}
	}
}

// TestReceiptStoreRetriesWhileTheBucketIsAway: a receipt written while
// its bucket cannot take it (here: gone, as a cluster's bucket is while
// it elects a leader) is written again once the bucket is back, and
// nothing is logged.
func TestReceiptStoreRetriesWhileTheBucketIsAway(t *testing.T) {
	nc, kv := receiptsKV(t)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := js.DeleteKeyValue(ctx, ReceiptsBucket); err != nil {
		t.Fatal(err)
	}
	retried := make(chan struct{}, 16)
	receiptRetryHook = func() { retried <- struct{}{} }
	defer func() { receiptRetryHook = nil }()
	l := &countLog{}
	s, err := newReceiptStore(nc, kv, l, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.put("req_away", receiptJSON(1))
	select {
	case <-retried:
	case <-ctx.Done():
		t.Fatal("no retry")
	}
	kv2, err := EnsureReceiptsBucket(ctx, js, 0)
	if err != nil {
		t.Fatal(err)
	}
	s.close()
	if l.n != 0 {
		t.Errorf("%d errors logged", l.n)
	}
	if e, err := kv2.Get(ctx, "req_away"); err != nil || string(e.Value()) != string(receiptJSON(1)) {
		t.Fatalf("the receipt after the bucket came back: %v", err)
	}
}
