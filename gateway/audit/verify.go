package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teegate/teegate/attest"
)

// VerifyOptions configure a replay of the log.
type VerifyOptions struct {
	// AuditKey pins the checkpoint signer; nil accepts the signer the
	// checkpoints name (the report then says the key was not pinned).
	AuditKey ed25519.PublicKey
	// Bundles verifies evidence bundles (verifiers, simulated gate). Each
	// bundle is verified as of its own creation time: a receipt stays
	// provable after its evidence expired.
	Bundles attest.VerifyOptions
	// Evidence looks a bundle up by id when the log does not carry it
	// (the evidence bucket); nil: the log must carry it.
	Evidence func(ctx context.Context, id string) ([]byte, error)
	// SkipReceipts checks the chain and checkpoints only.
	SkipReceipts bool
	// Since skips receipts before this time in the ledger (the chain is
	// still checked from the first record).
	Since time.Time
}

// Problem is one failed check, naming the record.
type Problem struct {
	Seq uint64
	Err error
}

func (p Problem) Error() string { return fmt.Sprintf("record %d: %v", p.Seq, p.Err) }
func (p Problem) Unwrap() error { return p.Err }

// Served is one verified receipt, as the ledger sums it. Worker, Provider
// and Model come from the worker's signed evidence and receipt; Tenant is
// the gateway's word.
type Served struct {
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	RequestID string    `json:"request_id"`
	Tenant    string    `json:"tenant"`
	Model     string    `json:"model"`
	Worker    string    `json:"worker"`
	Provider  string    `json:"provider"`
	Usage     Usage     `json:"usage"`
}

// Report is what a replay found.
type Report struct {
	// FirstSeq and HeadSeq bound the chain replayed; Records counts the
	// records with content, Links those standing in by digest.
	FirstSeq, HeadSeq uint64
	Records, Links    uint64
	// Kinds counts records by kind.
	Kinds map[string]int
	// Receipts counts receipt records whose signature verified.
	Receipts int
	// Checkpoints counts valid checkpoints; Anchored is the last record a
	// valid checkpoint covers (records after it are not signed yet).
	Checkpoints int
	Anchored    uint64
	// Signer is the checkpoint key seen; Pinned whether it was pinned.
	Signer string
	Pinned bool
	// Tenant is the export's tenant (file mode).
	Tenant string
	// Served lists the verified receipts (at or after Since).
	Served []Served
	// Problems lists every failed check; the log verifies when empty.
	Problems []Problem
}

// OK reports whether every check passed.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

type verifier struct {
	opts    VerifyOptions
	rep     Report
	started bool
	prev    Record
	hashes  map[uint64][32]byte
	bundles map[string][]byte // evidence id → canonical bundle bytes
	checked map[string]*attest.Verified
	bad     map[string]error
	// receipts waits for the bundles to be known (an export carries them
	// after the records).
	receipts []pendingReceipt
}

type pendingReceipt struct {
	seq uint64
	e   *Entry
}

func newVerifier(opts VerifyOptions) *verifier {
	return &verifier{opts: opts, rep: Report{Kinds: map[string]int{}, Pinned: opts.AuditKey != nil},
		hashes: map[uint64][32]byte{}, bundles: map[string][]byte{}, checked: map[string]*attest.Verified{}, bad: map[string]error{}}
}

func (v *verifier) problem(seq uint64, err error) {
	v.rep.Problems = append(v.rep.Problems, Problem{Seq: seq, Err: err})
}

