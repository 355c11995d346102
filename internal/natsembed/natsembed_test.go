package natsembed

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func start(t *testing.T, auth *Auth) *Server {
	t.Helper()
	s, err := Start(Config{StoreDir: t.TempDir(), Auth: auth, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

func TestNoAuthUnchanged(t *testing.T) {
	s := start(t, nil)
	nc, err := s.Connect("plain")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := s.ConnectSystem("sys"); err == nil {
		t.Fatal("system connection without Auth")
	}
	if s.Account() != "" {
		t.Fatal("account without Auth")
	}
}

func TestAuthAccounts(t *testing.T) {
	akp, _ := nkeys.CreateAccount()
	issuer, _ := akp.PublicKey()
	tests := []struct {
		name string
		auth *Auth
	}{
		{"static users only", &Auth{}},
		{"with callout", &Auth{CalloutIssuer: issuer, CalloutTimeout: 200 * time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := start(t, tt.auth)
			nc, err := s.Connect("svc")
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			// JetStream works in the application account.
			js, _ := jetstream.New(nc)
			kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "b"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := kv.Put(t.Context(), "k", []byte("v")); err != nil {
				t.Fatal(err)
			}
			if nc.ConnectedServerId() != s.ID() {
				t.Fatal("server id")
			}
			if nc.ConnectedServerId() == "" || s.Account() != DefaultAccount {
				t.Fatal("account name")
			}
			sys, err := s.ConnectSystem("sys")
			if err != nil {
				t.Fatal(err)
			}
			defer sys.Close()
			// The system user can make server requests.
			if _, err := sys.Request("$SYS.REQ.SERVER.PING", nil, 2*time.Second); err != nil {
				t.Fatal(err)
			}
			// A stranger is refused: no static user matches and no callout
			// service answers. Over TCP: an in-process pipe deadlocks the
			// server's error write against the client's CONNECT for the
			// server's write deadline (10 s) before failing.
			_, err = nats.Connect(s.ClientURL(), nats.UserInfo("who", "ever-what"), nats.MaxReconnects(0))
			if err == nil || !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
				t.Fatalf("stranger: %v", err)
			}
		})
	}
}

func TestAuthConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		auth Auth
	}{
		{"bad account", Auth{Account: "a b"}},
		{"system account name", Auth{Account: "SYS"}},
		{"bad user", Auth{Services: []User{{Name: "x\"y"}}}},
		{"duplicate user", Auth{Services: []User{{Name: "a"}, {Name: "a"}}}},
		{"user named like system", Auth{Services: []User{{Name: DefaultSystemUser}}}},
		{"short password", Auth{Services: []User{{Name: "a", Password: "short"}}}},
		{"quote in password", Auth{Services: []User{{Name: "a", Password: "abcdefgh\""}}}},
		{"issuer not an account key", Auth{CalloutIssuer: "UABC"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Start(Config{StoreDir: t.TempDir(), Auth: &tt.auth})
			if !errors.Is(err, ErrAuthConfig) {
				t.Fatalf("got %v", err)
			}
		})
	}
}
