package adhoc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"mellium.im/xmpp/stanza"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/registry"
)

// calls is a Registrar that records each call as one line: the method,
// the app and what identifies the device.
type calls struct {
	got []string
	err error
}

func (c *calls) answer(line string) (registry.Registration, error) {
	c.got = append(c.got, line)
	return registry.Registration{Node: "node1", Secret: "secret1"}, c.err
}

func (c *calls) Register(_ context.Context, _ appserver.Caller, typ, node, token string) (registry.Registration, error) {
	return c.answer(fmt.Sprintf("Register %s %s %s", typ, node, token))
}

func (c *calls) RegisterDevice(_ context.Context, app string, a appserver.Account, device, channel, token string) (registry.Registration, error) {
	return c.answer(fmt.Sprintf("RegisterDevice %s %s %s %q %s", app, a.Bare, device, channel, token))
}

func (c *calls) UnregisterDevice(_ context.Context, app string, a appserver.Account, device, channel string) (registry.Registration, error) {
	return c.answer(fmt.Sprintf("UnregisterDevice %s %s %s %q", app, a.Bare, device, channel))
}

func (c *calls) RegisterTigase(_ context.Context, app string, a appserver.Account, token string) (registry.Registration, error) {
	return c.answer(fmt.Sprintf("RegisterTigase %s %s %s", app, a.Bare, token))
}

func (c *calls) UnregisterTigase(_ context.Context, app string, a appserver.Account, token string) (registry.Registration, error) {
	return c.answer(fmt.Sprintf("UnregisterTigase %s %s %s", app, a.Bare, token))
}

func (c *calls) Unregister(_ context.Context, _ appserver.Caller, typ, node string) (registry.Registration, error) {
	return c.answer(fmt.Sprintf("Unregister %s %s", typ, node))
}