// add checks one record in chain order.
func (v *verifier) add(r Record, parseErr error) {
	if parseErr != nil {
		// A hash mismatch still names its position; chain on what the
		// record claims so the next record is judged on its own.
		v.problem(r.Seq, parseErr)
	}
	if !v.started {
		v.started = true
		v.rep.FirstSeq = r.Seq
	} else {
		switch {
		case r.Seq <= v.prev.Seq:
			v.problem(r.Seq, fmt.Errorf("%w: sequence %d after %d", ErrBrokenChain, r.Seq, v.prev.Seq))
			return
		case r.Seq > v.prev.Seq+1:
			if r.Seq == v.prev.Seq+2 {
				v.problem(v.prev.Seq+1, fmt.Errorf("%w: record %d is gone", ErrMissing, v.prev.Seq+1))
			} else {
				v.problem(v.prev.Seq+1, fmt.Errorf("%w: records %d to %d are gone", ErrMissing, v.prev.Seq+1, r.Seq-1))
			}
		case r.Prev != v.prev.Hash:
			v.problem(r.Seq, fmt.Errorf("%w: record %d's hash differs from the one this record names", ErrBrokenChain, v.prev.Seq))
		}
	}
	v.prev = r
	v.rep.HeadSeq = r.Seq
	v.hashes[r.Seq] = r.Hash
	if r.Content == nil {
		v.rep.Links++
		return
	}
	v.rep.Records++
	if parseErr != nil {
		return
	}
	e, err := r.Entry()
	if err != nil {
		v.problem(r.Seq, err)
		return
	}
	v.rep.Kinds[e.Kind]++
	switch e.Kind {
	case KindCheckpoint:
		seq, head, err := checkCheckpoint(e, v.opts.AuditKey)
		if err == nil {
			h, ok := v.hashes[seq]
			switch {
			case seq >= r.Seq:
				err = fmt.Errorf("%w: it signs record %d, which does not precede it", ErrCheckpoint, seq)
			case ok && h != head:
				err = fmt.Errorf("%w: the head it signs differs from record %d", ErrCheckpoint, seq)
			case !ok && seq >= v.rep.FirstSeq:
				err = fmt.Errorf("%w: it signs record %d, which the chain lacks", ErrCheckpoint, seq)
			}
			// A head before the replay's first record (an export's
			// window, aged-out records) cannot be compared.
		}
		if err != nil {
			v.problem(r.Seq, err)
			return
		}
		v.rep.Checkpoints++
		v.rep.Anchored = seq
		v.rep.Signer = e.SignerKey
	case KindAdmission:
		if len(e.Evidence) > 0 {
			id := attest.BundleID(e.Evidence)
			if id != e.EvidenceID {
				v.problem(r.Seq, fmt.Errorf("%w: evidence is not bundle %.16s", ErrMalformed, e.EvidenceID))
				return
			}
			v.bundles[id] = e.Evidence
		}
	case KindReceipt:
		if !v.opts.SkipReceipts {
			v.receipts = append(v.receipts, pendingReceipt{seq: r.Seq, e: e})
		}
	}
}

// bundle returns the verified bundle for id.
func (v *verifier) bundle(ctx context.Context, id string) (*attest.Verified, error) {
	if vd, ok := v.checked[id]; ok {
		return vd, nil
	}
	if err, ok := v.bad[id]; ok {
		return nil, err
	}
	raw, ok := v.bundles[id]
	if !ok && v.opts.Evidence != nil {
		b, err := v.opts.Evidence(ctx, id)
		if err == nil {
			raw, ok = b, true
		}
	}
	if !ok {
		err := fmt.Errorf("evidence %.16s is not in the log", id)
		v.bad[id] = err
		return nil, err
	}
	opts := v.opts.Bundles
	if b, err := attest.DecodeBundle(raw); err == nil {
		at := b.Created.Add(time.Second)
		opts.Now = func() time.Time { return at }
	}
	vd, err := attest.VerifyBundleFull(ctx, raw, opts)
	if err == nil && vd.ID != id {
		err = fmt.Errorf("bundle id %.16s, not %.16s", vd.ID, id)
	}
	if err != nil {
		v.bad[id] = err
		return nil, err
	}
	v.checked[id] = vd
	return vd, nil
}

