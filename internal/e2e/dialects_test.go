package e2e_test

import (
	"testing"

	"github.com/push-appserver/push-appserver/internal/push"
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
	alice := login(t, s.prosody.C2SAddr, "alice", s.prosody.Domain, "alice-pw")
	res, err := alice.command(s.prosody.ComponentJID, adhoc.RegisterDevice, map[string]string{"provider": "tigase:messenger:apns:1", "device-token": "a1b2c3"})
	if err != nil {
		t.Fatal(err)
	}
	if res["status"] != "completed" || len(res["node"]) != 64 || res["max-payload-size"] != "3072" {
		t.Fatalf("register-device answered %v", res)
	}
	alice.enablePushWith(s.prosody.ComponentJID, res["node"], nil)
	alice.close()
	bob := login(t, s.prosody.C2SAddr, "bob", s.prosody.Domain, "bob-pw")
	bob.sendChat("alice@"+s.prosody.Domain, "Hello Alice")
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
	alice := login(t, s.prosody.C2SAddr, "alice", s.prosody.Domain, "alice-pw")
	own, err := alice.command(s.prosody.ComponentJID, adhoc.RegisterFCM, map[string]string{"token": "fcm-chan", "android-id": "a1"})
	if err != nil {
		t.Fatal(err)
	}
	room, err := alice.command(s.prosody.ComponentJID, adhoc.RegisterFCM, map[string]string{"token": "fcm-chan", "android-id": "a1", "muc": "room@conference." + s.prosody.Domain})
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
