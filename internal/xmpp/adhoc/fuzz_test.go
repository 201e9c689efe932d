package adhoc_test

import (
	"context"
	"encoding/xml"
	"errors"
	"strings"
	"testing"
	"unicode"

	"mellium.im/xmpp/stanza"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/testutil/logcore"
	"github.com/push-appserver/push-appserver/internal/xmpp/adhoc"
)

// FuzzExecute runs arbitrary command elements from arbitrary senders
// through the real core: nothing panics, every answer is a completed
// command or a stanza error, and every node and secret answered works for
// a push.
func FuzzExecute(f *testing.F) {
	svc := logcore.New(f, appserver.Options{MaxRegistrationsPerDomain: 1000})
	cmds := adhoc.New(svc, adhoc.Options{V1: true, DefaultApp: "apns", FCMApp: "fcm", APNSApp: "apns"})

	const form = `<x xmlns='jabber:x:data' type='submit'>%s</x>`
	field := func(v, val string) string { return "<field var='" + v + "'><value>" + val + "</value></field>" }
	cmd := func(node, fields string) string {
		return "<command xmlns='http://jabber.org/protocol/commands' node='" + node + "' action='execute'>" +
			strings.Replace(form, "%s", fields, 1) + "</command>"
	}
	f.Add("juliet@example.org/phone", cmd("v1-register-push", field("type", "apns")+field("node", "n1")+field("token", "t1")))
	f.Add("juliet@example.org/phone", cmd("v1-unregister-push", field("type", "apns")+field("node", "n1")))
	f.Add("romeo@example.net/x", cmd("register-push-fcm", field("token", "t")+field("device-id", "d")))
	f.Add("romeo@example.net/x", cmd("register-push-apns", field("token", "t")+field("android-id", "d")))
	f.Add("example.net", cmd("v1-register-push", field("node", "a&#10;b")+field("token", "t")))
	f.Add("juliet@example.org/phone", "<command xmlns='http://jabber.org/protocol/commands' node='v1-register-push' action='next'/>")
	f.Fuzz(func(t *testing.T, from, in string) {
		var c adhoc.Command
		if err := xml.Unmarshal([]byte(in), &c); err != nil {
			return
		}
		ctx := context.Background()
		res, err := cmds.Execute(ctx, from, "push.example.net", &c)
		if err != nil {
			var se stanza.Error
			if !errors.As(err, &se) {
				t.Fatalf("not a stanza error: %v", err)
			}
			return
		}
		if res == nil || (res.Status != "completed" && res.Status != "complete") || res.Form == nil {
			t.Fatalf("answer %+v", res)
		}
		node, _ := res.Form.Value("node")
		if node == "" || strings.IndexFunc(node, unicode.IsControl) >= 0 {
			t.Fatalf("answered node %q", node)
		}
		if secret, ok := res.Form.Value("secret"); ok {
			if err := svc.Push(ctx, appserver.PushRequest{Node: node, Secret: secret}); err != nil {
				t.Fatalf("answered %s/%s does not push: %v", node, secret, err)
			}
		}
	})
}
