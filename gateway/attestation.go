package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/worker/wire"
)

// ReceiptsBucket keeps every receipt the gateway relayed, by request id, so
// clients and auditors can fetch it later. Receipts hold hashes, ids and
// token counts: never content.
const ReceiptsBucket = "teegate_receipts"

// ReceiptsMaxBytes caps the receipts bucket; the oldest receipts go first
// when it is full.
const ReceiptsMaxBytes = 1 << 30

// EnsureReceiptsBucket creates or opens the receipts bucket.
func EnsureReceiptsBucket(ctx context.Context, js jetstream.JetStream, ttl time.Duration) (jetstream.KeyValue, error) {
	kv, err := wire.EnsureBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket: ReceiptsBucket, Description: "teegate receipts by request id", History: 1, TTL: ttl,
		MaxBytes: ReceiptsMaxBytes, MaxValueSize: 64 << 10,
	})
	if err != nil {
		return nil, fmt.Errorf("opening receipts bucket: %w", err)
	}
	return kv, nil
}

func errEvidenceNotFound() *APIError {
	return &APIError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "evidence_not_found",
		Message: "No evidence bundle with this id."}
}

func errReceiptNotFound() *APIError {
	return &APIError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "receipt_not_found",
		Message: "No receipt for this request id."}
}

func errAttestationOff() *APIError {
	return &APIError{Status: http.StatusNotImplemented, Type: "server_error", Code: "attestation_unavailable",
		Message: "This gateway does not serve attestation material."}
}

func hexID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func (g *Gateway) getEvidence(c *fiber.Ctx) error {
	if g.cfg.Evidence == nil {
		return send(c, errAttestationOff())
	}
	id := c.Params("id")
	if !hexID(id) {
		return send(c, errEvidenceNotFound())
	}
	e, err := g.cfg.Evidence.Get(c.UserContext(), id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return send(c, errEvidenceNotFound())
	}
	if err != nil {
		g.log.Error("reading evidence failed", "err", err)
		return send(c, errInternal())
	}
	if attest.BundleID(e.Value()) != id {
		// The id is the hash of the bytes: anything else is not this
		// bundle, whoever wrote it.
		g.log.Error("stored evidence does not hash to its id", "evidence", id[:16])
		return send(c, errEvidenceNotFound())
	}
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	// Checked against its id above, so the bytes under this URL never
	// change.
	c.Set(fiber.HeaderCacheControl, "public, max-age=31536000, immutable")
	return c.Send(e.Value())
}

func (g *Gateway) getReceipt(c *fiber.Ctx) error {
	if g.cfg.Receipts == nil {
		return send(c, errAttestationOff())
	}
	id := c.Params("id")
	if len(id) == 0 || len(id) > 128 || wire.Token(id) != id {
		return send(c, errReceiptNotFound())
	}
	e, err := g.cfg.Receipts.Get(c.UserContext(), id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return send(c, errReceiptNotFound())
	}
	if err != nil {
		g.log.Error("reading receipt failed", "err", err)
		return send(c, errInternal())
	}
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Send(e.Value())
}

// freshEvidence asks a worker serving the model for evidence bound to the
// client's nonce.
func (g *Gateway) freshEvidence(c *fiber.Ctx) error {
	model, nonce := c.Query("model"), c.Query("nonce")
	if model == "" {
		return send(c, errInvalid("model", "Missing required parameter: 'model'."))
	}
	if nonce == "" || len(nonce) > 256 || !validNonce(nonce) {
		return send(c, errInvalid("nonce", "The 'nonce' parameter is required: UTF-8 text of at most 256 bytes."))
	}
	if key := keyOf(c); !key.MayUse(model) {
		return send(c, errModelNotFound(model))
	}
	if _, e := g.route(model); e != nil {
		return send(c, e)
	}
	msg := wire.AttestRequest{Model: model, Nonce: nonce}.Msg()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	reply, err := g.request(ctx, msg)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return send(c, errNoCapacity())
	case err != nil:
		return send(c, errDeadline())
	}
	if rep, err := wire.ParseReply(reply); err != nil || rep.Kind != wire.KindResponse {
		return send(c, errUpstream())
	}
	if !g.cfg.Unattested {
		// The answer must at least be a bundle; the client checks that it
		// is bound to its nonce.
		if _, err := attest.DecodeBundle(reply.Data); err != nil {
			g.log.Warn("refusing fresh evidence that is not a bundle", "err", err)
			return send(c, errUpstream())
		}
	}
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	copyAttestation(c, reply.Header)
	return c.Send(reply.Data)
}

// receiptStore writes receipts to the bucket off the request path. The
// writer takes what is queued, up to receiptBatch at once, publishes it to
// the bucket's subjects without waiting between messages, then waits for
// every acknowledgement: one round trip per batch instead of per receipt.
// A full queue blocks the request that adds to it (backpressure): receipts
// are never dropped; one the server refuses is logged with its request id.
type receiptStore struct {
	kv        jetstream.KeyValue
	js        jetstream.JetStream
	prefix    string // the bucket's subject prefix, "$KV.<bucket>."
	log       interface{ Error(string, ...any) }
	ch        chan receiptEntry
	wg        sync.WaitGroup
	metrics   *metrics
	known     func(model string) bool
	closeOnce sync.Once
}

