package e2e_test

import (
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
	"github.com/push-appserver/push-appserver/internal/xmpp/adhoc"
	"github.com/push-appserver/push-appserver/internal/xmpp/component"
)

// Siskin IM's path through Prosody: register-device with its provider
// (SiskinPushNotificationsModule in tigase/siskin-im), then an enable with
// the node alone and no publish-options, then a message.
func TestProsodySiskinRegisterDevice(t *testing.T) {
	rec := &recorder{}
	s := startStackWithApps(t, map[string]push.Backend{"apns": rec, "fcm": rec}, func(o *component.Options) {
		o.Commands.TigaseProviders = map[string]string{"tigase:messenger:apns:1": "apns"}
		o.Commands.MaxPayloadSize = 3072
	})
	s.backend = rec
	alice := login(t, s.xmpp.C2SAddr, "alice", s.xmpp.Domain, "alice-pw")
	res, err := alice.command(s.xmpp.ComponentJID, adhoc.RegisterDevice, map[string]string{"provider": "tigase:messenger:apns:1", "device-token": "a1b2c3"})
	if err != nil {
		t.Fatal(err)
	}
	if res["status"] != "completed" || len(res["node"]) != len("tigase-")+64 || res["max-payload-size"] != "3072" {
		t.Fatalf("register-device answered %v", res)
	}
	alice.enablePushWith(s.xmpp.ComponentJID, res["node"], nil)
	alice.close()
	bob := login(t, s.xmpp.C2SAddr, "bob", s.xmpp.Domain, "bob-pw")
	bob.sendChat("alice@"+s.xmpp.Domain, "Hello Alice")
	bob.close()
	got := s.waitPushes(t, "a1b2c3", 1)
	if got[0].App != "apns" || got[0].Node != res["node"] {
		t.Fatalf("push %+v", got[0])
	}
}

// p2's per-channel registration through Prosody: Conversations registers
// a group chat with the muc field and enables push for it with its own
// node and secret.
func TestProsodyConversationsChannelRegistration(t *testing.T) {
	s := startStack(t)
	alice := login(t, s.xmpp.C2SAddr, "alice", s.xmpp.Domain, "alice-pw")
	own, err := alice.command(s.xmpp.ComponentJID, adhoc.RegisterFCM, map[string]string{"token": "fcm-chan", "android-id": "a1"})
	if err != nil {
		t.Fatal(err)
	}
	room, err := alice.command(s.xmpp.ComponentJID, adhoc.RegisterFCM, map[string]string{"token": "fcm-chan", "android-id": "a1", "muc": "room@conference." + s.xmpp.Domain})
	if err != nil {
		t.Fatal(err)
	}
	if room["node"] == own["node"] || room["secret"] == own["secret"] {
		t.Fatalf("the channel got the device's node: %v %v", own, room)
	}
	s.offlineMessage(t, alice, room["node"], room["secret"])
	got := s.waitPushes(t, "fcm-chan", 1)
	if got[0].Node != room["node"] {
		t.Fatalf("push for node %s, want the channel's %s", got[0].Node, room["node"])
	}
}

// fpush's tokenless dialect, as Monal uses it, through Prosody: the client
// enables push with its raw APNS token as the node and pushModule in the
// publish-options (fpush: parse_token_and_module_id in
// fpush/src/xmpp/message_loop.rs); Prosody's mod_cloud_notify copies the
// form into every publish. Once APNS declares the token dead, it is
// blocked: the user's server hears item-not-found and APNS is not asked
// again.
func TestProsodyTokenlessToAPNS(t *testing.T) {
	mock, backend := apnsStack(t)
	s := startStackWithApps(t, map[string]push.Backend{"apns": backend, "fcm": &recorder{}}, func(o *component.Options) {
		o.Dialects = component.Dialects{Tokenless: true, TokenlessApp: "fcm"}
	})
	token := strings.Repeat("5eed", 16)
	alice := login(t, s.xmpp.C2SAddr, "alice", s.xmpp.Domain, "alice-pw")
	// An extra field, as ejabberd and Siskin add: ignored, not refused
	// (fpush refuses it: fpush issue #20).
	alice.enablePushWith(s.xmpp.ComponentJID, token, map[string]string{"pushModule": "apns", "x-extra": "1"})
	alice.close()
	bob := login(t, s.xmpp.C2SAddr, "bob", s.xmpp.Domain, "bob-pw")
	to := "alice@" + s.xmpp.Domain
	bob.sendChat(to, "hello")
	waitFor(t, func() bool { return mock.Accepted() == 1 })
	if r := mock.Requests()[0]; r.Token != token || r.PushType != "alert" {
		t.Fatalf("APNS got %+v", r)
	}

	mock.FailToken(token, apnsmock.Fault{Status: 410, Reason: "Unregistered", Timestamp: time.Now()})
	bob.sendChat(to, "still there?")
	waitFor(t, func() bool { return mock.Total() == 2 })
	waitFor(t, func() bool {
		_, err := s.store.GetBlockedToken(t.Context(), "apns", token)
		return err == nil
	})
	waitFor(t, func() bool { return strings.Count(s.xmpp.Log(), "item-not-found") >= 1 })
	bob.sendChat(to, "third")
	waitFor(t, func() bool { return strings.Count(s.xmpp.Log(), "item-not-found") >= 2 })
	if n := mock.Total(); n != 2 {
		t.Fatalf("APNS asked %d times, want 2: the blocked token went out again", n)
	}
}

// MongooseIM's dialect through Prosody: the client's enable form carries
// device_id and service (and mode, silent, topic: MongooseIM's
// mod_push_service_mongoosepush documentation), copied into every publish;
// the push goes to that token through the FCM app.
func TestProsodyPublishOptionsTokenToFCM(t *testing.T) {
	mock, backend := fcmStack(t)
	s := startStackWithApps(t, map[string]push.Backend{"apns": &recorder{}, "fcm": backend}, func(o *component.Options) {
		o.Dialects = component.Dialects{PublishOptionsTokens: true, PublishOptionsApps: map[string]string{"fcm:prod": "fcm"}}
	})
	alice := login(t, s.xmpp.C2SAddr, "alice", s.xmpp.Domain, "alice-pw")
	alice.enablePushWith(s.xmpp.ComponentJID, "mongoose-node", map[string]string{
		"device_id": "fcm:mongoose-device", "service": "fcm", "mode": "prod", "silent": "false", "topic": "im.example.app",
	})
	alice.close()
	bob := login(t, s.xmpp.C2SAddr, "bob", s.xmpp.Domain, "bob-pw")
	bob.sendChat("alice@"+s.xmpp.Domain, "hello")
	waitFor(t, func() bool { return mock.Accepted() == 1 })
	if m := mock.Requests()[0].Message; m["token"] != "fcm:mongoose-device" {
		t.Fatalf("FCM got %v", m)
	}
}
