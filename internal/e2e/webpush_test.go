package e2e_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/webpush"
	"github.com/push-appserver/push-appserver/internal/testutil/webpushmock"
	"github.com/push-appserver/push-appserver/internal/xmpp/adhoc"
)

// TestProsodyWebPush: a web client registers its browser subscription
// with register-push-webpush through Prosody and enables push; an offline
// message makes Prosody publish, and the push arrives at the WebPush mock
// with a valid VAPID token and decrypts, with the browser's key, to the
// JSON a service worker reads.
func TestProsodyWebPush(t *testing.T) {
	mock, keyFile, pub := webpushmock.Start(t)
	backend, err := webpush.New(webpush.Options{
		VAPIDKeyFile: keyFile, VAPIDSubject: "mailto:ops@example.org", CAPath: mock.CADir,
		IncludeSummary: true, Collapse: true,
		// The mock listens on loopback, which the guard refuses by default.
		Guard: webpush.Guard{AllowPrivate: true, Ports: []int{mock.Port}},
	}, logger(t))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := mock.Subscribe(pub)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	s := startStackWithApps(t, map[string]push.Backend{"apns": rec, "fcm": rec, "webpush": backend})
	alice := login(t, s.xmpp.C2SAddr, "alice", s.xmpp.Domain, "alice-pw")
	res, err := alice.command(s.xmpp.ComponentJID, adhoc.RegisterWebPush, map[string]string{"device-id": "browser-1", "subscription": sub.JSON})
	if err != nil {
		t.Fatal(err)
	}
	s.offlineMessage(t, alice, res["node"], res["secret"])
	waitFor(t, func() bool { return mock.Accepted() == 1 })
	m := mock.Messages()[0]
	var got map[string]any
	if err := json.Unmarshal(m.Plaintext, &got); err != nil {
		t.Fatalf("payload %q: %v", m.Plaintext, err)
	}
	// mod_cloud_notify sends the count and, without
	// push_notification_with_body, a stand-in body; no sender.
	want := map[string]any{"node": res["node"], "message-count": 1.0, "last-message-body": "New Message!"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("payload %s, want %v", m.Plaintext, want)
	}
	if m.Header.Get("Urgency") != "high" || m.Header.Get("Topic") != webpush.DefaultTopic {
		t.Fatalf("headers %v", m.Header)
	}
}
