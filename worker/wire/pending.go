package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The cold-start queue (DESIGN10, issue 10 item 3). A request for a known
// model that no ready worker can take waits at its gateway; meanwhile a
// ticket for it sits in the JetStream work-queue stream PendingStream under
// PendingSubject(model). A ticket names the request, never its content:
// the body stays in the gateway's memory. The gateway deletes its own
// ticket (by stream sequence) when the request is dispatched or given up.
// Nobody consumes the tickets: the per-model durable consumer
// PendingConsumer(model) exists so that its num_pending is the scale
// signal KEDA's nats-jetstream scaler reads (deploy/keda).
const (
	// PendingStream is the stream of tickets.
	PendingStream = "TEEGATE_PENDING"
	// PendingWildcard is the stream's subject space.
	PendingWildcard = SubjectPrefix + ".pending.>"
	// DefaultQueueLength is how many tickets one model may have waiting
	// (the stream's MaxMsgsPerSubject, with discard-new per subject: the
	// next publish is refused and its request answered 503).
	DefaultQueueLength = 1000
	// DefaultColdStartTimeout is how long a request waits for a worker
	// (the stream's MaxAge: a ticket older than that is gone either way).
	DefaultColdStartTimeout = 30 * time.Second
	// DefaultModelMemory is how long a model that no live worker serves
	// stays known (ModelsBucket), so requests for it wait instead of 404.
	DefaultModelMemory = 24 * time.Hour
	// MaxTicketSize bounds one ticket (the stream's MaxMsgSize).
	MaxTicketSize = 1024
	// TicketSlack is how much longer than the cold-start timeout the
	// stream keeps a ticket (see PendingConfig).
	TicketSlack = 10 * time.Second
	// PendingMaxModels bounds the models with a consumer (the stream's
	// MaxConsumers) and, times the queue length, the stream's messages.
	PendingMaxModels = 1024
)

// PendingSubject is where tickets for model are published.
func PendingSubject(model string) string {
	return SubjectPrefix + ".pending." + Token(model)
}

// PendingConsumer is the durable consumer name whose num_pending counts
// the requests waiting for model.
func PendingConsumer(model string) string {
	return "pending-" + Token(model)
}

// Ticket is a waiting request's entry in PendingStream. It carries no
// request or response content.
type Ticket struct {
	RequestID string `json:"request_id"`
	Model     string `json:"model"`
	Gateway   string `json:"gateway"`
	// Deadline is when the request gives up waiting (unix milliseconds).
	Deadline int64 `json:"deadline"`
}

// ErrBadTicket marks a ticket that does not decode or is incomplete.
var ErrBadTicket = errors.New("bad pending ticket")

// Encode returns the ticket's JSON.
func (t Ticket) Encode() ([]byte, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(t)
	if err != nil {
		return nil, fmt.Errorf("encoding ticket: %w", err)
	}
	if len(b) > MaxTicketSize {
		return nil, fmt.Errorf("%w: %d bytes (at most %d)", ErrBadTicket, len(b), MaxTicketSize)
	}
	return b, nil
}

// DecodeTicket parses a ticket read from PendingStream (operators and
// tests; the gateway only writes and deletes them).
func DecodeTicket(b []byte) (Ticket, error) {
	var t Ticket
	if len(b) > MaxTicketSize {
		return t, fmt.Errorf("%w: %d bytes", ErrBadTicket, len(b))
	}
	if err := json.Unmarshal(b, &t); err != nil {
		return Ticket{}, fmt.Errorf("%w: %w", ErrBadTicket, err)
	}
	if err := t.check(); err != nil {
		return Ticket{}, err
	}
	return t, nil
}

func (t Ticket) check() error {
	if t.RequestID == "" || t.Model == "" || t.Gateway == "" || t.Deadline <= 0 {
		return fmt.Errorf("%w: request_id, model, gateway and deadline are required", ErrBadTicket)
	}
	return nil
}

// ModelsBucket remembers the models workers served (key: Token(model id),
// value: ModelInfo JSON, no content), so a model whose workers all left
// stays known for the model memory (the bucket's TTL) and its requests
// wait for a worker instead of answering 404.
const ModelsBucket = "teegate_models"

// ModelKey is model's key in ModelsBucket: its Token with '%' written as
// '=' (key-value keys allow [-/_=.A-Za-z0-9]; Token never writes '=',
// so distinct ids keep distinct keys).
func ModelKey(model string) string {
	return strings.ReplaceAll(Token(model), "%", "=")
}

// ModelsMaxBytes caps the models bucket; ModelsMaxValue one entry.
const (
	ModelsMaxBytes = 4 << 20
	ModelsMaxValue = 1024
)

// PendingConfig is the ticket stream's configuration for a queue of
// queueLength tickets per model, each kept at most timeout.
func PendingConfig(queueLength int, timeout time.Duration) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        PendingStream,
		Description: "teegate cold-start tickets (no content): requests waiting for a worker, per model",
		Subjects:    []string{PendingWildcard},
		Retention:   jetstream.WorkQueuePolicy,
		// A full queue refuses the next ticket (its request gets 503) rather
		// than dropping a waiting one.
		Discard:              jetstream.DiscardNew,
		DiscardNewPerSubject: true,
		MaxMsgsPerSubject:    int64(queueLength),
		MaxMsgs:              int64(queueLength) * PendingMaxModels,
		MaxBytes:             int64(queueLength) * PendingMaxModels * MaxTicketSize,
		// The gateway deletes its ticket when it gives up, at timeout; the
		// age limit only clears tickets of a gateway that died. Were they the
		// same, the two removals could race, and the server's num_pending
		// (the scale signal) would count one removal twice.
		MaxAge:       timeout + TicketSlack,
		MaxMsgSize:   MaxTicketSize,
		MaxConsumers: PendingMaxModels,
		Storage:      jetstream.FileStorage,
	}
}

// PendingConsumerConfig is model's durable consumer: nobody fetches from
// it; its num_pending is the number of requests waiting for model.
func PendingConsumerConfig(model string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       PendingConsumer(model),
		Description:   "teegate requests waiting for a worker (KEDA scale signal; never fetched)",
		FilterSubject: PendingSubject(model),
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// ModelsConfig is the models bucket's configuration: an entry lasts memory
// after the last time a gateway saw a worker serve the model.
func ModelsConfig(memory time.Duration) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket: ModelsBucket, Description: "teegate models served recently (no content)", History: 1, TTL: memory,
		MaxBytes: ModelsMaxBytes, MaxValueSize: ModelsMaxValue,
	}
}
