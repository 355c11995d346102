package audit

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The audit log's JetStream names. Records are published on
// SubjectPrefix + kind, so the last checkpoint is one subject lookup.
const (
	StreamName    = "TEEGATE_AUDIT"
	SubjectPrefix = "teegate.v1.audit."
	subjectAll    = SubjectPrefix + ">"
	// KeyBucket holds the audit key every gateway replica signs
	// checkpoints with (see the package comment for what that proves).
	KeyBucket = "teegate_audit_key"
)

// StreamConfig is the stream's retention and replication.
type StreamConfig struct {
	// MaxAge drops records older than this (0: keep forever). Records
	// that age out leave the chain verifiable from the first one kept.
	MaxAge time.Duration
	// MaxBytes bounds the stream (0: no bound beyond the server's).
	MaxBytes int64
	// Replicas is the JetStream replication factor in a cluster (0: the
	// JetStream client's choice; gatewaynode.Replicated keeps an existing
	// stream's and gives a new one the cluster's).
	Replicas int
}

// EnsureStream creates or updates the audit stream.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	cfg.Replicas = max(cfg.Replicas, 0)
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = -1
	}
	dup := time.Second
	if cfg.MaxAge > 0 {
		dup = min(dup, cfg.MaxAge)
	}
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        StreamName,
		Description: "teegate audit log: hash-chained records, signed checkpoints (no prompt or completion text)",
		Subjects:    []string{subjectAll},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      cfg.MaxAge,
		MaxBytes:    cfg.MaxBytes,
		Replicas:    cfg.Replicas,
		// Records are never rewritten: a deletion leaves a gap the chain
		// names, and purges are refused to ordinary clients.
		DenyPurge: true,
		// Each record's message id is its chain hash (see writeLocked);
		// the server remembers ids this long (its minimum is 100 ms), so
		// the ids it keeps stay few at any rate.
		Duplicates: dup,
	})
	if err != nil {
		return nil, fmt.Errorf("opening audit stream: %w", err)
	}
	return st, nil
}

// LoadOrCreateKey returns the shared audit key from KeyBucket, creating
// it on first use. Whoever can read the bucket can sign checkpoints: keep
// the bucket's permissions to the gateway's service users.
func LoadOrCreateKey(ctx context.Context, js jetstream.JetStream, replicas int) (ed25519.PrivateKey, error) {
	replicas = max(replicas, 0)
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: KeyBucket,
		Description: "teegate audit checkpoint key", History: 1, Replicas: replicas})
	if err != nil {
		return nil, fmt.Errorf("opening audit key bucket: %w", err)
	}
	_, seed, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, fmt.Errorf("generating audit key: %w", err)
	}
	if _, err := kv.Create(ctx, "ed25519", []byte(hex.EncodeToString(seed.Seed()))); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return nil, fmt.Errorf("storing audit key: %w", err)
	}
	e, err := kv.Get(ctx, "ed25519")
	if err != nil {
		return nil, fmt.Errorf("reading audit key: %w", err)
	}
	b, err := hex.DecodeString(string(e.Value()))
	if err != nil || len(b) != ed25519.SeedSize {
		return nil, errors.New("reading audit key: malformed seed")
	}
	return ed25519.NewKeyFromSeed(b), nil
}

// Config configures a Log.
type Config struct {
	JS     jetstream.JetStream
	Stream StreamConfig
	// Gateway names this replica in its records.
	Gateway string
	// Key signs checkpoints; nil writes none (another replica does).
	Key ed25519.PrivateKey
	// CheckpointEvery is how many records a checkpoint follows at most
	// (default 100); CheckpointInterval how long (default 1 min).
	CheckpointEvery    int
	CheckpointInterval time.Duration
	Now                func() time.Time
	Logger             *slog.Logger
}

// Log appends records to the audit stream, chaining each to the stream's
// head. Replicas append concurrently: each publish expects the stream's
// last sequence, and a replica that lost the race reloads the head and
// chains again, so the chain is one line whatever the number of writers.
type Log struct {
	cfg Config
	st  jetstream.Stream
	log *slog.Logger

	ch   chan pending
	stop chan struct{}
	done chan struct{}

	mu    sync.Mutex // guards below; held by the writer while it writes
	head  Record
	last  uint64 // the stream's last sequence as of head
	known bool
	since int // records since the last checkpoint
	cpAt  time.Time
	state State
	once  sync.Once
}

