package cliutil

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// NATSFlags are the connection flags every NATS-using command shares
// (gateway, worker, keys, admission, audit). Defaults come from the
// environment variables the nats CLI reads: NATS_URL, NATS_CREDS,
// NATS_NKEY, NATS_USER, NATS_PASSWORD, NATS_CA, NATS_CERT, NATS_KEY.
type NATSFlags struct {
	// URLs is a comma- or space-separated list of server URLs; a client
	// learns the rest of a cluster from the first it reaches.
	URLs string
	// Creds is a credentials file: a decorated user JWT with its nkey seed
	// (a .creds file), or an nkey seed alone (what `teegate nats-config`
	// writes for config-file users).
	Creds string
	// NKey is a file holding an nkey seed (an alternative to Creds).
	NKey string
	// User and Password authenticate a config-file user.
	User, Password string
	// TLSCA verifies the servers; TLSCert and TLSKey are a client
	// certificate for servers that ask for one.
	TLSCA, TLSCert, TLSKey string
	// ConnectTimeout bounds the first connection to each server.
	ConnectTimeout time.Duration
	// InOrder tries the servers in the order given instead of a random
	// one (which spreads a fleet's clients over the cluster).
	InOrder bool
}

// Register adds -nats, -nats-creds, -nats-nkey, -nats-user,
// -nats-password, -nats-tls-ca, -nats-tls-cert, -nats-tls-key and
// -nats-timeout to fs, with defaults from the environment.
func (f *NATSFlags) Register(fs *flag.FlagSet) {
	def := nats.DefaultURL
	for _, env := range []string{"NATS_URL", "TEEGATE_NATS_URL"} {
		if v := os.Getenv(env); v != "" {
			def = v
			break
		}
	}
	fs.StringVar(&f.URLs, "nats", def, "NATS server URLs, comma-separated (default $NATS_URL)")
	f.RegisterAuth(fs, "nats", "NATS")
	fs.StringVar(&f.TLSCA, "nats-tls-ca", os.Getenv("NATS_CA"), "CA certificates (PEM) that verify the NATS servers (default $NATS_CA)")
	fs.StringVar(&f.TLSCert, "nats-tls-cert", os.Getenv("NATS_CERT"), "client certificate (PEM) for NATS mutual TLS (default $NATS_CERT)")
	fs.StringVar(&f.TLSKey, "nats-tls-key", os.Getenv("NATS_KEY"), "client certificate key (PEM) for NATS mutual TLS (default $NATS_KEY)")
	fs.DurationVar(&f.ConnectTimeout, "nats-timeout", 5*time.Second, "timeout of the first connection to each NATS server")
	fs.BoolVar(&f.InOrder, "nats-in-order", false, "connect and reconnect to the -nats servers in the order given (default: in a random order)")
}

// RegisterAuth adds only the credential flags, named <prefix>-creds,
// <prefix>-nkey, <prefix>-user and <prefix>-password, with defaults from
// <envPrefix>_CREDS and so on. The admission service uses it for its
// system-account connection ("nats-sys", "NATS_SYS").
func (f *NATSFlags) RegisterAuth(fs *flag.FlagSet, prefix, envPrefix string) {
	fs.StringVar(&f.Creds, prefix+"-creds", os.Getenv(envPrefix+"_CREDS"), "NATS credentials file: a .creds file or an nkey seed (default $"+envPrefix+"_CREDS)")
	fs.StringVar(&f.NKey, prefix+"-nkey", os.Getenv(envPrefix+"_NKEY"), "file with an nkey seed to authenticate with (default $"+envPrefix+"_NKEY)")
	fs.StringVar(&f.User, prefix+"-user", os.Getenv(envPrefix+"_USER"), "NATS user name (default $"+envPrefix+"_USER)")
	fs.StringVar(&f.Password, prefix+"-password", os.Getenv(envPrefix+"_PASSWORD"), "NATS password (default $"+envPrefix+"_PASSWORD)")
}

// ErrNATSFlags marks a bad combination of connection flags.
var ErrNATSFlags = errors.New("invalid NATS connection flags")