// checkReceipt verifies a receipt record's signature against its evidence
// and that the record's summary says what the receipt says.
func (v *verifier) checkReceipt(ctx context.Context, seq uint64, e *Entry) {
	sr, err := attest.ParseReceipt(e.Receipt)
	if err != nil {
		v.problem(seq, fmt.Errorf("%w: %w", ErrReceipt, err))
		return
	}
	r := &sr.Receipt
	u := Usage{PromptTokens: r.Usage.PromptTokens, CompletionTokens: r.Usage.CompletionTokens, TotalTokens: r.Usage.TotalTokens}
	switch {
	case r.RequestID != e.RequestID, r.EvidenceID != e.EvidenceID, r.Model != e.Model, e.Usage == nil, *e.Usage != u:
		v.problem(seq, fmt.Errorf("%w: the record's summary differs from the signed receipt", ErrReceipt))
		return
	}
	vd, err := v.bundle(ctx, r.EvidenceID)
	if err != nil {
		v.problem(seq, fmt.Errorf("%w: %w", ErrReceipt, err))
		return
	}
	input := r.AppendSigningInput(nil)
	if len(sr.Signature) != ed25519.SignatureSize || !ed25519.Verify(ed25519.PublicKey(vd.Bundle.SigningPub), input, sr.Signature) {
		v.problem(seq, fmt.Errorf("%w: bad signature (request %s)", ErrReceipt, e.RequestID))
		return
	}
	v.rep.Receipts++
	if e.Time.Before(v.opts.Since) {
		return
	}
	v.rep.Served = append(v.rep.Served, Served{Seq: seq, Time: e.Time, RequestID: r.RequestID, Tenant: e.Tenant,
		Model: r.Model, Worker: vd.Bundle.Worker.ID, Provider: vd.Bundle.Worker.Provider, Usage: u})
}

func (v *verifier) finish() *Report {
	return &v.rep
}

func (v *verifier) finishReceipts(ctx context.Context) *Report {
	for _, p := range v.receipts {
		v.checkReceipt(ctx, p.seq, p.e)
	}
	v.receipts = nil
	if v.rep.Signer == "" && v.rep.Records > 0 && len(v.rep.Problems) == 0 {
		v.problem(v.rep.HeadSeq, fmt.Errorf("%w: no valid checkpoint in the log", ErrCheckpoint))
	}
	sort.SliceStable(v.rep.Problems, func(i, j int) bool { return v.rep.Problems[i].Seq < v.rep.Problems[j].Seq })
	return &v.rep
}

// fromStream replays records from stream sequence from (0: the first)
// to the stream's last sequence as of now (or until, when > 0).
func (v *verifier) fromStream(ctx context.Context, st jetstream.Stream, from, until uint64) error {
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("reading audit stream: %w", err)
	}
	last := info.State.LastSeq
	if until > 0 && until < last {
		last = until
	}
	if info.State.Msgs == 0 || from > last {
		return nil
	}
	if from == 0 {
		from = info.State.FirstSeq
	}
	return readStream(ctx, st, from, last, func(seq uint64, data []byte) error {
		r, perr := ParseRecord(data)
		if perr != nil && r.Seq == 0 {
			// Undecodable: name it by its stream position.
			v.problem(seq, perr)
			return nil
		}
		v.add(r, perr)
		return nil
	})
}

// VerifyStream replays the whole audit stream: the chain, every
// checkpoint, and every receipt's signature against its evidence.
func VerifyStream(ctx context.Context, js jetstream.JetStream, opts VerifyOptions) (*Report, error) {
	st, err := js.Stream(ctx, StreamName)
	if err != nil {
		return nil, fmt.Errorf("opening audit stream: %w", err)
	}
	v := newVerifier(opts)
	if err := v.fromStream(ctx, st, 0, 0); err != nil {
		return nil, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading audit stream: %w", err)
	}
	if v.rep.FirstSeq > 1 && info.Config.MaxAge == 0 && info.Config.MaxBytes <= 0 && info.Config.MaxMsgs <= 0 {
		// Nothing ages out of this stream: a chain that does not start at
		// 1 lost its first records.
		v.problem(1, fmt.Errorf("%w: records 1 to %d are gone", ErrMissing, v.rep.FirstSeq-1))
	}
	return v.finishReceipts(ctx), nil
}