type receiptEntry struct {
	id   string
	json []byte
}

// receiptBatch bounds the receipts published before their acks are
// awaited (and the client's pending acks).
const receiptBatch = 256

func newReceiptStore(nc *nats.Conn, kv jetstream.KeyValue, log interface{ Error(string, ...any) }, m *metrics, known func(string) bool) (*receiptStore, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(receiptBatch))
	if err != nil {
		return nil, fmt.Errorf("receipts bucket: %w", err)
	}
	s := &receiptStore{kv: kv, js: js, prefix: "$KV." + kv.Bucket() + ".", log: log, ch: make(chan receiptEntry, 4096),
		metrics: m, known: known}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		batch := make([]receiptEntry, 0, receiptBatch)
		for e := range s.ch {
			batch = append(batch[:0], e)
		more:
			for len(batch) < receiptBatch {
				select {
				case e, ok := <-s.ch:
					if !ok {
						break more
					}
					batch = append(batch, e)
				default:
					break more
				}
			}
			s.write(batch)
		}
	}()
	return s, nil
}

// Receipts the bucket could not take because it was away for a moment (a
// cluster electing the bucket's leader after losing a node, the gateway
// reconnecting) are written again, receiptRetries times at most, waiting
// receiptRetryWait doubling in between (about 12 s in all): a put of the
// same receipt under its request id is idempotent.
const (
	receiptRetries   = 6
	receiptRetryWait = 200 * time.Millisecond
)

// receiptRetryHook, when set (tests), hears of each retry before its wait.
var receiptRetryHook func()

// write publishes a batch and waits for its acks, again for the receipts
// that failed for a reason that passes.
func (s *receiptStore) write(batch []receiptEntry) {
	for attempt := 0; ; attempt++ {
		batch = s.writeOnce(batch, attempt < receiptRetries)
		if len(batch) == 0 {
			return
		}
		if receiptRetryHook != nil {
			receiptRetryHook()
		}
		time.Sleep(receiptRetryWait << attempt)
	}
}

// transient: a store error another try may not meet.
func transient(err error) bool {
	return errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, jetstream.ErrAsyncPublishTimeout) || errors.Is(err, nats.ErrConnectionReconnecting) ||
		errors.Is(err, nats.ErrDisconnected)
}

// writeOnce publishes a batch and waits for its acks; it returns the
// receipts to write again (with retry, those that failed transiently) and
// logs the others that failed.
func (s *receiptStore) writeOnce(batch []receiptEntry, retry bool) []receiptEntry {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var again []receiptEntry
	failed := func(e receiptEntry, err error) {
		if retry && transient(err) {
			again = append(again, e)
			return
		}
		s.log.Error("storing receipt failed", "request_id", e.id, "err", err)
	}
	acks := make([]jetstream.PubAckFuture, len(batch))
	for i, e := range batch {
		f, err := s.js.PublishMsgAsync(&nats.Msg{Subject: s.prefix + e.id, Data: e.json})
		if err != nil {
			failed(e, err)
			continue
		}
		acks[i] = f
	}
	for i, f := range acks {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
		case err := <-f.Err():
			failed(batch[i], err)
			continue
		case <-ctx.Done():
			failed(batch[i], ctx.Err())
			continue
		}
		s.usage(batch[i].json)
	}
	return again
}

// usage counts a stored receipt's tokens: they come from the receipt
// (signed by the worker), read here rather than on the request path.
func (s *receiptStore) usage(b []byte) {
	if s.metrics == nil {
		return
	}
	var sr attest.SignedReceipt
	if err := sr.UnmarshalJSON(b); err == nil {
		model := sr.Receipt.Model
		if !s.known(model) {
			model = otherLabel
		}
		s.metrics.usage(model, sr.Receipt.Usage)
	}
}

func (s *receiptStore) put(id string, json []byte) {
	s.ch <- receiptEntry{id: id, json: json}
}

// close stops the writer once it has written what is queued; a second
// call (a second Shutdown) waits the same way.
func (s *receiptStore) close() {
	s.closeOnce.Do(func() { close(s.ch) })
	s.wg.Wait()
}

// storeHeaderReceipt keeps the receipt of a non-stream reply.
func (g *Gateway) storeHeaderReceipt(reqID string, h nats.Header) {
	if g.receipts == nil {
		return
	}
	v := h.Get(wire.HdrReceipt)
	if v == "" {
		return
	}
	sr, err := attest.ParseReceiptHeader(v)
	if err != nil || sr.Receipt.RequestID != reqID {
		return
	}
	g.receipts.put(reqID, sr.AppendJSON(nil))
}

// storeReceipt keeps a checked receipt, given as its JSON (the audit
// record carries the same bytes).
func (g *Gateway) storeReceipt(reqID string, receiptJSON []byte) {
	if g.receipts == nil {
		return
	}
	g.receipts.put(reqID, receiptJSON)
}
