package natsembed

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nkeys"
)

// Default names used when Auth leaves them empty.
const (
	DefaultAccount     = "TEEGATE"
	DefaultServiceUser = "teegate"
	DefaultSystemUser  = "teegate-sys"
	systemAccount      = "SYS"
)

// ErrAuthConfig: Auth holds a name, password or key the server config
// cannot carry safely.
var ErrAuthConfig = errors.New("invalid nats auth config")

// User is a static user of the embedded server.
type User struct {
	Name     string
	Password string
}

// Auth turns on accounts and, with CalloutIssuer, the auth callout through
// which workers are admitted (DESIGN §4). Without Auth the server accepts
// anyone, as before.
type Auth struct {
	// Account is the application account, with JetStream, where the gateway,
	// the services and admitted workers live. Default DefaultAccount.
	Account string
	// Services are static users of Account with full permissions. They
	// bypass the callout (they run it, among other things). Connect uses
	// the first. Empty: one user DefaultServiceUser with a random password.
	Services []User
	// System is the system-account user, for $SYS.REQ.SERVER.<id>.KICK/LDM
	// and connection events. Empty name: DefaultSystemUser; empty password:
	// random.
	System User
	// CalloutIssuer is the public account nkey ("A…") whose key signs the
	// authorization responses (admission.Service's issuer). Empty: no
	// callout, so only the static users can connect at all.
	CalloutIssuer string
	// CalloutTimeout bounds one callout round trip (default 2 s).
	CalloutTimeout time.Duration
}

// resolved is Auth with defaults applied.
type resolved struct {
	account  string
	services []User
	system   User
	issuer   string
	timeout  time.Duration
}

func (a *Auth) resolve() (*resolved, error) {
	r := &resolved{account: a.Account, services: append([]User(nil), a.Services...), system: a.System, issuer: a.CalloutIssuer, timeout: a.CalloutTimeout}
	if r.account == "" {
		r.account = DefaultAccount
	}
	if r.account == systemAccount || !safeName(r.account) {
		return nil, fmt.Errorf("account %q: %w", r.account, ErrAuthConfig)
	}
	if len(r.services) == 0 {
		r.services = []User{{Name: DefaultServiceUser}}
	}
	if r.system.Name == "" {
		r.system.Name = DefaultSystemUser
	}
	seen := map[string]bool{}
	all := append([]*User{&r.system}, ptrs(r.services)...)
	for _, u := range all {
		if !safeName(u.Name) || seen[u.Name] {
			return nil, fmt.Errorf("user name %q: %w", u.Name, ErrAuthConfig)
		}
		seen[u.Name] = true
		if u.Password == "" {
			p, err := randomPassword()
			if err != nil {
				return nil, err
			}
			u.Password = p
		}
		if !safePassword(u.Password) {
			return nil, fmt.Errorf("password of %q: %w", u.Name, ErrAuthConfig)
		}
	}
	if r.issuer != "" && !nkeys.IsValidPublicAccountKey(r.issuer) {
		return nil, fmt.Errorf("callout issuer is not a public account nkey: %w", ErrAuthConfig)
	}
	if r.timeout <= 0 {
		r.timeout = 2 * time.Second
	}
	return r, nil
}

func ptrs(us []User) []*User {
	out := make([]*User, len(us))
	for i := range us {
		out[i] = &us[i]
	}
	return out
}

// config renders the accounts and authorization blocks of a nats-server
// config. Every value was checked by resolve to need no escaping.
func (r *resolved) config() string {
	var b strings.Builder
	users := func(us []User) {
		b.WriteString("users: [")
		for i, u := range us {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "{user: %q, password: %q}", u.Name, u.Password)
		}
		b.WriteString("]")
	}
	b.WriteString("accounts {\n  ")
	fmt.Fprintf(&b, "%s { jetstream: enabled, ", r.account)
	users(r.services)
	b.WriteString(" }\n  ")
	fmt.Fprintf(&b, "%s { ", systemAccount)
	users([]User{r.system})
	b.WriteString(" }\n}\n")
	fmt.Fprintf(&b, "system_account: %s\n", systemAccount)
	if r.issuer != "" {
		// The system user is an auth user too: otherwise its connections
		// would be sent to the callout, which only knows workers.
		names := []string{fmt.Sprintf("%q", r.system.Name)}
		for _, u := range r.services {
			names = append(names, fmt.Sprintf("%q", u.Name))
		}
		fmt.Fprintf(&b, "authorization {\n  timeout: %g\n  auth_callout {\n    issuer: %q\n    account: %s\n    auth_users: [%s]\n  }\n}\n",
			r.timeout.Seconds(), r.issuer, r.account, strings.Join(names, ", "))
	}
	return b.String()
}

func safeName(s string) bool {
	if s == "" || len(s) > 64 || strings.EqualFold(s, "include") {
		// "include" is a directive of the config language wherever a key
		// may stand.
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// safePassword admits printable ASCII without quotes, backslashes or
// spaces, so the password is copied into the config verbatim.
func safePassword(s string) bool {
	if len(s) < 8 || len(s) > 256 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c > '~' || c == '"' || c == '\\' || c == '\'' {
			return false
		}
	}
	return true
}

func randomPassword() (string, error) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generating nats password: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}
