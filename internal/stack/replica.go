package stack

import (
	"context"
	"fmt"
	"net"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teegate/teegate/gateway"
	"github.com/teegate/teegate/gateway/audit"
)

// Replica is one more gateway on the stack's NATS: its own connection, key
// watch, directory, limit counters client and audit writer, sharing all
// state with the first gateway through JetStream only.
type Replica struct {
	URL     string
	Gateway *gateway.Gateway
	Keys    *gateway.KVKeys
	Audit   *audit.Log
	r       *replica
}

type replica struct {
	gw    *gateway.Gateway
	keys  *gateway.KVKeys
	dir   *gateway.KVDirectory
	audit *audit.Log
	wg    sync.WaitGroup
	once  sync.Once
}

func (r *replica) close(ctx context.Context) {
	r.once.Do(func() {
		_ = r.gw.Shutdown(ctx)
		r.wg.Wait()
		r.audit.Close()
		r.dir.Close()
		r.keys.Close()
	})
}

// AddGateway starts another gateway replica (the stack's gateway settings,
// with its own name in audit records); Close stops it.
func (s *Stack) AddGateway(ctx context.Context, name string) (*Replica, error) {
	nc, err := s.connect("teegate-" + name)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("adding gateway: %w", err)
	}
	r := &replica{}
	if r.keys, err = gateway.OpenKeys(ctx, js); err != nil {
		return nil, err
	}
	if r.dir, err = gateway.OpenDirectory(ctx, js); err != nil {
		r.keys.Close()
		return nil, err
	}
	lim, err := gateway.OpenLimits(ctx, js, 0, s.gwcfg.Now)
	if err != nil {
		r.dir.Close()
		r.keys.Close()
		return nil, err
	}
	if r.audit, err = audit.Open(ctx, audit.Config{JS: js, Gateway: name, Key: s.AuditKey, CheckpointEvery: 100}); err != nil {
		r.dir.Close()
		r.keys.Close()
		return nil, err
	}
	cfg := s.gwcfg
	cfg.Conn, cfg.Keys, cfg.Directory, cfg.Limits, cfg.Audit = nc, r.keys, r.dir, lim, r.audit
	if r.gw, err = gateway.New(cfg); err != nil {
		r.audit.Close()
		r.dir.Close()
		r.keys.Close()
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		r.audit.Close()
		r.dir.Close()
		r.keys.Close()
		return nil, fmt.Errorf("adding gateway: %w", err)
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		_ = r.gw.Serve(ln)
	}()
	s.replicas = append(s.replicas, r)
	return &Replica{URL: "http://" + ln.Addr().String(), Gateway: r.gw, Keys: r.keys, Audit: r.audit, r: r}, nil
}

// FlushAudit waits until every audit writer of the stack wrote what it
// queued.
func (s *Stack) FlushAudit(ctx context.Context) error {
	if err := s.Audit.Flush(ctx); err != nil {
		return err
	}
	for _, r := range s.replicas {
		if err := r.audit.Flush(ctx); err != nil {
			return err
		}
	}
	return nil
}

// CheckpointAudit flushes every audit writer of the stack and has each
// write a signed checkpoint, so the stream ends on one.
func (s *Stack) CheckpointAudit(ctx context.Context) error {
	if err := s.FlushAudit(ctx); err != nil {
		return err
	}
	for _, r := range s.replicas {
		if err := r.audit.Checkpoint(ctx); err != nil {
			return err
		}
	}
	return s.Audit.Checkpoint(ctx)
}
