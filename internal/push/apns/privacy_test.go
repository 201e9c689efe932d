package apns_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/push-appserver/push-appserver/internal/push"
)

// TestPlainPushNamesNoAccount guards what Apple learns from a push that
// is not encrypted, for a registration that keeps its account's bare JID
// (Tigase register-device): nothing but the configured alert, or the bare
// wake-up of a silent push. Siskin reads "account" only to pick the key of
// an encrypted push (NotificationService.swift in tigase/siskin-im: a
// plain push with an account would be rebuilt from "sender" and "body",
// which we never send; without one the alert is shown as it came), and
// its app delegate does nothing with an account that comes without
// "unread-messages", "body" or ciphertext. With include_summary off,
// neither the sender, the body nor the count reach Apple, and the node
// (for a Tigase registration the only credential a publish needs) never
// does.
func TestPlainPushNamesNoAccount(t *testing.T) {
	m, o := tokenSetup(t)
	b := newBackend(t, o)
	const jid, node = "juliet@capulet.example", "tigase-0123456789abcdef"
	sum := &push.Summary{MessageCount: 7, LastMessageSender: "romeo@montague.example/balcony", LastMessageBody: "meet me at the vault", HasLastMessageBody: true}
	for _, prio := range []push.Priority{push.PriorityHigh, push.PrioritySilent} {
		if err := b.Send(context.Background(), push.Notification{App: "apns", Node: node, Token: token, Priority: prio, Summary: sum, Account: jid}); err != nil {
			t.Fatalf("%s: %v", prio, err)
		}
	}
	reqs := m.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests", len(reqs))
	}
	for _, r := range reqs {
		for _, leak := range []string{"juliet", "romeo", "vault", node, "message-count", `"account"`} {
			if bytes.Contains(r.RawPayload, []byte(leak)) {
				t.Errorf("%s push carries %q: %s", r.PushType, leak, r.RawPayload)
			}
		}
	}
	want := map[string]string{
		"alert":      `{"aps":{"alert":{"body":"New Message","title":"New Message"},"mutable-content":1,"sound":"default"}}`,
		"background": `{"aps":{"content-available":1}}`,
	}
	for _, r := range reqs {
		var got any
		if err := json.Unmarshal(r.RawPayload, &got); err != nil {
			t.Fatal(err)
		}
		canon, _ := json.Marshal(got)
		if string(canon) != want[r.PushType] {
			t.Errorf("%s push payload %s, want %s", r.PushType, canon, want[r.PushType])
		}
	}
}
