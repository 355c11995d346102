package natsembed

import (
	"errors"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// Auth is rendered into nats-server config text, which the server's own
// parser reads back. Names and passwords must not be able to change that
// text's meaning: either resolve refuses them (ErrAuthConfig) or the parsed
// options hold exactly the accounts and users given, nothing more.
func FuzzAuthConfig(f *testing.F) {
	akp, _ := nkeys.CreateAccount()
	issuer, _ := akp.PublicKey()
	f.Add("TEEGATE", "teegate", "s3cret-password", "teegate-sys", "sys-password", "")
	f.Add("APP", "svc", "pa$$word{}", "sys", "x]y,z}pw", issuer)
	f.Add("include", "jetstream", "$VAR_NAME", "SYS_2", "12345678", "")
	f.Add("sys", "users", "a#comment", "password", "//slashes", issuer)
	f.Add("APP", "svc", "$VAR_NAME", "sys", "${HOME}xyz", "")
	f.Add("true", "false", "$2a$11$abcdefghijklmnopqrstuu", "null", "12345678", "")
	f.Add("a b", "x\"y", "short", "", "", "UABC")
	f.Fuzz(func(t *testing.T, account, svc, svcPass, sys, sysPass, iss string) {
		a := &Auth{Account: account, Services: []User{{Name: svc, Password: svcPass}}, System: User{Name: sys, Password: sysPass}, CalloutIssuer: iss}
		r, err := a.resolve()
		if err != nil {
			if !errors.Is(err, ErrAuthConfig) {
				t.Fatalf("resolve: %v, want ErrAuthConfig", err)
			}
			return
		}
		opts := &server.Options{}
		if err := opts.ProcessConfigString(r.config()); err != nil {
			t.Fatalf("accepted values render a config the server rejects: %v\n%s", err, r.config())
		}
		if opts.SystemAccount != systemAccount {
			t.Fatalf("system account %q\n%s", opts.SystemAccount, r.config())
		}
		accounts := map[string]bool{}
		for _, acc := range opts.Accounts {
			accounts[acc.Name] = true
		}
		if len(accounts) != 2 || !accounts[r.account] || !accounts[systemAccount] {
			t.Fatalf("accounts %v, want %s and %s\n%s", accounts, r.account, systemAccount, r.config())
		}
		want := map[string][2]string{
			r.services[0].Name: {r.services[0].Password, r.account},
			r.system.Name:      {r.system.Password, systemAccount},
		}
		if len(opts.Users) != len(want) {
			t.Fatalf("%d users parsed, want %d\n%s", len(opts.Users), len(want), r.config())
		}
		for _, u := range opts.Users {
			w, ok := want[u.Username]
			if !ok || u.Account == nil || u.Password != w[0] || u.Account.Name != w[1] {
				t.Fatalf("user %q parsed as %+v\n%s", u.Username, u, r.config())
			}
		}
		if (iss != "") != (opts.AuthCallout != nil) {
			t.Fatalf("callout %+v for issuer %q", opts.AuthCallout, iss)
		}
		if opts.AuthCallout != nil && (opts.AuthCallout.Issuer != iss || opts.AuthCallout.Account != r.account) {
			t.Fatalf("callout %+v\n%s", opts.AuthCallout, r.config())
		}
	})
}