// exportHeader is the first line of an export.
type exportHeader struct {
	Format   int       `json:"teegate_audit_export"`
	Tenant   string    `json:"tenant"`
	Since    time.Time `json:"since,omitzero"`
	Exported time.Time `json:"exported"`
	// AuditKey is the checkpoint signer the exporter saw (hex); a tenant
	// should pin the key it trusts instead.
	AuditKey string `json:"audit_key,omitempty"`
}

type evidenceLine struct {
	Evidence []byte `json:"evidence"`
}

// Export writes a tenant's view of the log as JSON Lines: a header, then
// every record from the first at or after since to the head — the
// tenant's own records and fleet records (admissions, evictions,
// checkpoints) in full, other tenants' records as links (sequence, hashes
// and the content digest only) — then the evidence bundles the tenant's
// receipts name. VerifyFile checks it on the tenant's own machine.
func Export(ctx context.Context, js jetstream.JetStream, w io.Writer, tenant string, since time.Time,
	evidence func(ctx context.Context, id string) ([]byte, error)) error {
	if tenant == "" {
		return errors.New("exporting audit log: tenant is required")
	}
	st, err := js.Stream(ctx, StreamName)
	if err != nil {
		return fmt.Errorf("opening audit stream: %w", err)
	}
	var lines [][]byte
	bundles := map[string][]byte{}
	need := map[string]bool{}
	carried := map[string]bool{}
	var signer string
	started := false
	err = eachRecord(ctx, st, func(r Record) error {
		e, err := r.Entry()
		if err != nil {
			return nil // VerifyFile names it: it is a link in the export
		}
		if e.Kind == KindAdmission && len(e.Evidence) > 0 {
			bundles[e.EvidenceID] = e.Evidence
		}
		if !started {
			if e.Time.Before(since) {
				return nil
			}
			started = true
		}
		switch {
		case e.Tenant == "":
			if e.Kind == KindCheckpoint {
				signer = e.SignerKey
			}
			if e.Kind == KindAdmission && len(e.Evidence) > 0 {
				carried[e.EvidenceID] = true
			}
			lines = append(lines, r.AppendJSON(nil))
		case e.Tenant == tenant:
			if e.Kind == KindReceipt && e.EvidenceID != "" {
				need[e.EvidenceID] = true
			}
			lines = append(lines, r.AppendJSON(nil))
		default:
			l := r.Link()
			lines = append(lines, l.AppendJSON(nil))
		}
		return nil
	})
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	hdr, _ := json.Marshal(exportHeader{Format: 1, Tenant: tenant, Since: since.UTC(), Exported: time.Now().UTC(), AuditKey: signer})
	bw.Write(hdr)
	bw.WriteByte('\n')
	for _, l := range lines {
		bw.Write(l)
		bw.WriteByte('\n')
	}
	ids := make([]string, 0, len(need))
	for id := range need {
		if carried[id] {
			continue
		}
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		raw, ok := bundles[id]
		if !ok && evidence != nil {
			if b, err := evidence(ctx, id); err == nil {
				raw, ok = b, true
			}
		}
		if !ok {
			continue // VerifyFile names the receipts left unproven
		}
		b, _ := json.Marshal(evidenceLine{Evidence: raw})
		bw.Write(b)
		bw.WriteByte('\n')
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing audit export: %w", err)
	}
	return nil
}

// eachRecord calls f for every well-formed record of the stream in order
// (Export does not judge the chain: VerifyFile does).
func eachRecord(ctx context.Context, st jetstream.Stream, f func(Record) error) error {
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("reading audit stream: %w", err)
	}
	if info.State.Msgs == 0 {
		return nil
	}
	return readStream(ctx, st, info.State.FirstSeq, info.State.LastSeq, func(seq uint64, data []byte) error {
		if r, err := ParseRecord(data); err == nil {
			return f(r)
		}
		return nil
	})
}

