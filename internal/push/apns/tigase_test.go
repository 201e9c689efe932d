package apns_test

import (
	"context"
	"testing"

	"github.com/push-appserver/push-appserver/internal/push"
)

// A push to a Tigase register-device registration that the user's server
// did not encrypt carries what Siskin's notification extension reads of
// an unencrypted push (NotificationService.swift in tigase/siskin-im:
// userInfo "account", without which it shows the alert as it came, then
// "sender", "body" and "unread-messages"), the fields and names of a
// Tigase push component's APNs payload (Tigase Push Component,
// development guide, "Push Notification format"). The account is always
// there, the dialect's contract; sender, body and count only with
// include_summary, as in every other push. A background push stays
// exactly content-available, and a registration of another dialect gets
// none of these fields.
func TestTigasePlainPayload(t *testing.T) {
	sum := &push.Summary{MessageCount: 3, LastMessageSender: "romeo@example.net/balcony", LastMessageBody: "wherefore", HasLastMessageBody: true}
	for _, tc := range []struct {
		name    string
		include bool
		mutable bool
		n       push.Notification
		want    map[string]any // top-level fields beside aps; nil: absent
		alert   map[string]any // the alert, when the push is one
	}{
		{
			name: "consent", include: true, mutable: true,
			n:     push.Notification{Priority: push.PriorityHigh, Summary: sum, Account: "juliet@example.org", Tigase: true},
			want:  map[string]any{"account": "juliet@example.org", "sender": "romeo@example.net/balcony", "body": "wherefore", "unread-messages": float64(3)},
			alert: map[string]any{"title": "romeo@example.net/balcony", "body": "wherefore"},
		},
		{
			// The extension shows a notification of the account, not
			// the generic alert, and learns no message.
			name: "no consent", include: false,
			n:     push.Notification{Priority: push.PriorityHigh, Summary: sum, Account: "juliet@example.org", Tigase: true},
			want:  map[string]any{"account": "juliet@example.org", "sender": nil, "body": nil, "unread-messages": nil},
			alert: map[string]any{"title": "New Message", "body": "New Message"},
		},
		{
			// A placeholder body of the user's server is no message:
			// the alert keeps its configured text and no body goes.
			name: "call without body", include: true,
			n:     push.Notification{Priority: push.PriorityHigh, Summary: &push.Summary{MessageCount: 1, HasLastMessageBody: true}, Account: "juliet@example.org", Tigase: true},
			want:  map[string]any{"account": "juliet@example.org", "sender": nil, "body": nil, "unread-messages": float64(1)},
			alert: map[string]any{"title": "New Message", "body": "New Message"},
		},
		{
			name: "silent", include: true,
			n:    push.Notification{Priority: push.PrioritySilent, Summary: sum, Account: "juliet@example.org", Tigase: true},
			want: map[string]any{"account": nil, "sender": nil, "body": nil, "unread-messages": nil},
		},
		{
			// p2's fingerprints are no JID, and p2 reads none of this.
			name: "other dialect", include: true, mutable: true,
			n:     push.Notification{Priority: push.PriorityHigh, Summary: sum, Account: "0a1b2c"},
			want:  map[string]any{"account": nil, "sender": nil, "body": nil, "unread-messages": nil},
			alert: map[string]any{"title": "romeo@example.net/balcony", "body": "wherefore"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, o := tokenSetup(t)
			o.IncludeSummary, o.MutableContent = tc.include, tc.mutable
			b := newBackend(t, o)
			n := tc.n
			n.App, n.Node, n.Token = "apns", "tigase-n", token
			if err := b.Send(context.Background(), n); err != nil {
				t.Fatal(err)
			}
			reqs := m.Requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests", len(reqs))
			}
			r := reqs[0]
			for k, v := range tc.want {
				if got, ok := r.Payload[k]; v == nil && ok || v != nil && got != v {
					t.Errorf("%q = %v, want %v; payload %s", k, got, v, r.RawPayload)
				}
			}
			aps := r.Payload["aps"].(map[string]any)
			if tc.alert == nil {
				if r.PushType != "background" || len(aps) != 1 || len(r.Payload) != 1 {
					t.Fatalf("silent push %s %s", r.PushType, r.RawPayload)
				}
				return
			}
			alert, _ := aps["alert"].(map[string]any)
			for k, v := range tc.alert {
				if alert[k] != v {
					t.Errorf("alert %q = %v, want %v; payload %s", k, alert[k], v, r.RawPayload)
				}
			}
			// Without it iOS never runs the extension.
			if n.Tigase && aps["mutable-content"] != float64(1) {
				t.Errorf("no mutable-content: %s", r.RawPayload)
			}
		})
	}
}
