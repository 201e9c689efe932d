package appserver

import (
	"testing"

	"github.com/push-appserver/push-appserver/internal/push"
)

// TestRedeliveryOfNodeRegisteredAfresh guards a device's wait when its
// node was registered afresh (another secret) after an alert to the old
// registration was kept: the next push kept, checked against the new
// secret, is the one that waits, even a silent one. The alert that
// waited would never go out (an attempt drops a push checked against a
// secret the registration no longer has), so keeping it for its urgency
// would leave the new registration's device without a push.
func TestRedeliveryOfNodeRegisteredAfresh(t *testing.T) {
	r, c := newTestRedeliveries()
	key := redeliveryKey{node: "n1"}
	alert := push.Notification{App: "apns", Node: "n1", Priority: push.PriorityHigh, Summary: &push.Summary{LastMessageBody: "hi", HasLastMessageBody: true}}
	r.keepChecked(key, alert, "old-secret", nil)
	r.keepChecked(key, push.Notification{App: "apns", Node: "n1", Priority: push.PrioritySilent}, "new-secret", nil)
	c.Advance(redeliveryMaxWait)
	got := r.due(10)
	if len(got) != 1 {
		t.Fatalf("%d attempts due, want 1", len(got))
	}
	if a := got[0]; a.secret != "new-secret" || !a.checked || a.n.Priority != push.PrioritySilent {
		t.Fatalf("attempt with secret %q (checked %v), priority %s; want the push checked against the new secret", a.secret, a.checked, a.n.Priority)
	}
	// The same registration's silent push does not replace its alert.
	r.done(got[0], redeliverLater, 0)
	r.keepChecked(key, alert, "new-secret", nil)
	r.keepChecked(key, push.Notification{App: "apns", Node: "n1", Priority: push.PrioritySilent}, "new-secret", nil)
	c.Advance(redeliveryMaxWait)
	if got := r.due(10); len(got) != 1 || got[0].n.Priority != push.PriorityHigh {
		t.Fatalf("attempts %+v, want the alert", got)
	}
}
