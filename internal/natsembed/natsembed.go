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
	// Auth, when set, runs the server with accounts, static service users
	// and (with Auth.CalloutIssuer) the auth callout that admits workers.
	Auth *Auth
}

// Server is a running embedded nats-server.
type Server struct {
	srv  *server.Server
	auth *resolved
}

// Start starts a server and waits until it accepts connections.
func Start(cfg Config) (*Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("starting nats: store dir is required")
	}
	opts := &server.Options{}
	var auth *resolved
	if cfg.Auth != nil {
		var err error
		if auth, err = cfg.Auth.resolve(); err != nil {
			return nil, fmt.Errorf("starting nats: %w", err)
		}
		// Accounts with JetStream and the callout block have no Go option
		// form for everything (per-account JetStream limits are set only by
		// the config parser), so they go through the server's own parser.
		if err := opts.ProcessConfigString(auth.config()); err != nil {
			return nil, fmt.Errorf("starting nats: applying auth config: %w", err)
		}
		// The nonce in INFO is what workers sign to prove they hold the key
		// their evidence binds; by default the server sends one only when
		// it knows nkey users itself.
		opts.AlwaysEnableNonce = true
	}
	opts.ServerName = cfg.ServerName
	opts.JetStream = true
	opts.StoreDir = cfg.StoreDir
	opts.NoSigs = true
	opts.NoLog = true
	opts.JetStreamMaxMemory = 256 << 20
	opts.MaxPayload = 8 << 20
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
	return &Server{srv: srv, auth: auth}, nil
}

// ClientURL is the URL other processes use; empty without a listener.
func (s *Server) ClientURL() string {
	if s.srv.Addr() == nil {
		return ""
	}
	return s.srv.ClientURL()
}

// Connect opens an in-process client connection; with Auth, as the first
// service user (full permissions in the application account).
func (s *Server) Connect(name string, opts ...nats.Option) (*nats.Conn, error) {
	if s.auth != nil {
		u := s.auth.services[0]
		opts = append([]nats.Option{nats.UserInfo(u.Name, u.Password)}, opts...)
	}
	return s.ConnectBare(name, opts...)
}

// ConnectBare opens an in-process connection with no credentials but the
// caller's: how a worker connects through the auth callout.
func (s *Server) ConnectBare(name string, opts ...nats.Option) (*nats.Conn, error) {
	all := append([]nats.Option{nats.InProcessServer(s.srv), nats.Name(name), nats.MaxReconnects(-1)}, opts...)
	nc, err := nats.Connect("", all...)
	if err != nil {
		return nil, fmt.Errorf("connecting in-process to nats: %w", err)
	}
	return nc, nil
}

// ConnectSystem opens an in-process connection as the system user (for
// $SYS.REQ.SERVER.<id>.KICK and LDM, and connection events). It fails
// without Auth: the server then has no system user to log in as.
func (s *Server) ConnectSystem(name string, opts ...nats.Option) (*nats.Conn, error) {
	if s.auth == nil {
		return nil, errors.New("connecting to nats as system: server runs without Auth")
	}
	u := s.auth.system
	return s.ConnectBare(name, append([]nats.Option{nats.UserInfo(u.Name, u.Password)}, opts...)...)
}

// Account is the application account's name; empty without Auth.
func (s *Server) Account() string {
	if s.auth == nil {
		return ""
	}
	return s.auth.account
}

// ServiceUser is the user Connect logs in as (for other processes that
// connect over ClientURL); ok is false without Auth.
func (s *Server) ServiceUser() (u User, ok bool) {
	if s.auth == nil {
		return User{}, false
	}
	return s.auth.services[0], true
}

// ID is the server's id (its public nkey), which $SYS.REQ.SERVER.<id>.*
// requests name.
func (s *Server) ID() string { return s.srv.ID() }

// Inner returns the underlying server, for options tests need (accounts,
// auth callout) without this package growing a knob for each.
func (s *Server) Inner() *server.Server { return s.srv }

// Shutdown stops the server and waits for it to finish.
func (s *Server) Shutdown() {
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}
