package gateway

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Buckets of the limits every replica shares. Counters live in NATS, never
// in one process: a key's requests and tokens per minute and its spent
// budget are the same numbers whichever replica serves it.
const (
	// LimitsBucket holds per-minute counters "<key id>.r.<minute>" and
	// "<key id>.t.<minute>"; they age out after two minutes.
	LimitsBucket = "teegate_limits"
	// BudgetsBucket holds each key's spent tokens "<key id>", kept until
	// the key's budget is reset.
	BudgetsBucket = "teegate_budgets"
)

// Limits enforces requests and tokens per minute and token budgets with
// compare-and-set counters in JetStream key-value buckets.
//
// Requests per minute are exact across replicas: a request is admitted only
// by the replica whose CAS moved the counter below the limit. Tokens cannot
// be known before the answer, so tokens per minute and budgets admit a
// request while the spent count is below the limit and charge the usage the
// answer's receipt signs when it completes: concurrent requests overspend a
// budget by at most what the requests already in flight when it ran out
// use (docs/architecture.md, Limits).
type Limits struct {
	win     jetstream.KeyValue
	budgets jetstream.KeyValue
	now     func() time.Time
}

// OpenLimits creates or opens the limit buckets.
func OpenLimits(ctx context.Context, js jetstream.JetStream, replicas int, now func() time.Time) (*Limits, error) {
	if replicas <= 0 {
		replicas = 1
	}
	if now == nil {
		now = time.Now
	}
	win, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: LimitsBucket,
		Description: "teegate per-minute request and token counters per API key", History: 1, TTL: 2 * time.Minute, Replicas: replicas})
	if err != nil {
		return nil, fmt.Errorf("opening limits bucket: %w", err)
	}
	bud, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: BudgetsBucket,
		Description: "teegate tokens spent per API key", History: 1, Replicas: replicas})
	if err != nil {
		return nil, fmt.Errorf("opening budgets bucket: %w", err)
	}
	return &Limits{win: win, budgets: bud, now: now}, nil
}

// Window is one rate-limit dimension's state, as the x-ratelimit headers
// say it.
type Window struct {
	Limit     int64
	Remaining int64
	Reset     time.Duration
}

// Verdict is what Admit decided.
type Verdict struct {
	Requests, Tokens *Window
	// Refused, when set, is the error the client gets.
	Refused *APIError
	// Reason names the refusal for the audit log.
	Reason string
}

func minuteOf(t time.Time) (int64, time.Duration) {
	m := t.Unix() / 60
	return m, time.Unix((m+1)*60, 0).Sub(t)
}

// Admit decides whether key may send one more request now, counting it
// when it may.
func (l *Limits) Admit(ctx context.Context, key APIKey, rpm int64) (Verdict, error) {
	var v Verdict
	now := l.now()
	minute, reset := minuteOf(now)
	if key.BudgetTokens > 0 {
		spent, _, err := l.read(ctx, l.budgets, key.ID)
		if err != nil {
			return v, err
		}
		if spent >= key.BudgetTokens {
			v.Refused, v.Reason = errBudget(key.BudgetTokens, spent), "budget exhausted"
			return v, nil
		}
	}
	if key.TPM > 0 {
		used, _, err := l.read(ctx, l.win, key.ID+".t."+strconv.FormatInt(minute, 10))
		if err != nil {
			return v, err
		}
		v.Tokens = &Window{Limit: key.TPM, Remaining: max(0, key.TPM-used), Reset: reset}
		if used >= key.TPM {
			v.Refused, v.Reason = errRateLimited(retryAfter(reset), "tokens"), "tokens per minute"
			return v, nil
		}
	}
	if rpm > 0 {
		n, ok, err := l.incrementBelow(ctx, l.win, key.ID+".r."+strconv.FormatInt(minute, 10), rpm)
		if err != nil {
			return v, err
		}
		v.Requests = &Window{Limit: rpm, Remaining: max(0, rpm-n), Reset: reset}
		if !ok {
			v.Refused, v.Reason = errRateLimited(retryAfter(reset), "requests"), "requests per minute"
			return v, nil
		}
	}
	return v, nil
}

// Charge adds the tokens an answer used to the key's minute and budget.
func (l *Limits) Charge(ctx context.Context, key APIKey, tokens int64) error {
	if tokens <= 0 {
		return nil
	}
	if key.TPM > 0 {
		minute, _ := minuteOf(l.now())
		if _, err := l.add(ctx, l.win, key.ID+".t."+strconv.FormatInt(minute, 10), tokens); err != nil {
			return err
		}
	}
	if key.BudgetTokens > 0 {
		if _, err := l.add(ctx, l.budgets, key.ID, tokens); err != nil {
			return err
		}
	}
	return nil
}

// Spent returns the tokens charged to key id's budget.
func (l *Limits) Spent(ctx context.Context, id string) (int64, error) {
	n, _, err := l.read(ctx, l.budgets, id)
	return n, err
}

func (l *Limits) read(ctx context.Context, kv jetstream.KeyValue, k string) (int64, uint64, error) {
	e, err := kv.Get(ctx, k)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("reading limit counter: %w", err)
	}
	n, err := strconv.ParseInt(string(e.Value()), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("reading limit counter: %w", err)
	}
	return n, e.Revision(), nil
}

// incrementBelow adds one to the counter if it is below limit; it returns
// the count after (or as found) and whether it counted.
func (l *Limits) incrementBelow(ctx context.Context, kv jetstream.KeyValue, k string, limit int64) (int64, bool, error) {
	for range 1000 {
		n, rev, err := l.read(ctx, kv, k)
		if err != nil {
			return 0, false, err
		}
		if n >= limit {
			return n, false, nil
		}
		if ok, err := l.cas(ctx, kv, k, rev, n+1); err != nil {
			return 0, false, err
		} else if ok {
			return n + 1, true, nil
		}
	}
	return 0, false, errors.New("updating limit counter: too much contention")
}

// add adds d to the counter.
func (l *Limits) add(ctx context.Context, kv jetstream.KeyValue, k string, d int64) (int64, error) {
	for range 1000 {
		n, rev, err := l.read(ctx, kv, k)
		if err != nil {
			return 0, err
		}
		if ok, err := l.cas(ctx, kv, k, rev, n+d); err != nil {
			return 0, err
		} else if ok {
			return n + d, nil
		}
	}
	return 0, errors.New("updating limit counter: too much contention")
}

// cas writes n over revision rev (0: the key must not exist); false when
// another writer won.
func (l *Limits) cas(ctx context.Context, kv jetstream.KeyValue, k string, rev uint64, n int64) (bool, error) {
	v := []byte(strconv.FormatInt(n, 10))
	var err error
	if rev == 0 {
		_, err = kv.Create(ctx, k, v)
	} else {
		_, err = kv.Update(ctx, k, v, rev)
	}
	if err == nil {
		return true, nil
	}
	if errors.Is(err, jetstream.ErrKeyExists) || isWrongLast(err) {
		return false, nil
	}
	return false, fmt.Errorf("updating limit counter: %w", err)
}

func isWrongLast(err error) bool {
	var ae *jetstream.APIError
	return errors.As(err, &ae) && (ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

func retryAfter(reset time.Duration) int {
	return max(1, int((reset+time.Second-1)/time.Second))
}

// resetString writes a reset duration the way OpenAI's x-ratelimit-reset-*
// headers do ("1s", "6m0s", "20ms").
func resetString(d time.Duration) string {
	if d >= time.Second {
		d = d.Round(time.Second)
	} else {
		d = d.Round(time.Millisecond)
	}
	return d.String()
}