type pending struct {
	e    Entry
	done chan error // nil: fire and forget
	// flush entries carry no record: they wake Flush once all before are written.
	flush bool
}

// Open opens the stream and starts the writer.
func Open(ctx context.Context, cfg Config) (*Log, error) {
	if cfg.JS == nil {
		return nil, errors.New("audit config: JS is required")
	}
	if cfg.CheckpointEvery <= 0 {
		cfg.CheckpointEvery = 100
	}
	if cfg.CheckpointInterval <= 0 {
		cfg.CheckpointInterval = time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	st, err := EnsureStream(ctx, cfg.JS, cfg.Stream)
	if err != nil {
		return nil, err
	}
	l := &Log{cfg: cfg, st: st, log: cfg.Logger, ch: make(chan pending, 8192), stop: make(chan struct{}), done: make(chan struct{})}
	l.cpAt = cfg.Now()
	go l.run()
	return l, nil
}

// Append queues e; it blocks only when the queue is full, so no record is
// ever dropped.
func (l *Log) Append(e Entry) {
	select {
	case l.ch <- pending{e: e}:
	case <-l.stop:
	}
}

// AppendWait appends e and waits until it is in the stream.
func (l *Log) AppendWait(ctx context.Context, e Entry) error {
	p := pending{e: e, done: make(chan error, 1)}
	select {
	case l.ch <- p:
	case <-l.stop:
		return errors.New("appending audit record: log closed")
	case <-ctx.Done():
		return fmt.Errorf("appending audit record: %w", ctx.Err())
	}
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("appending audit record: %w", ctx.Err())
	}
}

// Flush waits until every record queued before it is in the stream.
func (l *Log) Flush(ctx context.Context) error {
	p := pending{flush: true, done: make(chan error, 1)}
	select {
	case l.ch <- p:
	case <-ctx.Done():
		return fmt.Errorf("flushing audit log: %w", ctx.Err())
	}
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("flushing audit log: %w", ctx.Err())
	}
}