// readStream hands f the data of every message from stream sequence from
// to last, in order.
func readStream(ctx context.Context, st jetstream.Stream, from, last uint64, f func(seq uint64, data []byte) error) error {
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from,
	})
	if err != nil {
		return fmt.Errorf("reading audit stream: %w", err)
	}
	for {
		batch, err := cons.FetchNoWait(1000)
		if err != nil {
			return fmt.Errorf("reading audit stream: %w", err)
		}
		n, done := 0, false
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("reading audit stream: %w", err)
			}
			if md.Sequence.Stream > last {
				done = true
				continue
			}
			if err := f(md.Sequence.Stream, m.Data()); err != nil {
				return err
			}
			if md.Sequence.Stream >= last || md.NumPending == 0 {
				done = true
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("reading audit stream: %w", err)
		}
		if done || n == 0 {
			return nil
		}
	}
}

// MaxLine bounds one line of an export (an evidence bundle is the largest).
const MaxLine = attest.MaxBundleSize * 2

// VerifyFile checks an export offline: the chain through the links, every
// checkpoint (against opts.AuditKey when pinned), every receipt against the
// bundles the file carries, and that the file holds no other tenant's
// records.
func VerifyFile(ctx context.Context, r io.Reader, opts VerifyOptions) (*Report, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxLine)
	v := newVerifier(opts)
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		switch {
		case line == 1:
			var h exportHeader
			if err := json.Unmarshal(b, &h); err != nil || h.Format != 1 || h.Tenant == "" {
				return nil, fmt.Errorf("reading audit export: line 1 is not an export header: %w", ErrMalformed)
			}
			v.rep.Tenant = h.Tenant
		case bytes.HasPrefix(b, []byte(`{"evidence":`)):
			var el evidenceLine
			if err := json.Unmarshal(b, &el); err != nil {
				return nil, fmt.Errorf("reading audit export line %d: %w: %w", line, ErrMalformed, err)
			}
			v.bundles[attest.BundleID(el.Evidence)] = el.Evidence
		default:
			rec, err := ParseRecord(b)
			if err != nil && rec.Seq == 0 {
				return nil, fmt.Errorf("reading audit export line %d: %w", line, err)
			}
			v.add(rec, err)
			if rec.Content != nil && err == nil {
				if e, err := rec.Entry(); err == nil && e.Tenant != "" && e.Tenant != v.rep.Tenant {
					v.problem(rec.Seq, fmt.Errorf("%w: a record of another tenant in %s's export", ErrMalformed, v.rep.Tenant))
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading audit export: %w", err)
	}
	if line == 0 {
		return nil, fmt.Errorf("reading audit export: empty: %w", ErrMalformed)
	}
	return v.finishReceipts(ctx), nil
}

// Sum is one row of the ledger.
type Sum struct {
	Key      string `json:"key"`
	Requests int64  `json:"requests"`
	Usage
}

// Ledger sums served receipts by "provider", "worker", "tenant" or "model".
func Ledger(served []Served, by string) ([]Sum, error) {
	key := map[string]func(Served) string{
		"provider": func(s Served) string { return s.Provider },
		"worker":   func(s Served) string { return s.Worker },
		"tenant":   func(s Served) string { return s.Tenant },
		"model":    func(s Served) string { return s.Model },
	}[by]
	if key == nil {
		return nil, fmt.Errorf("summing usage: --by must be provider, worker, tenant or model, not %q", by)
	}
	m := map[string]*Sum{}
	for _, s := range served {
		k := key(s)
		row, ok := m[k]
		if !ok {
			row = &Sum{Key: k}
			m[k] = row
		}
		row.Requests++
		row.PromptTokens += s.Usage.PromptTokens
		row.CompletionTokens += s.Usage.CompletionTokens
		row.TotalTokens += s.Usage.TotalTokens
	}
	out := make([]Sum, 0, len(m))
	for _, r := range m {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// KeyString is the hex of an audit public key.
func KeyString(k ed25519.PrivateKey) string {
	return hex.EncodeToString(k.Public().(ed25519.PublicKey))
}
