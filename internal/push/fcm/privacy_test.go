package fcm_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/push-appserver/push-appserver/internal/push"
)

// TestPlainPushData guards what Google learns from a push that is not
// encrypted: with include_summary off, the node and, for the registrations
// whose clients need it, the account, and nothing of the message. The
// account goes in every push, encrypted or not: Tigase's Android client
// (MyFirebaseMessagingService in tigase/stork) connects the account that
// data "account" names, a bare JID, and reads nothing else; Conversations
// (PushMessageReceiver) wakes the account whose p2 fingerprint it is.
func TestPlainPushData(t *testing.T) {
	m, o := setup(t)
	b := newBackend(t, o)
	sum := &push.Summary{MessageCount: 7, LastMessageSender: "romeo@montague.example/balcony", LastMessageBody: "meet me at the vault", HasLastMessageBody: true}
	for _, account := range []string{"", "juliet@capulet.example", "91065e9185829f3db3c007e46cc2fb81790039ba 423e7be35d33ee516d9894ee41b2d061196d7f3a"} {
		for _, prio := range []push.Priority{push.PriorityHigh, push.PrioritySilent} {
			if err := b.Send(context.Background(), push.Notification{App: "fcm", Node: "n1", Token: token, Priority: prio, Summary: sum, Account: account}); err != nil {
				t.Fatalf("%q %s: %v", account, prio, err)
			}
		}
	}
	reqs := m.Requests()
	if len(reqs) != 6 {
		t.Fatalf("%d requests", len(reqs))
	}
	want := []map[string]any{
		{"node": "n1"},
		{"node": "n1", "account": "juliet@capulet.example"},
		{"node": "n1", "account": "91065e9185829f3db3c007e46cc2fb81790039ba", "channel": "423e7be35d33ee516d9894ee41b2d061196d7f3a"},
	}
	for i, r := range reqs {
		if data := r.Message["data"]; !reflect.DeepEqual(data, want[i/2]) {
			t.Errorf("push %d: data %v, want %v", i, data, want[i/2])
		}
	}
}
