package e2e_test

import (
	"crypto/sha1"
	"encoding/hex"
	"io"
	"log/slog"
	"testing"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/fcm"
	"github.com/push-appserver/push-appserver/internal/testutil/fcmmock"
	"github.com/push-appserver/push-appserver/internal/xmpp/adhoc"
)

// TestProsodyConversationsToFCM: Conversations' register-push-fcm through
// Prosody, then an offline message, reaches the FCM mock as a high-priority
// data message for the registered token, with the account's fingerprint
// as p2 sends it: sha1 hex of bare JID "\0" android id. Conversations
// (PushMessageReceiver) drops a push without it ("received push w/o
// account"), and wakes the account whose getAccountFingerprint it is.
func TestProsodyConversationsToFCM(t *testing.T) {
	mock, backend := fcmStack(t)
	s := startStackWithApps(t, map[string]push.Backend{"fcm": backend, "apns": &recorder{}})
	alice := login(t, s.xmpp.C2SAddr, "alice", s.xmpp.Domain, "alice-pw")
	res, err := alice.command(s.xmpp.ComponentJID, adhoc.RegisterFCM, map[string]string{"token": "fcm:device-token-1", "android-id": "android-1"})
	if err != nil {
		t.Fatal(err)
	}
	s.offlineMessage(t, alice, res["node"], res["secret"])
	waitFor(t, func() bool { return mock.Accepted() == 1 })
	m := mock.Requests()[0].Message
	if m["token"] != "fcm:device-token-1" || m["android"].(map[string]any)["priority"] != "HIGH" {
		t.Fatalf("FCM got %v", m)
	}
	sum := sha1.Sum([]byte("alice@" + s.xmpp.Domain + "\x00android-1"))
	if data, _ := m["data"].(map[string]any); data["account"] != hex.EncodeToString(sum[:]) {
		t.Fatalf("FCM data %v: not the account's fingerprint, Conversations drops this push", data)
	}
}

// fcmStack starts the FCM mock and a backend for it.
func fcmStack(t *testing.T) (*fcmmock.Server, *fcm.Backend) {
	t.Helper()
	mock, err := fcmmock.New("conversations-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mock.Close)
	sa, err := mock.WriteServiceAccount(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	backend, err := fcm.New(fcm.Options{ServiceAccountFile: sa, Endpoint: mock.URL, CAPath: mock.CADir},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return mock, backend
}
