package adhoc_test

import (
	"context"
	"encoding/xml"
	"strings"
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
	const owner = "juliet@example.org/phone"
	field := func(v, val string) string { return "<field var='" + v + "'><value>" + val + "</value></field>" }
	cmd := func(node, fields string) string {
		return "<command xmlns='http://jabber.org/protocol/commands' node='" + node + "' action='execute'><x xmlns='jabber:x:data' type='submit'>" + fields + "</x></command>"
	}
	victim := &adhoc.Command{Node: adhoc.V1Register, Form: &dataform.Form{Type: "submit", Fields: []dataform.Field{
		{Var: "type", Values: []string{"apns"}}, {Var: "node", Values: []string{"victim"}}, {Var: "token", Values: []string{"ab12"}}}}}
	f.Add("romeo@example.org/x", cmd(adhoc.V1Register, field("type", "apns")+field("node", "victim")+field("token", "cd34")))
	f.Add("romeo@example.org/x", cmd(adhoc.V1Unregister, field("type", "apns")+field("node", "victim")))
	f.Add("juliet@example.org/x", cmd(adhoc.V1Register, field("type", "apns")+field("node", "victim")+field("token", "cd34")+field("token", "x")))
	f.Add("juliet@example.org/x", cmd(adhoc.V1Register, field("type", "nope")+field("node", "victim")+field("token", "cd34")))
	f.Add("JULIET@example.org/x", cmd(adhoc.V1Unregister, field("type", "fcm")+field("node", "victim")))
	f.Add("juliet@example.org/x", cmd(adhoc.RegisterAPNS, field("token", "ab12")+field("device-id", "victim")))
	f.Add("juliet@example.org/x", cmd(adhoc.RegisterDevice, field("provider", "tigase:messenger:apns:1")+field("device-token", "ab12")))
	f.Add("juliet@example.org/x", cmd(adhoc.UnregisterDevice, field("provider", "tigase:messenger:apns:1")+field("device-token", "ab12")))
	f.Fuzz(func(t *testing.T, from, in string) {
		ctx := context.Background()
		res, err := cmds.Execute(ctx, owner, "push.example.net", victim)
		if err != nil {
			t.Fatalf("victim: %v", err)
		}
		secret, _ := res.Form.Value("secret")
		var c adhoc.Command
		if xml.Unmarshal([]byte(in), &c) != nil {
			return
		}
		if _, err = cmds.Execute(ctx, from, "push.example.net", &c); err == nil {
			return
		}
		if perr := svc.Push(ctx, appserver.PushRequest{Node: "victim", Secret: secret}); perr != nil {
			t.Fatalf("%s %q answered %v, yet the victim no longer pushes: %v", from, in, err, perr)
		}
		res, rerr := cmds.Execute(ctx, owner, "push.example.net", victim)
		if rerr != nil {
			t.Fatalf("%s %q answered %v; re-registering the victim: %v", from, in, err, rerr)
		}
		if s, _ := res.Form.Value("secret"); s != secret {
			t.Fatalf("%s %q answered %v, yet the victim's registration changed", from, in, err)
		}
		_ = strings.TrimSpace
	})
}

// FuzzCommandFieldsErrorChangesNothing is the same check with the form
// built from fuzzed field values, so that the fuzzer reaches the core
// rather than the XML syntax.
func FuzzCommandFieldsErrorChangesNothing(f *testing.F) {
	svc := logcore.New(f, appserver.Options{})
	cmds := adhoc.New(svc, adhoc.Options{V1: true, DefaultApp: "apns", FCMApp: "fcm", APNSApp: "apns",
		TigaseProviders: map[string]string{"p": "apns"}, WebPushApp: "fcm"})
	const owner = "juliet@example.org/phone"
	victim := &adhoc.Command{Node: adhoc.V1Register, Form: &dataform.Form{Type: "submit", Fields: []dataform.Field{
		{Var: "type", Values: []string{"apns"}}, {Var: "node", Values: []string{"victim"}}, {Var: "token", Values: []string{"ab12"}}}}}
	nodes := []string{adhoc.V1Register, adhoc.V1Unregister, adhoc.RegisterFCM, adhoc.RegisterAPNS, adhoc.UnregisterFCM, adhoc.UnregisterAPNS, adhoc.RegisterDevice, adhoc.UnregisterDevice, adhoc.RegisterWebPush}
	f.Add("romeo@example.org/x", uint8(0), "apns", "victim", "cd34", "secret", "x")
	f.Add("juliet@example.org/x", uint8(1), "fcm", "victim", "", "", "")
	f.Add("Juliet@Example.org/x", uint8(1), "apns", "victim", "", "muc", "a@b")
	f.Add("juliet@example.org/x", uint8(3), "", "", "ab12", "device-id", "victim")
	f.Add("juliet@example.org/x", uint8(7), "", "", "", "provider", "p")
	f.Add("juliet@example.org/x", uint8(0), "apns", "victim", "zz", "", "")
	f.Fuzz(func(t *testing.T, from string, which uint8, typ, node, token, xvar, xval string) {
		ctx := context.Background()
		res, err := cmds.Execute(ctx, owner, "push.example.net", victim)
		if err != nil {
			t.Fatalf("victim: %v", err)
		}
		secret, _ := res.Form.Value("secret")
		c := &adhoc.Command{Node: nodes[int(which)%len(nodes)], Form: &dataform.Form{Type: "submit", Fields: []dataform.Field{
			{Var: "type", Values: []string{typ}}, {Var: "node", Values: []string{node}}, {Var: "token", Values: []string{token}},
			{Var: "device-token", Values: []string{token}}, {Var: xvar, Values: []string{xval}}}}}
		if _, err = cmds.Execute(ctx, from, "push.example.net", c); err == nil {
			return
		}
		if perr := svc.Push(ctx, appserver.PushRequest{Node: "victim", Secret: secret}); perr != nil {
			t.Fatalf("%s %+v answered %v, yet the victim no longer pushes: %v", from, c, err, perr)
		}
		res, rerr := cmds.Execute(ctx, owner, "push.example.net", victim)
		if rerr != nil {
			t.Fatalf("%s %+v answered %v; re-registering the victim: %v", from, c, err, rerr)
		}
		if s, _ := res.Form.Value("secret"); s != secret {
			t.Fatalf("%s %+v answered %v, yet the victim's registration changed", from, c, err)
		}
	})
}