// Servers returns the URL list.
func (f *NATSFlags) Servers() []string {
	return strings.FieldsFunc(f.URLs, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' })
}

// HasAuth reports whether any credential is set.
func (f *NATSFlags) HasAuth() bool {
	return f.Creds != "" || f.NKey != "" || f.User != "" || f.Password != ""
}

// Validate checks the flags without touching the network.
func (f *NATSFlags) Validate() error {
	if len(f.Servers()) == 0 {
		return fmt.Errorf("no NATS server URL: %w", ErrNATSFlags)
	}
	n := 0
	for _, set := range []bool{f.Creds != "", f.NKey != "", f.User != "" || f.Password != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		return fmt.Errorf("give one of a credentials file, an nkey seed, or user and password: %w", ErrNATSFlags)
	}
	if (f.User == "") != (f.Password == "") {
		return fmt.Errorf("user and password go together: %w", ErrNATSFlags)
	}
	if (f.TLSCert == "") != (f.TLSKey == "") {
		return fmt.Errorf("a TLS client certificate needs its key: %w", ErrNATSFlags)
	}
	return nil
}

// AuthOptions returns the options that authenticate as the flags say.
func (f *NATSFlags) AuthOptions() ([]nats.Option, error) {
	switch {
	case f.Creds != "":
		raw, err := os.ReadFile(f.Creds)
		if err != nil {
			return nil, fmt.Errorf("reading NATS credentials: %w", err)
		}
		if strings.Contains(string(raw), "-----BEGIN NATS USER JWT-----") {
			return []nats.Option{nats.UserCredentials(f.Creds)}, nil
		}
		return seedOption(raw, f.Creds)
	case f.NKey != "":
		raw, err := os.ReadFile(f.NKey)
		if err != nil {
			return nil, fmt.Errorf("reading NATS nkey seed: %w", err)
		}
		return seedOption(raw, f.NKey)
	case f.User != "":
		return []nats.Option{nats.UserInfo(f.User, f.Password)}, nil
	}
	return nil, nil
}

// seedOption authenticates with the nkey seed in raw (bare or decorated).
func seedOption(raw []byte, path string) ([]nats.Option, error) {
	kp, err := nkeys.ParseDecoratedNKey(raw)
	if err != nil {
		return nil, fmt.Errorf("reading nkey seed from %s: %w", path, err)
	}
	pub, err := kp.PublicKey()
	if err != nil || !nkeys.IsValidPublicUserKey(pub) {
		return nil, fmt.Errorf("%s does not hold a user nkey seed: %w", path, ErrNATSFlags)
	}
	return []nats.Option{nats.Nkey(pub, kp.Sign)}, nil
}

// Options returns every option but credentials: name, TLS, timeouts,
// reconnect with exponential backoff and jitter, and a log line on
// disconnect, reconnect, close and asynchronous errors. Workers that connect by their evidence
// use these with their own credentials.
func (f *NATSFlags) Options(name string, log *slog.Logger) ([]nats.Option, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := f.ConnectTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.Timeout(timeout),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(ReconnectDelay),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			log.Warn("nats disconnected", "conn", name, "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "conn", name, "server", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			// Slow consumers, permission violations, JetStream consumers
			// that stopped: never content, only what went wrong and where.
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Warn("nats error", "conn", name, "subject", subj, "err", err)
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			if err := nc.LastError(); err != nil {
				log.Warn("nats connection closed", "conn", name, "err", err)
			}
		}),
	}
	if f.InOrder {
		opts = append(opts, nats.DontRandomize())
	}
	if f.TLSCA != "" {
		opts = append(opts, nats.RootCAs(f.TLSCA))
	}
	if f.TLSCert != "" {
		opts = append(opts, nats.ClientCert(f.TLSCert, f.TLSKey))
	}
	return opts, nil
}

// ReconnectDelay is the wait after every server in the list was tried
// once more: 100 ms doubling to 5 s, plus up to half again at random, so a
// fleet that lost a node does not come back in lockstep.
func ReconnectDelay(attempts int) time.Duration {
	d := 100 * time.Millisecond << min(max(attempts-1, 0), 6)
	d = min(d, 5*time.Second)
	return d + rand.N(d/2+1)
}

// Connect connects with the flags' credentials. A wrong credential or an
// unreachable server is one error naming the servers, returned after at
// most ConnectTimeout per server: the first connection is not retried.
func (f *NATSFlags) Connect(name string, log *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	opts, err := f.Options(name, log)
	if err != nil {
		return nil, err
	}
	auth, err := f.AuthOptions()
	if err != nil {
		return nil, err
	}
	return f.Dial(append(append(opts, auth...), extra...)...)
}

// Dial connects to the flags' servers with exactly opts.
func (f *NATSFlags) Dial(opts ...nats.Option) (*nats.Conn, error) {
	nc, err := nats.Connect(strings.Join(f.Servers(), ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS at %s: %w", redact(f.Servers()), err)
	}
	return nc, nil
}

// redact drops passwords from URLs shown in errors.
func redact(urls []string) string {
	out := make([]string, len(urls))
	for i, u := range urls {
		if at := strings.LastIndex(u, "@"); at >= 0 {
			if s := strings.Index(u, "://"); s >= 0 && s < at {
				u = u[:s+3] + "***@" + u[at+1:]
			}
		}
		out[i] = u
	}
	return strings.Join(out, ",")
}

// ReadAccountSeed reads an account nkey seed (bare or decorated) from
// path: the auth callout issuer every gateway replica shares.
func ReadAccountSeed(path string) (nkeys.KeyPair, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the admission seed: %w", err)
	}
	kp, err := nkeys.ParseDecoratedNKey(raw)
	if err != nil {
		return nil, fmt.Errorf("reading the admission seed from %s: %w", path, err)
	}
	pub, err := kp.PublicKey()
	if err != nil || !nkeys.IsValidPublicAccountKey(pub) {
		return nil, fmt.Errorf("%s does not hold an account nkey seed: %w", path, ErrNATSFlags)
	}
	return kp, nil
}
