package adhoc_test

import (
	"context"
	"encoding/xml"
	"fmt"
	"testing"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/testutil/logcore"
	"github.com/push-appserver/push-appserver/internal/xmpp/adhoc"
	"github.com/push-appserver/push-appserver/internal/xmpp/dataform"
)

// FuzzCommandErrorChangesNothing: a victim device registered through
// v1-register-push; an arbitrary command from an arbitrary sender that is
// answered with an error leaves the victim's registration as it was.
func FuzzCommandErrorChangesNothing(f *testing.F) {
	svc := logcore.New(f, appserver.Options{AccountRegisterLimit: 1 << 30})
	cmds := adhoc.New(svc, adhoc.Options{V1: true, DefaultApp: "apns", FCMApp: "fcm", APNSApp: "apns",
		TigaseProviders: map[string]string{"tigase:messenger:apns:1": "apns"}})
	field := func(v, val string) string { return "<field var='" + v + "'><value>" + val + "</value></field>" }
	cmd := func(node, fields string) string {
		return "<command xmlns='http://jabber.org/protocol/commands' node='" + node + "' action='execute'><x xmlns='jabber:x:data' type='submit'>" + fields + "</x></command>"
	}
	f.Add("romeo@example.org/x", cmd(adhoc.V1Register, field("type", "apns")+field("node", "victim")+field("token", "cd34")))
	f.Add("romeo@example.org/x", cmd(adhoc.V1Unregister, field("type", "apns")+field("node", "victim")))
	f.Add("juliet@example.org/x", cmd(adhoc.V1Register, field("type", "apns")+field("node", "victim")+field("token", "cd34")+field("token", "x")))
	f.Add("juliet@example.org/x", cmd(adhoc.V1Register, field("type", "nope")+field("node", "victim")+field("token", "cd34")))
	f.Add("JULIET@example.org/x", cmd(adhoc.V1Unregister, field("type", "fcm")+field("node", "victim")))
	f.Add("juliet@example.org/x", cmd(adhoc.RegisterAPNS, field("token", "ab12")+field("device-id", "victim")))
	f.Add("juliet@example.org/x", cmd(adhoc.RegisterDevice, field("provider", "tigase:messenger:apns:1")+field("device-token", "ab12")))
	f.Add("juliet@example.org/x", cmd(adhoc.UnregisterDevice, field("provider", "tigase:messenger:apns:1")+field("device-token", "ab12")))
	f.Fuzz(func(t *testing.T, from, in string) {
		secret := registerVictim(t, cmds)
		var c adhoc.Command
		if xml.Unmarshal([]byte(in), &c) != nil {
			return
		}
		if _, err := cmds.Execute(context.Background(), from, "push.example.net", &c); err != nil {
			victimUnchanged(t, svc, cmds, secret, fmt.Sprintf("%s %q answered %v", from, in, err))
		}
	})
}

// FuzzCommandFieldsErrorChangesNothing is the same check with the form
// built from fuzzed field values, so that the fuzzer reaches the core
// rather than the XML syntax.
func FuzzCommandFieldsErrorChangesNothing(f *testing.F) {
	svc := logcore.New(f, appserver.Options{})
	cmds := adhoc.New(svc, adhoc.Options{V1: true, DefaultApp: "apns", FCMApp: "fcm", APNSApp: "apns",
		TigaseProviders: map[string]string{"p": "apns"}, WebPushApp: "fcm"})
	nodes := []string{adhoc.V1Register, adhoc.V1Unregister, adhoc.RegisterFCM, adhoc.RegisterAPNS, adhoc.UnregisterFCM, adhoc.UnregisterAPNS, adhoc.RegisterDevice, adhoc.UnregisterDevice, adhoc.RegisterWebPush}
	f.Add("romeo@example.org/x", uint8(0), "apns", "victim", "cd34", "secret", "x")
	f.Add("juliet@example.org/x", uint8(1), "fcm", "victim", "", "", "")
	f.Add("Juliet@Example.org/x", uint8(1), "apns", "victim", "", "muc", "a@b")
	f.Add("juliet@example.org/x", uint8(3), "", "", "ab12", "device-id", "victim")
	f.Add("juliet@example.org/x", uint8(7), "", "", "", "provider", "p")
	f.Add("juliet@example.org/x", uint8(0), "apns", "victim", "zz", "", "")
	f.Fuzz(func(t *testing.T, from string, which uint8, typ, node, token, xvar, xval string) {
		secret := registerVictim(t, cmds)
		c := &adhoc.Command{Node: nodes[int(which)%len(nodes)], Form: &dataform.Form{Type: "submit", Fields: []dataform.Field{
			{Var: "type", Values: []string{typ}}, {Var: "node", Values: []string{node}}, {Var: "token", Values: []string{token}},
			{Var: "device-token", Values: []string{token}}, {Var: xvar, Values: []string{xval}}}}}
		if _, err := cmds.Execute(context.Background(), from, "push.example.net", c); err != nil {
			victimUnchanged(t, svc, cmds, secret, fmt.Sprintf("%s %+v answered %v", from, c, err))
		}
	})
}

// victim is a device juliet registered through v1-register-push.
var victim = &adhoc.Command{Node: adhoc.V1Register, Form: &dataform.Form{Type: "submit", Fields: []dataform.Field{
	{Var: "type", Values: []string{"apns"}}, {Var: "node", Values: []string{"victim"}}, {Var: "token", Values: []string{"ab12"}}}}}

const victimOwner = "juliet@example.org/phone"

// registerVictim registers the victim (again) and returns its secret.
func registerVictim(t *testing.T, cmds *adhoc.Commands) string {
	t.Helper()
	res, err := cmds.Execute(context.Background(), victimOwner, "push.example.net", victim)
	if err != nil {
		t.Fatalf("victim: %v", err)
	}
	secret, _ := res.Form.Value("secret")
	return secret
}

// victimUnchanged fails t unless, after what (a command answered with an
// error), the victim still pushes with secret and keeps it when its
// owner registers it again.
func victimUnchanged(t *testing.T, svc *appserver.Service, cmds *adhoc.Commands, secret, what string) {
	t.Helper()
	if err := svc.Push(context.Background(), appserver.PushRequest{Node: "victim", Secret: secret}); err != nil {
		t.Fatalf("%s, yet the victim no longer pushes: %v", what, err)
	}
	if s := registerVictim(t, cmds); s != secret {
		t.Fatalf("%s, yet the victim's registration changed", what)
	}
}
