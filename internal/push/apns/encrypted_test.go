package apns_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/push-appserver/push-appserver/internal/push"
)

// An encrypted notification reaches APNS in the shape Siskin's
// notification extension reads (NotificationService.swift in
// tigase/siskin-im: userInfo "account", "encrypted" and "iv", decrypted
// with the key it keeps per account), as a mutable-content alert so that
// iOS runs the extension.
func TestEncryptedPayload(t *testing.T) {
	m, o := tokenSetup(t)
	// Even with mutable_content off for plain pushes: without it the
	// extension never runs and the user sees no message.
	o.MutableContent = false
	b := newBackend(t, o)
	enc := &push.Encrypted{Payload: "c2VjcmV0IG1lc3NhZ2U=", IV: "MTIzNDU2Nzg5MDEy"}
	for _, prio := range []push.Priority{push.PriorityHigh, push.PrioritySilent} {
		// The account as the client registered it, here with a channel
		// after it: the payload names the account alone.
		err := b.Send(context.Background(), push.Notification{App: "apns", Node: "n", Token: token, Priority: prio, Encrypted: enc, Account: "juliet@example.org chan-7"})
		if err != nil {
			t.Fatalf("%s: %v", prio, err)
		}
	}
	reqs := m.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests", len(reqs))
	}
	for i, r := range reqs {
		p := r.Payload
		if p["encrypted"] != enc.Payload || p["iv"] != enc.IV || p["account"] != "juliet@example.org" {
			t.Fatalf("push %d payload %s", i, r.RawPayload)
		}
	}
	aps := reqs[0].Payload["aps"].(map[string]any)
	if reqs[0].PushType != "alert" || aps["mutable-content"] != float64(1) || aps["alert"] == nil {
		t.Fatalf("high encrypted push: %s %s", reqs[0].PushType, reqs[0].RawPayload)
	}
	if aps := reqs[1].Payload["aps"].(map[string]any); reqs[1].PushType != "background" || aps["content-available"] != float64(1) || aps["mutable-content"] != nil {
		t.Fatalf("silent encrypted push: %s %s", reqs[1].PushType, reqs[1].RawPayload)
	}
}

// A payload over Apple's 4 KiB is a clear error, and nothing is sent.
func TestEncryptedTooLarge(t *testing.T) {
	m, o := tokenSetup(t)
	b := newBackend(t, o)
	enc := &push.Encrypted{Payload: strings.Repeat("QUJD", 1100), IV: "MTIzNDU2Nzg5MDEy"}
	err := b.Send(context.Background(), push.Notification{App: "apns", Node: "n", Token: token, Priority: push.PriorityHigh, Encrypted: enc})
	if !errors.Is(err, push.ErrPayloadTooLarge) || push.IsTemporary(err) {
		t.Fatalf("4400-byte payload: %v, want ErrPayloadTooLarge", err)
	}
	if n := m.Total(); n != 0 {
		t.Fatalf("APNS got %d requests", n)
	}
}
