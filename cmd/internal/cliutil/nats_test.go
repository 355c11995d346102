package cliutil

import (
	"errors"
	"flag"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/teegate/teegate/internal/natsembed"
)

func TestNATSFlagsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    NATSFlags
		ok   bool
	}{
		{"url only", NATSFlags{URLs: "nats://a:4222"}, true},
		{"list", NATSFlags{URLs: "nats://a:4222, nats://b:4222"}, true},
		{"no url", NATSFlags{URLs: " , "}, false},
		{"creds and user", NATSFlags{URLs: "nats://a", Creds: "x", User: "u", Password: "p"}, false},
		{"user without password", NATSFlags{URLs: "nats://a", User: "u"}, false},
		{"cert without key", NATSFlags{URLs: "nats://a", TLSCert: "c"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.f.Validate()
			if tc.ok != (err == nil) || err != nil && !errors.Is(err, ErrNATSFlags) {
				t.Fatalf("Validate: %v", err)
			}
		})
	}
	if got := (&NATSFlags{URLs: "nats://a:1,nats://b:2 nats://c:3"}).Servers(); len(got) != 3 {
		t.Fatalf("servers %v", got)
	}
}

func TestNATSFlagsRegisterEnv(t *testing.T) {
	t.Setenv("NATS_URL", "nats://x:1")
	t.Setenv("NATS_SYS_USER", "sys")
	var f, sys NATSFlags
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	f.Register(fs)
	sys.RegisterAuth(fs, "nats-sys", "NATS_SYS")
	if err := fs.Parse([]string{"-nats-user", "u", "-nats-password", "p"}); err != nil {
		t.Fatal(err)
	}
	if f.URLs != "nats://x:1" || f.User != "u" || sys.User != "sys" {
		t.Fatalf("flags %+v sys %+v", f, sys)
	}
}

func TestNATSSeedFile(t *testing.T) {
	kp, _ := nkeys.CreateUser()
	seed, _ := kp.Seed()
	dir := t.TempDir()
	good := filepath.Join(dir, "user.nk")
	if err := os.WriteFile(good, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	if opts, err := (&NATSFlags{URLs: "nats://a", Creds: good}).AuthOptions(); err != nil || len(opts) != 1 {
		t.Fatalf("seed creds: %v", err)
	}
	akp, _ := nkeys.CreateAccount()
	aseed, _ := akp.Seed()
	bad := filepath.Join(dir, "account.nk")
	if err := os.WriteFile(bad, aseed, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := (&NATSFlags{URLs: "nats://a", NKey: bad}).AuthOptions(); !errors.Is(err, ErrNATSFlags) {
		t.Fatalf("account seed accepted as a user: %v", err)
	}
	if _, err := (&NATSFlags{URLs: "nats://a", Creds: filepath.Join(dir, "missing")}).AuthOptions(); err == nil {
		t.Fatal("missing creds file accepted")
	}
}

// A wrong credential and an unreachable server each fail the first
// connection at once with an error that names the servers.
func TestNATSConnectFailsClearly(t *testing.T) {
	s, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir(), Listen: "127.0.0.1:0",
		Auth: &natsembed.Auth{Services: []natsembed.User{{Name: "svc", Password: "right-password"}}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	good := NATSFlags{URLs: s.ClientURL(), User: "svc", Password: "right-password"}
	nc, err := good.Connect("test", nil)
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	wrong := NATSFlags{URLs: s.ClientURL(), User: "svc", Password: "wrong-password"}
	if _, err := wrong.Connect("test", nil); err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") || !strings.Contains(err.Error(), s.ClientURL()) {
		t.Fatalf("wrong password: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "nats://" + ln.Addr().String()
	ln.Close()
	start := time.Now()
	if _, err := (&NATSFlags{URLs: dead, ConnectTimeout: time.Second}).Connect("test", nil); err == nil || !strings.Contains(err.Error(), dead) {
		t.Fatalf("unreachable: %v", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("unreachable server took %v", d)
	}
}

func TestReconnectDelay(t *testing.T) {
	for a := 0; a < 20; a++ {
		d := ReconnectDelay(a)
		if d < 100*time.Millisecond || d > 7500*time.Millisecond {
			t.Fatalf("attempt %d: %v", a, d)
		}
	}
}
