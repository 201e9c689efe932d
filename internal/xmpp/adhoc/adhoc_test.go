package adhoc

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"mellium.im/xmpp/stanza"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/xmpp/dataform"
)

func TestAccountOf(t *testing.T) {
	for _, tc := range []struct {
		from, bare, domain string
		bad                bool
	}{
		{from: "juliet@example.org/phone", bare: "juliet@example.org", domain: "example.org"},
		{from: "Juliet@Example.ORG/tablet", bare: "juliet@example.org", domain: "example.org"},
		{from: "juliet@example.org", bare: "juliet@example.org", domain: "example.org"},
		{from: "example.org", bad: true},
		{from: "@example.org", bad: true},
		{from: "", bad: true},
	} {
		a, err := accountOf(tc.from)
		if tc.bad {
			if err == nil {
				t.Errorf("accountOf(%q) = %+v, want an error", tc.from, a)
			}
			continue
		}
		if err != nil || a.Bare != tc.bare || a.Domain != tc.domain {
			t.Errorf("accountOf(%q) = %+v, %v; want %s, %s", tc.from, a, err, tc.bare, tc.domain)
		}
	}
}

// registrar records RegisterDevice calls.
type registrar struct {
	app, device, token string
	account            appserver.Account
}

func (r *registrar) Register(context.Context, appserver.Caller, string, string, string) (registry.Registration, error) {
	return registry.Registration{}, errors.New("unexpected")
}

func (r *registrar) RegisterDevice(_ context.Context, app string, a appserver.Account, device, _, token string) (registry.Registration, error) {
	r.app, r.account, r.device, r.token = app, a, device, token
	return registry.Registration{Node: "node1", Secret: "secret1"}, nil
}

func (r *registrar) UnregisterDevice(context.Context, string, appserver.Account, string, string) (registry.Registration, error) {
	return registry.Registration{}, errors.New("unexpected")
}

func (r *registrar) RegisterTigase(context.Context, string, appserver.Account, string) (registry.Registration, error) {
	return registry.Registration{}, errors.New("unexpected")
}

func (r *registrar) UnregisterTigase(context.Context, string, appserver.Account, string) (registry.Registration, error) {
	return registry.Registration{}, errors.New("unexpected")
}

func (r *registrar) Unregister(context.Context, appserver.Caller, string, string) (registry.Registration, error) {
	return registry.Registration{}, errors.New("unexpected")
}

func form(kv ...string) *dataform.Form {
	f := &dataform.Form{Type: "submit"}
	for i := 0; i < len(kv); i += 2 {
		f.Fields = append(f.Fields, dataform.Field{Var: kv[i], Values: []string{kv[i+1]}})
	}
	return f
}