// Checkpoint writes a signed checkpoint of the current head now.
func (l *Log) Checkpoint(ctx context.Context) error {
	if l.cfg.Key == nil {
		return errors.New("writing audit checkpoint: no audit key")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.checkpointLocked(ctx)
}

// Close writes what is queued, a last checkpoint, and stops the writer.
func (l *Log) Close() {
	l.once.Do(func() {
		close(l.stop)
		<-l.done
	})
}

func (l *Log) run() {
	defer close(l.done)
	batch := make([]pending, 0, writeBatch)
	tick := time.NewTicker(min(l.cfg.CheckpointInterval, 10*time.Second))
	defer tick.Stop()
	for {
		select {
		case p := <-l.ch:
			batch = l.collect(append(batch[:0], p))
			l.handle(batch)
		case <-tick.C:
			l.maybeCheckpoint(false)
		case <-l.stop:
		drain:
			for {
				select {
				case p := <-l.ch:
					batch = l.collect(append(batch[:0], p))
					l.handle(batch)
				default:
					break drain
				}
			}
			l.maybeCheckpoint(true)
			return
		}
	}
}

// writeBatch bounds the records published before their acks are awaited.
const writeBatch = 128

// collect adds to batch what is queued, without waiting, up to writeBatch.
func (l *Log) collect(batch []pending) []pending {
	for len(batch) < writeBatch {
		select {
		case p := <-l.ch:
			batch = append(batch, p)
		default:
			return batch
		}
	}
	return batch
}

// handle writes a batch's records, a checkpoint whenever CheckpointEvery
// records are due one, and then tells whoever waits (AppendWait, Flush).
func (l *Log) handle(batch []pending) {
	entries := make([]Entry, 0, len(batch))
	for _, p := range batch {
		if !p.flush {
			entries = append(entries, p.e)
		}
	}
	errs := make([]error, 0, len(entries))
	for rest := entries; len(rest) > 0; {
		n := len(rest)
		if l.cfg.Key != nil {
			l.mu.Lock()
			n = min(n, max(1, l.cfg.CheckpointEvery-l.since))
			l.mu.Unlock()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		for i, err := range l.write(ctx, rest[:n]) {
			if err != nil {
				l.log.Error("writing audit record failed", "kind", rest[i].Kind, "err", err)
			}
			errs = append(errs, err)
		}
		cancel()
		l.maybeCheckpoint(false)
		rest = rest[n:]
	}
	i := 0
	for _, p := range batch {
		var err error
		if !p.flush {
			err = errs[i]
			i++
		}
		if p.done != nil {
			p.done <- err
		}
	}
}

func (l *Log) maybeCheckpoint(force bool) {
	if l.cfg.Key == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	due := l.since >= l.cfg.CheckpointEvery || (l.since > 0 && (force || l.cfg.Now().Sub(l.cpAt) >= l.cfg.CheckpointInterval))
	if !due {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.checkpointLocked(ctx); err != nil {
		l.log.Error("writing audit checkpoint failed", "err", err)
	}
}

// checkpointLocked signs the head as it is in the stream (reloading it:
// another replica may have written since).
func (l *Log) checkpointLocked(ctx context.Context) error {
	for range 100 {
		if err := l.loadHeadLocked(ctx); err != nil {
			return err
		}
		e := signCheckpoint(l.cfg.Key, l.head.Seq, l.head.Hash)
		err := l.publishLocked(ctx, e)
		if isWrongLast(err) {
			l.known = false
			continue
		}
		if err != nil {
			return fmt.Errorf("writing audit checkpoint: %w", err)
		}
		l.since = 0
		l.cpAt = l.cfg.Now()
		return nil
	}
	return errors.New("writing audit checkpoint: the head kept moving")
}

// write appends entries in order and returns each one's error (nil:
// in the stream).
func (l *Log) write(ctx context.Context, entries []Entry) []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	errs := make([]error, len(entries))
	todo := entries
	done := func(n int, err error) {
		for i := range n {
			errs[len(entries)-len(todo)+i] = err
		}
		todo = todo[n:]
	}
	for range 1000 {
		if len(todo) == 0 {
			return errs
		}
		if !l.known {
			if err := l.loadHeadLocked(ctx); err != nil {
				done(len(todo), err)
				return errs
			}
		}
		n, err := l.writeLocked(ctx, todo)
		done(n, nil)
		if err == nil {
			continue
		}
		// What failed is the first record not written; the ones after it
		// were chained to it, so the server refused them too.
		l.known = false
		if isWrongLast(err) {
			continue // another replica wrote: chain again after its records
		}
		done(1, fmt.Errorf("writing audit record: %w", err))
	}
	done(len(todo), errors.New("writing audit record: too many concurrent writers"))
	return errs
}

// writeLocked chains entries after the known head and publishes them
// without waiting between messages. Each message expects the stream's last
// sequence to be the one before it, and from the second on, the stream's
// last message id to be the previous record's hash (every record's message
// id is its hash), so a record is stored only right after the one it
// chains to: if another replica's record slips in, or one fails, every
// later one is refused and the chain stays one line. It returns how many
// of entries (a prefix) are in the stream, and the first failure.
func (l *Log) writeLocked(ctx context.Context, entries []Entry) (int, error) {
	recs := make([]Record, len(entries))
	acks := make([]jetstream.PubAckFuture, 0, len(entries))
	var pubErr error
	prev := l.head
	for i, e := range entries {
		msg, rec, err := l.message(e, prev)
		if err != nil {
			pubErr = err
			break
		}
		opts := []jetstream.PublishOpt{jetstream.WithExpectLastSequence(l.last + uint64(i)), jetstream.WithExpectStream(StreamName),
			jetstream.WithMsgID(hex.EncodeToString(rec.Hash[:]))}
		if i > 0 {
			opts = append(opts, jetstream.WithExpectLastMsgID(hex.EncodeToString(prev.Hash[:])))
		}
		f, err := l.cfg.JS.PublishMsgAsync(msg, opts...)
		if err != nil {
			pubErr = err
			break
		}
		recs[i], prev = rec, rec
		acks = append(acks, f)
	}
	written, last := 0, l.last
	var firstErr error
	for i, f := range acks {
		select {
		case ack := <-f.Ok():
			// A later record stored proves every one before it stored.
			written, last = i+1, ack.Sequence
		case err := <-f.Err():
			if firstErr == nil {
				firstErr = err
			}
		case <-ctx.Done():
			if firstErr == nil {
				firstErr = ctx.Err()
			}
		}
	}
	if written > 0 {
		l.head, l.last = recs[written-1], last
		l.since += written
		l.state.HeadSeq, l.state.HeadHash = l.head.Seq, hex.EncodeToString(l.head.Hash[:])
	}
	if written < len(entries) && firstErr == nil {
		firstErr = pubErr
	}
	if written < len(entries) && !isWrongLast(firstErr) {
		// An unanswered publish may still have been stored: the head says.
		if err := l.loadHeadLocked(ctx); err == nil {
			for i := len(acks) - 1; i >= written; i-- {
				if l.head.Hash == recs[i].Hash {
					l.since += i + 1 - written
					l.state.HeadSeq, l.state.HeadHash = l.head.Seq, hex.EncodeToString(l.head.Hash[:])
					return i + 1, nil
				}
			}
		}
	}
	if written == len(entries) {
		return written, nil
	}
	return written, firstErr
}

// message completes e (time, salt, gateway) and builds its record after
// prev and the stream message that carries it.
func (l *Log) message(e Entry, prev Record) (*nats.Msg, Record, error) {
	if e.Time.IsZero() {
		e.Time = l.cfg.Now().UTC()
	}
	if e.Salt == "" {
		e.Salt = newSalt()
	}
	if e.Gateway == "" {
		e.Gateway = l.cfg.Gateway
	}
	content, err := json.Marshal(e)
	if err != nil {
		return nil, Record{}, fmt.Errorf("encoding audit record: %w", err)
	}
	rec := newRecord(prev.Seq+1, prev.Hash, content)
	msg := nats.NewMsg(SubjectPrefix + e.Kind)
	msg.Data = rec.AppendJSON(nil)
	return msg, rec, nil
}

// publishLocked chains e after the known head and publishes it expecting
// the stream's last sequence to be unchanged.
func (l *Log) publishLocked(ctx context.Context, e Entry) error {
	if e.Time.IsZero() {
		e.Time = l.cfg.Now().UTC()
	}
	msg, rec, err := l.message(e, l.head)
	if err != nil {
		return err
	}
	ack, err := l.cfg.JS.PublishMsg(ctx, msg, jetstream.WithExpectLastSequence(l.last), jetstream.WithExpectStream(StreamName),
		jetstream.WithMsgID(hex.EncodeToString(rec.Hash[:])))
	if err != nil {
		return err
	}
	l.head, l.last = rec, ack.Sequence
	l.state.HeadSeq, l.state.HeadHash = rec.Seq, hex.EncodeToString(rec.Hash[:])
	if e.Kind == KindCheckpoint {
		l.state.Checkpoint = &CheckpointState{Seq: rec.Seq, HeadSeq: e.HeadSeq, Time: e.Time, Signer: e.SignerKey}
	}
	return nil
}

// loadHeadLocked reads the chain head and the stream's last sequence.
func (l *Log) loadHeadLocked(ctx context.Context) error {
	head, last, err := readHead(ctx, l.st)
	if err != nil {
		return err
	}
	l.head, l.last, l.known = head, last, true
	return nil
}

// readHead returns the last record of the stream (zero when empty) and the
// stream's last sequence.
func readHead(ctx context.Context, st jetstream.Stream) (Record, uint64, error) {
	info, err := st.Info(ctx)
	if err != nil {
		return Record{}, 0, fmt.Errorf("reading audit stream: %w", err)
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 {
		if last == 0 {
			return Record{}, 0, nil
		}
		return Record{}, last, fmt.Errorf("reading audit head: the stream holds no records after sequence %d: %w", last, ErrMissing)
	}
	m, err := st.GetLastMsgForSubject(ctx, subjectAll)
	if err != nil {
		return Record{}, 0, fmt.Errorf("reading audit head: %w", err)
	}
	r, err := ParseRecord(m.Data)
	if err != nil {
		return Record{}, 0, fmt.Errorf("reading audit head (stream sequence %d): %w", m.Sequence, err)
	}
	return r, last, nil
}

// errCodeWrongLastMsgID is the server's "wrong last msg ID" (JetStream
// API error 10070), which nats.go names no constant for.
const errCodeWrongLastMsgID jetstream.ErrorCode = 10070

func isWrongLast(err error) bool {
	var ae *jetstream.APIError
	return errors.As(err, &ae) && (ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant || ae.ErrorCode == errCodeWrongLastMsgID)
}

// State is the chain's state as a dashboard shows it.
type State struct {
	// Records is how many records the stream holds; FirstSeq the oldest.
	Records  uint64 `json:"records"`
	FirstSeq uint64 `json:"first_seq"`
	// HeadSeq and HeadHash are the chain's last record.
	HeadSeq  uint64 `json:"head_seq"`
	HeadHash string `json:"head_hash,omitempty"`
	// Checkpoint is the last signed checkpoint (nil: none yet).
	Checkpoint *CheckpointState `json:"checkpoint,omitempty"`
	// Verified says that the last checkpoint's signature is valid and the
	// chain from it to the head links; TailError says why not.
	Verified  bool   `json:"verified"`
	TailError string `json:"tail_error,omitempty"`
}

// CheckpointState describes a checkpoint record.
type CheckpointState struct {
	// Seq is the checkpoint record's own position; HeadSeq the record it signs.
	Seq     uint64    `json:"seq"`
	HeadSeq uint64    `json:"head_seq"`
	Time    time.Time `json:"time"`
	Signer  string    `json:"signer"`
}

// ReadState reads the chain's state from the stream: head, last
// checkpoint, and a check of the chain from that checkpoint to the head
// (a full replay is Verify's job). pinned, when set, is the audit public
// key checkpoints must be signed with.
func ReadState(ctx context.Context, js jetstream.JetStream, pinned ed25519.PublicKey) (State, error) {
	st, err := js.Stream(ctx, StreamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return State{}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("reading audit state: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return State{}, fmt.Errorf("reading audit state: %w", err)
	}
	s := State{Records: info.State.Msgs, FirstSeq: info.State.FirstSeq}
	if s.Records == 0 {
		return s, nil
	}
	head, _, err := readHead(ctx, st)
	if err != nil {
		s.TailError = err.Error()
		return s, nil
	}
	s.HeadSeq, s.HeadHash = head.Seq, hex.EncodeToString(head.Hash[:])
	m, err := st.GetLastMsgForSubject(ctx, SubjectPrefix+KindCheckpoint)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		s.TailError = "no checkpoint yet"
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("reading audit state: %w", err)
	}
	cp, err := ParseRecord(m.Data)
	if err != nil {
		s.TailError = err.Error()
		return s, nil
	}
	e, err := cp.Entry()
	if err != nil {
		s.TailError = err.Error()
		return s, nil
	}
	s.Checkpoint = &CheckpointState{Seq: cp.Seq, HeadSeq: e.HeadSeq, Time: e.Time, Signer: e.SignerKey}
	// Replay from the record the checkpoint signs to the head.
	v := newVerifier(VerifyOptions{AuditKey: pinned, SkipReceipts: true})
	if err := v.fromStream(ctx, st, e.HeadSeq, 0); err != nil {
		s.TailError = err.Error()
		return s, nil
	}
	rep := v.finish()
	if len(rep.Problems) > 0 {
		s.TailError = rep.Problems[0].Error()
		return s, nil
	}
	s.Verified = true
	return s, nil
}

// State returns what this writer last wrote (no I/O).
func (l *Log) State() State {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.state
	return s
}
