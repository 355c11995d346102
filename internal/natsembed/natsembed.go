package natsembed

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Config describes an embedded server.
type Config struct {
	// StoreDir holds JetStream data. Required.
	StoreDir string
	// Listen is host:port for client connections from other processes
	// ("127.0.0.1:0" picks a free port). Empty means no listener: only
	// in-process connections.
	Listen string
	// ServerName names the server (default "teegate").
	ServerName string
	// ReadyTimeout bounds the wait for the server to accept clients.
	ReadyTimeout time.Duration
}

// Server is a running embedded nats-server.
type Server struct {
	srv *server.Server
}

// Start starts a server and waits until it accepts connections.
func Start(cfg Config) (*Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("starting nats: store dir is required")
	}
	opts := &server.Options{
		ServerName:         cfg.ServerName,
		JetStream:          true,
		StoreDir:           cfg.StoreDir,
		NoSigs:             true,
		NoLog:              true,
		JetStreamMaxMemory: 256 << 20,
		MaxPayload:         8 << 20,
	}
	if opts.ServerName == "" {
		opts.ServerName = "teegate"
	}
	if cfg.Listen == "" {
		opts.DontListen = true
	} else {
		host, port, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("starting nats: parsing listen address: %w", err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("starting nats: parsing port: %w", err)
		}
		if p == 0 {
			p = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, p
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("starting nats: %w", err)
	}
	go srv.Start()
	timeout := cfg.ReadyTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	if !srv.ReadyForConnections(timeout) {
		srv.Shutdown()
		return nil, errors.New("starting nats: server not ready in time")
	}
	return &Server{srv: srv}, nil
}

// ClientURL is the URL other processes use; empty without a listener.
func (s *Server) ClientURL() string {
	if s.srv.Addr() == nil {
		return ""
	}
	return s.srv.ClientURL()
}

// Connect opens an in-process client connection.
func (s *Server) Connect(name string, opts ...nats.Option) (*nats.Conn, error) {
	all := append([]nats.Option{nats.InProcessServer(s.srv), nats.Name(name), nats.MaxReconnects(-1)}, opts...)
	nc, err := nats.Connect("", all...)
	if err != nil {
		return nil, fmt.Errorf("connecting in-process to nats: %w", err)
	}
	return nc, nil
}

// Inner returns the underlying server, for options tests need (accounts,
// auth callout) without this package growing a knob for each.
func (s *Server) Inner() *server.Server { return s.srv }

// Shutdown stops the server and waits for it to finish.
func (s *Server) Shutdown() {
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}