func TestRegisterWebPush(t *testing.T) {
	const sub = `{"endpoint":"https://push.example/x?a=1&b=2","keys":{"p256dh":"BKEY","auth":"AUTH"}}`
	cases := []struct {
		name  string
		form  *dataform.Form
		token string // "" for a bad-request answer
	}{
		{"subscription JSON", form("device-id", "browser-1", "subscription", sub), sub},
		{"three fields", form("device-id", "browser-1", "endpoint", "https://push.example/x?a=1&b=2", "p256dh", "BKEY", "auth", "AUTH"),
			`{"endpoint":"https://push.example/x?a=1&b=2","keys":{"p256dh":"BKEY","auth":"AUTH"}}`},
		{"no device id", form("subscription", sub), ""},
		{"no auth", form("device-id", "browser-1", "endpoint", "https://push.example/x", "p256dh", "BKEY"), ""},
		{"nothing", form(), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			reg := &registrar{}
			cmds := New(reg, Options{WebPushApp: "web"})
			res, err := cmds.Execute(context.Background(), "Juliet@example.org/browser", "push.example.org", &Command{Node: RegisterWebPush, Action: "execute", Form: c.form})
			if c.token == "" {
				var se stanza.Error
				if !errors.As(err, &se) || se.Condition != stanza.BadRequest {
					t.Fatalf("err = %v, want bad-request", err)
				}
				if reg.app != "" {
					t.Fatal("registered anyway")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if reg.app != "web" || reg.token != c.token || reg.device != "browser-1" || reg.account.Bare != "juliet@example.org" {
				t.Fatalf("registered %+v", reg)
			}
			if v, _ := res.Form.Value("secret"); v != "secret1" {
				t.Fatalf("answer %+v", res.Form)
			}
		})
	}
	// Off unless configured.
	if _, err := New(&registrar{}, Options{V1: true}).Execute(context.Background(), "juliet@example.org/b", "push.example.org",
		&Command{Node: RegisterWebPush, Form: form("device-id", "b", "subscription", sub)}); err == nil {
		t.Fatal("the command ran without a webpush app")
	}
}

// A command canceled (XEP-0050 §3.4) is answered canceled and does nothing.
func TestCancel(t *testing.T) {
	reg := &registrar{}
	cmds := New(reg, Options{V1: true, WebPushApp: "web"})
	res, err := cmds.Execute(context.Background(), "juliet@example.org/phone", "push.example.org",
		&Command{Node: RegisterWebPush, Action: "cancel", SessionID: "s1", Form: form("device-id", "browser-1")})
	if err != nil || res.Status != "canceled" || res.SessionID != "s1" || res.Node != RegisterWebPush {
		t.Fatalf("Execute = %+v, %v; want status canceled", res, err)
	}
	if *reg != (registrar{}) {
		t.Fatalf("a canceled command reached the registrar: %+v", reg)
	}
	var se stanza.Error
	if _, err := cmds.Execute(context.Background(), "juliet@example.org/phone", "push.example.org",
		&Command{Node: "no-such-command", Action: "cancel"}); !errors.As(err, &se) || se.Condition != stanza.ItemNotFound {
		t.Fatalf("cancel of an unknown command = %v, want item-not-found", err)
	}
}

// With Domains, the commands take accounts of those domains only: the
// server at the other end of the stream can claim any sender, and where
// one process serves components of several servers, a hostile one would
// otherwise act for the others' accounts.
func TestDomains(t *testing.T) {
	const sub = `{"endpoint":"https://push.example/x","keys":{"p256dh":"BKEY","auth":"AUTH"}}`
	for _, tc := range []struct {
		domains []string
		from    string
		ok      bool
	}{
		{nil, "mallory@evil.example/x", true},
		{[]string{"example.org"}, "Juliet@Example.ORG/phone", true},
		{[]string{"other.example", "example.org"}, "juliet@example.org/phone", true},
		{[]string{"example.org"}, "juliet@evil.example/phone", false},
		{[]string{"example.org"}, "juliet@sub.example.org/phone", false},
	} {
		reg := &registrar{}
		_, err := New(reg, Options{WebPushApp: "web", Domains: tc.domains}).Execute(context.Background(), tc.from, "push.example.org",
			&Command{Node: RegisterWebPush, Form: form("device-id", "b", "subscription", sub)})
		var se stanza.Error
		switch {
		case tc.ok && (err != nil || reg.app != "web"):
			t.Errorf("%v, %s: %v, registered %+v", tc.domains, tc.from, err, reg)
		case !tc.ok && (!errors.As(err, &se) || se.Condition != stanza.Forbidden || reg.app != ""):
			t.Errorf("%v, %s: %v, registered %+v; want forbidden and nothing", tc.domains, tc.from, err, reg)
		}
	}
}

// unconfirmed answers every change as the core does one stored but not
// confirmed by every instance.
type unconfirmed struct{}

var errUnconfirmed = fmt.Errorf("storing registration: register: the change feed went down: %w", registry.ErrUnconfirmed)

func (unconfirmed) Register(context.Context, appserver.Caller, string, string, string) (registry.Registration, error) {
	return registry.Registration{}, errUnconfirmed
}

func (unconfirmed) RegisterDevice(context.Context, string, appserver.Account, string, string, string) (registry.Registration, error) {
	return registry.Registration{}, errUnconfirmed
}

func (unconfirmed) UnregisterDevice(context.Context, string, appserver.Account, string, string) (registry.Registration, error) {
	return registry.Registration{}, errUnconfirmed
}

func (unconfirmed) RegisterTigase(context.Context, string, appserver.Account, string) (registry.Registration, error) {
	return registry.Registration{}, errUnconfirmed
}

func (unconfirmed) UnregisterTigase(context.Context, string, appserver.Account, string) (registry.Registration, error) {
	return registry.Registration{}, errUnconfirmed
}

func (unconfirmed) Unregister(context.Context, appserver.Caller, string, string) (registry.Registration, error) {
	return registry.Registration{}, errUnconfirmed
}

// A change stored but not confirmed by every instance is answered wait,
// in every dialect: the client tries again, and finds it stored. Any
// other type would tell it the change failed for good.
func TestUnconfirmedAnsweredWait(t *testing.T) {
	cmds := New(unconfirmed{}, Options{V1: true, FCMApp: "fcm", TigaseProviders: map[string]string{"tigase:messenger:apns:1": "apns"}, WebPushApp: "web"})
	const sub = `{"endpoint":"https://push.example/x","keys":{"p256dh":"BKEY","auth":"AUTH"}}`
	for _, cmd := range []*Command{
		{Node: V1Register, Form: form("type", "fcm", "node", "n1", "token", "t1")},
		{Node: V1Unregister, Form: form("type", "fcm", "node", "n1")},
		{Node: RegisterFCM, Form: form("token", "t1", "android-id", "d1")},
		{Node: UnregisterFCM, Form: form("android-id", "d1")},
		{Node: RegisterDevice, Form: form("provider", "tigase:messenger:apns:1", "device-token", "t1")},
		{Node: UnregisterDevice, Form: form("provider", "tigase:messenger:apns:1", "device-token", "t1")},
		{Node: RegisterWebPush, Form: form("device-id", "b", "subscription", sub)},
	} {
		_, err := cmds.Execute(context.Background(), "juliet@example.org/phone", "push.example.org", cmd)
		var se stanza.Error
		if !errors.As(err, &se) || se.Type != stanza.Wait {
			t.Errorf("%s: %v, want a wait error", cmd.Node, err)
			continue
		}
		if se.Condition != stanza.InternalServerError || se.Text[""] == "" {
			t.Errorf("%s: %s/%s %q, want internal-server-error saying to try again", cmd.Node, se.Type, se.Condition, se.Text[""])
		}
	}
}

// stalled is a registry gone silent: nothing answers until the command's
// context ends.
type stalled struct{}

func (stalled) Register(ctx context.Context, _ appserver.Caller, _, _, _ string) (registry.Registration, error) {
	<-ctx.Done()
	return registry.Registration{}, ctx.Err()
}

func (stalled) RegisterDevice(ctx context.Context, _ string, _ appserver.Account, _, _, _ string) (registry.Registration, error) {
	<-ctx.Done()
	return registry.Registration{}, ctx.Err()
}

func (stalled) UnregisterDevice(ctx context.Context, _ string, _ appserver.Account, _, _ string) (registry.Registration, error) {
	<-ctx.Done()
	return registry.Registration{}, ctx.Err()
}

func (stalled) RegisterTigase(ctx context.Context, _ string, _ appserver.Account, _ string) (registry.Registration, error) {
	<-ctx.Done()
	return registry.Registration{}, ctx.Err()
}

func (stalled) UnregisterTigase(ctx context.Context, _ string, _ appserver.Account, _ string) (registry.Registration, error) {
	<-ctx.Done()
	return registry.Registration{}, ctx.Err()
}

func (stalled) Unregister(ctx context.Context, _ appserver.Caller, _, _ string) (registry.Registration, error) {
	<-ctx.Done()
	return registry.Registration{}, ctx.Err()
}

// A command whose registry does not answer ends at its timeout, answered
// wait, though the component hands it a context without a deadline: it
// would otherwise hold its place on the stream, and a stop, until TCP
// gave up on the database's connection.
func TestCommandBoundedWhenRegistryStalls(t *testing.T) {
	cmds := New(stalled{}, Options{V1: true, FCMApp: "fcm", Timeout: 50 * time.Millisecond})
	for _, cmd := range []*Command{
		{Node: V1Register, Form: form("type", "fcm", "node", "n1", "token", "t1")},
		{Node: V1Unregister, Form: form("type", "fcm", "node", "n1")},
		{Node: UnregisterFCM, Form: form("android-id", "d1")},
	} {
		done := make(chan error, 1)
		go func() {
			_, err := cmds.Execute(context.Background(), "juliet@example.org/phone", "push.example.org", cmd)
			done <- err
		}()
		select {
		case err := <-done:
			var se stanza.Error
			if !errors.As(err, &se) || se.Type != stanza.Wait {
				t.Errorf("%s: %v, want a wait error", cmd.Node, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no answer 5 s after its 50 ms timeout", cmd.Node)
		}
	}
}

// The user's server vouches for the sender's JID and has prepared it
// already: Prosody (stringprep nodeprep/resourceprep) takes these, and
// routes their commands to us. The account is the bare JID; a resource
// we cannot prepare, or a localpart PRECIS would have refused at
// account creation but Prosody did not, must not make the account's
// every registration fail with bad-request.
func TestAccountOfWhatServersAccept(t *testing.T) {
	for _, from := range []string{
		"€uro@example.org/phone",  // Prosody: jid.prep keeps it
		"♥love@example.org/phone", // likewise
		"juliet@example.org/٠۰",   // Arabic-Indic digits of both kinds, resource only
		"x·y@example.org/r",       // MIDDLE DOT between letters other than l
	} {
		reg := &registrar{}
		cmds := New(reg, Options{FCMApp: "fcm"})
		_, err := cmds.Execute(context.Background(), from, "push.example.org",
			&Command{Node: "register-push-fcm", Action: "execute", Form: form("token", "tok", "device-id", "dev1")})
		if err != nil {
			t.Errorf("register-push-fcm from %q (a JID Prosody routes): %v", from, err)
		}
	}
}

// p2's muc field names a group chat, whose room name Prosody's MUC
// prepares with nodeprep as it does accounts': a registration for it
// must not be refused where PRECIS would have refused the name.
func TestChannelOfWhatServersAccept(t *testing.T) {
	for _, muc := range []string{"♥fans@conference.example.org", "€uro@conference.example.org"} {
		reg := &registrar{}
		cmds := New(reg, Options{FCMApp: "fcm"})
		_, err := cmds.Execute(context.Background(), "juliet@example.org/phone", "push.example.org",
			&Command{Node: "register-push-fcm", Action: "execute", Form: form("token", "tok", "device-id", "dev1", "muc", muc)})
		if err != nil {
			t.Errorf("register-push-fcm for channel %q: %v", muc, err)
		}
	}
}

// What nodeprep prohibits (RFC 3920 Appendix A.5: ASCII and non-ASCII
// spaces, which NFKC makes ASCII ones, private use, the bidi and
// display-changing format characters) is no account: a space in
// particular is what a registration's Account splits the account from
// the channel at (p2Fingerprints; fcm/apns strings.Cut(n.Account, " ")),
// so a Tigase registration from "a b@example.org" would push with
// account "a" and channel "b@example.org".
func TestAccountOfRefusesWhatNodeprepProhibits(t *testing.T) {
	for _, from := range []string{
		"a b@example.org/r",
		"a\u00a0b@example.org/r", // NO-BREAK SPACE: NFKC makes it " "
		"a\u3000b@example.org/r", // IDEOGRAPHIC SPACE
		"ab\u202e@example.org/r", // RIGHT-TO-LEFT OVERRIDE (C.8)
		"ab\ue000@example.org/r", // private use (C.3)
	} {
		if a, err := accountOf(from); err == nil {
			t.Errorf("accountOf(%q) = %q, want refused as nodeprep refuses it", from, a.Bare)
		}
	}
}