// Each command reaches the registrar's method for it, in the app its
// dialect is configured for: an unregistration that reached a register
// method, or another app, would leave the device registered and pushed
// to; a registration that reached an unregister method would remove it.
// v1 commands without a type take the default app. The answer carries
// the status and fields each client reads: mod_push_appserver's
// "complete" for v1 (Monal matches it exactly), register-device's node,
// features and max-payload-size (Siskin), p2's bare completed
// unregistration.
func TestCommandsReachTheirMethod(t *testing.T) {
	const from = "juliet@example.org/phone"
	opts := Options{
		V1: true, DefaultApp: "default-app", FCMApp: "fcm-app", APNSApp: "apns-app",
		TigaseProviders: map[string]string{"tigase:messenger:apns:1": "siskin-app"}, MaxPayloadSize: 3000,
	}
	for _, tc := range []struct {
		cmd    *Command
		call   string
		status string
		fields map[string][]string // the answer's fields, nil for no form
	}{
		{&Command{Node: V1Register, Form: form("type", "fcm-app", "node", "n1", "token", "t1")},
			"Register fcm-app n1 t1", "complete", map[string][]string{"jid": {"push.example.org"}, "node": {"node1"}, "secret": {"secret1"}}},
		{&Command{Node: V1Register, Form: form("node", "n1", "token", "t1")},
			"Register default-app n1 t1", "complete", map[string][]string{"jid": {"push.example.org"}, "node": {"node1"}, "secret": {"secret1"}}},
		{&Command{Node: V1Unregister, Form: form("type", "fcm-app", "node", "n1")},
			"Unregister fcm-app n1", "complete", map[string][]string{"jid": {"push.example.org"}, "node": {"node1"}}},
		{&Command{Node: V1Unregister, Form: form("node", "n1")},
			"Unregister default-app n1", "complete", map[string][]string{"jid": {"push.example.org"}, "node": {"node1"}}},
		{&Command{Node: RegisterFCM, Form: form("token", "t1", "android-id", "d1", "muc", "room@conference.example.org")},
			`RegisterDevice fcm-app juliet@example.org d1 "room@conference.example.org" t1`, "completed",
			map[string][]string{"jid": {"push.example.org"}, "node": {"node1"}, "secret": {"secret1"}}},
		{&Command{Node: RegisterAPNS, Form: form("token", "t1", "android-id", "d1")},
			`RegisterDevice apns-app juliet@example.org d1 "" t1`, "completed",
			map[string][]string{"jid": {"push.example.org"}, "node": {"node1"}, "secret": {"secret1"}}},
		{&Command{Node: UnregisterFCM, Form: form("android-id", "d1", "channel", "room@conference.example.org")},
			`UnregisterDevice fcm-app juliet@example.org d1 "room@conference.example.org"`, "completed", nil},
		{&Command{Node: UnregisterAPNS, Form: form("device-id", "d1")},
			`UnregisterDevice apns-app juliet@example.org d1 ""`, "completed", nil},
		{&Command{Node: RegisterDevice, Form: form("provider", "tigase:messenger:apns:1", "device-token", "t1")},
			"RegisterTigase siskin-app juliet@example.org t1", "completed",
			map[string][]string{"node": {"node1"}, "features": TigaseFeatures, "max-payload-size": {"3000"}}},
		{&Command{Node: UnregisterDevice, Form: form("provider", "tigase:messenger:apns:1", "device-token", "t1")},
			"UnregisterTigase siskin-app juliet@example.org t1", "completed", nil},
	} {
		t.Run(tc.cmd.Node+" "+tc.call, func(t *testing.T) {
			reg := &calls{}
			res, err := New(reg, opts).Execute(context.Background(), from, "push.example.org", tc.cmd)
			if err != nil {
				t.Fatal(err)
			}
			if len(reg.got) != 1 || reg.got[0] != tc.call {
				t.Fatalf("registrar called %q, want %q", reg.got, tc.call)
			}
			if res.Status != tc.status || res.Node != tc.cmd.Node {
				t.Errorf("answer %s status %q, want %s %q", res.Node, res.Status, tc.cmd.Node, tc.status)
			}
			if tc.fields == nil {
				if res.Form != nil {
					t.Errorf("answer carries a form: %+v", res.Form)
				}
				return
			}
			if res.Form == nil {
				t.Fatalf("answer without a form, want %v", tc.fields)
			}
			got := map[string][]string{}
			for _, f := range res.Form.Fields {
				got[f.Var] = f.Values
			}
			if len(got) != len(tc.fields) {
				t.Errorf("answer fields %v, want %v", got, tc.fields)
			}
			for k, v := range tc.fields {
				if !slices.Equal(got[k], v) {
					t.Errorf("answer field %s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
	// Without a payload size configured, register-device names none.
	o := opts
	o.MaxPayloadSize = 0
	res, err := New(&calls{}, o).Execute(context.Background(), from, "push.example.org",
		&Command{Node: RegisterDevice, Form: form("provider", "tigase:messenger:apns:1", "device-token", "t1")})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := res.Form.Value("max-payload-size"); ok {
		t.Errorf("max-payload-size answered without one configured: %+v", res.Form)
	}
}

// A command missing what identifies the device (v1's token, p2's token,
// Tigase's provider) is refused as a bad request without reaching the
// registrar.
func TestCommandsMissingFieldsRefused(t *testing.T) {
	opts := Options{V1: true, DefaultApp: "default-app", FCMApp: "fcm-app",
		TigaseProviders: map[string]string{"tigase:messenger:apns:1": "siskin-app"}}
	for _, cmd := range []*Command{
		{Node: V1Register, Form: form("type", "fcm-app", "node", "n1")},
		{Node: V1Register, Form: form("type", "fcm-app", "token", "t1")},
		{Node: V1Unregister, Form: form("type", "fcm-app")},
		{Node: RegisterFCM, Form: form("android-id", "d1")},
		{Node: RegisterFCM, Form: form("token", "t1")},
		{Node: RegisterDevice, Form: form("device-token", "t1")},
		{Node: RegisterDevice, Form: form("provider", "tigase:messenger:apns:1")},
		{Node: RegisterDevice, Form: form("provider", "other", "device-token", "t1")},
	} {
		reg := &calls{}
		_, err := New(reg, opts).Execute(context.Background(), "juliet@example.org/phone", "push.example.org", cmd)
		var se stanza.Error
		if !errors.As(err, &se) || se.Condition != stanza.BadRequest {
			t.Errorf("%s %+v: %v, want bad-request", cmd.Node, cmd.Form.Fields, err)
		}
		if len(reg.got) != 0 {
			t.Errorf("%s %+v reached the registrar: %q", cmd.Node, cmd.Form.Fields, reg.got)
		}
	}
}

// A change refused because the registration belongs to another account
// is answered auth/forbidden: the client must not retry it as it would
// a wait error, nor take it for a malformed request.
func TestForbiddenAnsweredAuth(t *testing.T) {
	reg := &calls{err: fmt.Errorf("%w: the node is registered by another account", appserver.ErrForbidden)}
	_, err := New(reg, Options{V1: true}).Execute(context.Background(), "juliet@example.org/phone", "push.example.org",
		&Command{Node: V1Register, Form: form("type", "fcm", "node", "n1", "token", "t1")})
	var se stanza.Error
	if !errors.As(err, &se) || se.Type != stanza.Auth || se.Condition != stanza.Forbidden {
		t.Fatalf("Execute = %v, want auth/forbidden", err)
	}
}

// A localpart PRECIS refuses but Prosody's nodeprep takes is folded in
// case as nodeprep folds it: the same account in any letter case is one
// account, whose registrations it may change, and not a stranger's.
func TestNodeprepLocalpartFoldedInCase(t *testing.T) {
	a, err := accountOf("€Uro@Example.ORG/phone")
	if err != nil {
		t.Fatal(err)
	}
	b, err := accountOf("€uro@example.org/tablet")
	if err != nil {
		t.Fatal(err)
	}
	if a != b || a.Bare != "€uro@example.org" {
		t.Errorf("accounts %+v and %+v, want both €uro@example.org", a, b)
	}
}

// p2's channel is a group chat's bare JID: one with a resource (an
// occupant's nickname) is refused, not taken for the room.
func TestChannelWithResourceRefused(t *testing.T) {
	for _, v := range []string{"room@conference.example.org/nick", "conference.example.org/x"} {
		if c, err := channelOf(v); err == nil {
			t.Errorf("channelOf(%q) = %q, want an error", v, c)
		}
	}
	reg := &calls{}
	_, err := New(reg, Options{FCMApp: "fcm-app"}).Execute(context.Background(), "juliet@example.org/phone", "push.example.org",
		&Command{Node: RegisterFCM, Form: form("token", "t1", "android-id", "d1", "muc", "room@conference.example.org/nick")})
	var se stanza.Error
	if !errors.As(err, &se) || se.Condition != stanza.BadRequest || len(reg.got) != 0 {
		t.Errorf("registration for a channel with a resource: %v, registrar %q; want bad-request and no call", err, reg.got)
	}
}

// A dialect without its app configured offers none of its commands and
// runs none: register-push-apns without an APNS app would otherwise be
// listed to clients and register into no app.
func TestCommandsOffOffered(t *testing.T) {
	cmds := New(&calls{}, Options{FCMApp: "fcm-app"})
	for _, it := range cmds.Items() {
		if it.Node != RegisterFCM && it.Node != UnregisterFCM {
			t.Errorf("listed %s with only an FCM app", it.Node)
		}
	}
	for _, node := range []string{RegisterAPNS, UnregisterAPNS, V1Register, RegisterDevice, RegisterWebPush} {
		reg := &calls{}
		_, err := New(reg, Options{FCMApp: "fcm-app"}).Execute(context.Background(), "juliet@example.org/phone", "push.example.org",
			&Command{Node: node, Form: form("token", "t1", "android-id", "d1", "type", "fcm-app", "node", "n1",
				"provider", "tigase:messenger:apns:1", "device-token", "t1", "device-id", "d1", "subscription", "{}")})
		var se stanza.Error
		if !errors.As(err, &se) || se.Condition != stanza.ItemNotFound || len(reg.got) != 0 {
			t.Errorf("%s without its app: %v, registrar %q; want item-not-found and no call", node, err, reg.got)
		}
	}
}
