package gateway

// The gateway's side of the bus as a trust boundary (docs/architecture.md,
// "Who may do what on the bus"). Workers are not trusted: what they send is
// checked before it reaches a client or a bucket, and the gateway publishes
// to a subject a worker chose only when it lies in that worker's own inbox
// space.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/worker/wire"
)

// errBadReply: a worker reply the gateway will not relay (the decoders of
// package wire bound and check every message from a worker).
var errBadReply = wire.ErrBadReply

func errNoReceipt() *APIError {
	return wire.Errorf(wire.CodeNoReceipt, "The worker answered without a valid receipt, so the answer cannot be proven; it was not relayed.")
}

// randomHex is n random bytes in hex: one subject token.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newInbox is a reply subject for one request: under this gateway's
// random prefix, with 128 random bits of its own, so no worker can guess
// another request's inbox from the ones it sees (and none may publish to
// one it was not sent anyway).
func (g *Gateway) newInbox() string { return g.inboxPrefix + "." + randomHex(16) }

// request sends msg with a fresh inbox and waits for the one reply. It
// maps the server's no-responders status to nats.ErrNoResponders.
func (g *Gateway) request(ctx context.Context, msg *nats.Msg) (*nats.Msg, error) {
	inbox := g.newInbox()
	// One reply is expected: a channel of its own, not SubscribeSync's,
	// which allocates (and zeroes) room for 64k messages per request.
	ch := make(chan *nats.Msg, 1)
	sub, err := g.cfg.Conn.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, fmt.Errorf("subscribing for a reply: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := sub.AutoUnsubscribe(1); err != nil {
		return nil, fmt.Errorf("subscribing for a reply: %w", err)
	}
	msg.Reply = inbox
	if err := g.cfg.Conn.PublishMsg(msg); err != nil {
		return nil, fmt.Errorf("publishing a request: %w", err)
	}
	var m *nats.Msg
	select {
	case m = <-ch:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if wire.IsNoResponders(m) {
		return nil, nats.ErrNoResponders
	}
	return m, nil
}

// checkHeaders bounds a worker message's headers (wire.CheckHeaders).
func checkHeaders(h nats.Header) error { return wire.CheckHeaders(h) }

// checkReceipt: a success must carry a receipt for this request, from the
// evidence it names, and inline evidence (if any) must be a bundle the
// receipt names.
func checkReceipt(h nats.Header, reqID string) (*attest.SignedReceipt, error) {
	v := h.Get(wire.HdrReceipt)
	if v == "" {
		return nil, fmt.Errorf("%w: no receipt", errBadReply)
	}
	sr, err := attest.ParseReceiptHeader(v)
	if err != nil {
		return nil, fmt.Errorf("%w: receipt: %w", errBadReply, err)
	}
	if err := receiptNames(sr, reqID, false); err != nil {
		return nil, err
	}
	if id := h.Get(wire.HdrEvidenceID); id != "" && id != sr.Receipt.EvidenceID {
		return nil, fmt.Errorf("%w: evidence id header is not the receipt's", errBadReply)
	}
	if ev := h.Get(wire.HdrEvidence); ev != "" {
		raw, err := attest.DecodeBase64URL(ev)
		if err != nil {
			return nil, fmt.Errorf("%w: evidence header: %w", errBadReply, err)
		}
		id := attest.BundleID(raw)
		if id != sr.Receipt.EvidenceID && (sr.Batch == nil || id != sr.Batch.EvidenceID) {
			return nil, fmt.Errorf("%w: inline evidence is not the receipt's", errBadReply)
		}
	}
	return sr, nil
}

// receiptNames checks that a receipt is for this request and this kind of
// response.
func receiptNames(sr *attest.SignedReceipt, reqID string, stream bool) error {
	if sr.Receipt.RequestID != reqID {
		return fmt.Errorf("%w: receipt names another request", errBadReply)
	}
	if sr.Receipt.Stream != stream {
		return fmt.Errorf("%w: receipt of the wrong kind", errBadReply)
	}
	return nil
}

// workerKeys maps evidence ids to the nkey of their signing key, read from
// the evidence bucket (which only the admission service writes, and whose
// entries are checked against their ids): how the gateway knows the inbox
// space of the worker a stream chunk names.
type workerKeys struct {
	kv jetstream.KeyValue
	mu sync.Mutex
	m  map[string]string
}

func (k *workerKeys) nkey(ctx context.Context, evidenceID string) (string, error) {
	k.mu.Lock()
	nk, ok := k.m[evidenceID]
	k.mu.Unlock()
	if ok {
		return nk, nil
	}
	if !hexID(evidenceID) {
		return "", fmt.Errorf("%w: no evidence id", errBadReply)
	}
	e, err := k.kv.Get(ctx, evidenceID)
	if err != nil {
		return "", fmt.Errorf("reading evidence: %w", err)
	}
	if attest.BundleID(e.Value()) != evidenceID {
		return "", fmt.Errorf("%w: stored evidence does not hash to its id", errBadReply)
	}
	b, err := attest.DecodeBundle(e.Value())
	if err != nil {
		return "", fmt.Errorf("decoding evidence: %w", err)
	}
	if nk, err = wire.NKeyOfBundle(b); err != nil {
		return "", err
	}
	k.mu.Lock()
	if len(k.m) >= 4096 {
		clear(k.m)
	}
	k.m[evidenceID] = nk
	k.mu.Unlock()
	return nk, nil
}

// ackSubject decides where the gateway may send a stream's acks and
// cancel: the subject the worker put on its first chunk, if it lies in the
// inbox space of the key its evidence binds. On a bus without attestation
// (Unattested) there is no key, and any literal inbox subject will do; a
// subject of the server's own ($JS, $KV, $SYS) never does.
func (g *Gateway) ackSubject(ctx context.Context, m *nats.Msg) (string, error) {
	subj := m.Reply
	if g.cfg.Unattested {
		if (strings.HasPrefix(subj, "_INBOX.") || strings.HasPrefix(subj, wire.WorkerInboxRoot+".")) &&
			!strings.ContainsAny(subj, "*> \t") && len(subj) <= 256 {
			return subj, nil
		}
		return "", fmt.Errorf("%w: ack subject outside any inbox", errBadReply)
	}
	if g.keys == nil {
		return "", fmt.Errorf("%w: no evidence bucket to check the ack subject against", errBadReply)
	}
	nk, err := g.keys.nkey(ctx, m.Header.Get(wire.HdrEvidenceID))
	if err != nil {
		return "", err
	}
	if !wire.AckSubjectOK(subj, nk) {
		return "", fmt.Errorf("%w: ack subject outside the worker's own inbox space", errBadReply)
	}
	return subj, nil
}
