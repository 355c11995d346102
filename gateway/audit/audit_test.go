package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/teegate/teegate/internal/natsembed"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func startJS(t testing.TB) (jetstream.JetStream, func() jetstream.JetStream) {
	t.Helper()
	srv, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	open := func() jetstream.JetStream {
		nc, err := srv.Connect("audit-test")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return js
	}
	return open(), open
}

func openLog(t *testing.T, js jetstream.JetStream, key ed25519.PrivateKey, name string) *Log {
	t.Helper()
	l, err := Open(context.Background(), Config{JS: js, Key: key, Gateway: name, CheckpointEvery: 7})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Two writers on one stream make one chain; tampering is named.
func TestChainTwoWritersAndTamper(t *testing.T) {
	ctx := ctxT(t)
	js, open := startJS(t)
	key, err := LoadOrCreateKey(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	key2, err := LoadOrCreateKey(ctx, open(), 1)
	if err != nil || !bytes.Equal(key, key2) {
		t.Fatalf("replicas got different audit keys: %v", err)
	}
	a, b := openLog(t, js, key, "gw-a"), openLog(t, open(), key2, "gw-b")
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, tenant := a, "t1"
			if i%2 == 1 {
				l, tenant = b, "t2"
			}
			if err := l.AppendWait(ctx, Entry{Kind: KindRefusal, Tenant: tenant, Status: 429, Reasons: []string{"rate"}}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if err := a.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := VerifyStream(ctx, js, VerifyOptions{AuditKey: key.Public().(ed25519.PublicKey), SkipReceipts: true})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Kinds[KindRefusal] != 60 || rep.Checkpoints < 2 {
		t.Fatalf("report: ok=%v kinds=%v checkpoints=%d problems=%v", rep.OK(), rep.Kinds, rep.Checkpoints, rep.Problems)
	}
	st, err := ReadState(ctx, js, key.Public().(ed25519.PublicKey))
	if err != nil || !st.Verified || st.HeadSeq != rep.HeadSeq || st.Checkpoint == nil {
		t.Fatalf("state %+v, %v", st, err)
	}

	// Export for t1 verifies offline and holds no t2 record.
	var buf bytes.Buffer
	if err := Export(ctx, js, &buf, "t1", time.Time{}, nil); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), `"tenant":"t2"`) {
		t.Fatal("export for t1 holds a t2 record")
	}
	frep, err := VerifyFile(ctx, bytes.NewReader(buf.Bytes()), VerifyOptions{AuditKey: key.Public().(ed25519.PublicKey), SkipReceipts: true})
	if err != nil || !frep.OK() || frep.Kinds[KindRefusal] != 30 || frep.Links != 30 {
		t.Fatalf("export: %+v, %v", frep, err)
	}
	// A link flipped in the export breaks the chain at that record.
	lines := strings.Split(buf.String(), "\n")
	for i, l := range lines {
		if strings.Contains(l, `"content_sha256"`) {
			j := strings.Index(l, `"content_sha256":"`) + len(`"content_sha256":"`)
			c := byte('0')
			if l[j] == '0' {
				c = '1'
			}
			lines[i] = l[:j] + string(c) + l[j+1:]
			break
		}
	}
	frep, err = VerifyFile(ctx, strings.NewReader(strings.Join(lines, "\n")), VerifyOptions{SkipReceipts: true})
	if err != nil || frep.OK() || !errors.Is(frep.Problems[0], ErrHash) {
		t.Fatalf("tampered export: %+v, %v", frep.Problems, err)
	}

	// Deleting record 10 through the NATS API is named.
	s, err := js.Stream(ctx, StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMsg(ctx, 10); err != nil {
		t.Fatal(err)
	}
	rep, err = VerifyStream(ctx, js, VerifyOptions{SkipReceipts: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || rep.Problems[0].Seq != 10 || !errors.Is(rep.Problems[0], ErrMissing) {
		t.Fatalf("deleted record 10: %v", rep.Problems)
	}
}

// Rewriting the stream with one record altered is named.
func TestAlteredRecord(t *testing.T) {
	ctx := ctxT(t)
	js, _ := startJS(t)
	key, _ := LoadOrCreateKey(ctx, js, 1)
	l := openLog(t, js, key, "gw")
	for i := range 20 {
		if err := l.AppendWait(ctx, Entry{Kind: KindKey, Tenant: "t", Action: "create", KeyID: strings.Repeat("a", i+1)}); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	s, _ := js.Stream(ctx, StreamName)
	var msgs [][]byte
	for seq := uint64(1); ; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			break
		}
		msgs = append(msgs, m.Data)
	}
	if err := js.DeleteStream(ctx, StreamName); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureStream(ctx, js, StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	for i, d := range msgs {
		if i == 11 { // record 12
			d = bytes.Replace(d, []byte(`"action":"create"`), []byte(`"action":"revoke"`), 1)
		}
		if _, err := js.Publish(ctx, SubjectPrefix+"key", d); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := VerifyStream(ctx, js, VerifyOptions{SkipReceipts: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || rep.Problems[0].Seq != 12 || !errors.Is(rep.Problems[0], ErrHash) {
		t.Fatalf("altered record 12: %v", rep.Problems)
	}
}

func FuzzParseRecord(f *testing.F) {
	r := newRecord(3, [32]byte{1}, []byte(`{"kind":"key","time":"2026-01-01T00:00:00Z","salt":"00"}`))
	f.Add(r.AppendJSON(nil))
	l := r.Link()
	f.Add(l.AppendJSON(nil))
	f.Add([]byte(`{"v":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := ParseRecord(b)
		if err != nil {
			return
		}
		again, err := ParseRecord(rec.AppendJSON(nil))
		if err != nil || again.Hash != rec.Hash {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// Two writers, each with many records queued at once (so that both
// pipeline batches and race on the head), still make one verifiable chain
// holding every record.
func TestPipelinedWritersRace(t *testing.T) {
	ctx := ctxT(t)
	js, open := startJS(t)
	key, err := LoadOrCreateKey(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	a, b := openLog(t, js, key, "gw-a"), openLog(t, open(), key, "gw-b")
	const n = 600
	var wg sync.WaitGroup
	for _, l := range []*Log{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				l.Append(Entry{Kind: KindRefusal, Tenant: "t1", Status: 429, Reasons: []string{"rate"}})
			}
		}()
	}
	wg.Wait()
	for _, l := range []*Log{a, b} {
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := VerifyStream(ctx, js, VerifyOptions{AuditKey: key.Public().(ed25519.PublicKey), SkipReceipts: true})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Kinds[KindRefusal] != 2*n {
		t.Fatalf("report: ok=%v kinds=%v problems=%v", rep.OK(), rep.Kinds, rep.Problems)
	}
}

// The check pipelining rests on: the server stores a record only right
// after the one it names as the last (by message id), and the refusal is
// one the writer recognises as a lost race.
func TestExpectLastMsgIDRefused(t *testing.T) {
	ctx := ctxT(t)
	js, _ := startJS(t)
	l := openLog(t, js, nil, "gw-a")
	if err := l.AppendWait(ctx, Entry{Kind: KindRefusal, Tenant: "t1", Status: 429}); err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	head, last := l.head, l.last
	msg, rec, err := l.message(Entry{Kind: KindRefusal, Tenant: "t1", Status: 429}, head)
	l.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	wrong := head.Hash
	wrong[0] ^= 1
	_, err = js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequence(last), jetstream.WithMsgID(hex.EncodeToString(rec.Hash[:])),
		jetstream.WithExpectLastMsgID(hex.EncodeToString(wrong[:])))
	if !isWrongLast(err) {
		t.Fatalf("a record naming the wrong last message: %v, want a wrong-last refusal", err)
	}
	// Naming the right one stores it.
	if _, err := js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequence(last), jetstream.WithMsgID(hex.EncodeToString(rec.Hash[:])),
		jetstream.WithExpectLastMsgID(hex.EncodeToString(head.Hash[:]))); err != nil {
		t.Fatal(err)
	}
}
