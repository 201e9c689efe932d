package admin_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/push-appserver/push-appserver/internal/admin"
	"github.com/push-appserver/push-appserver/internal/push"
)

// recorder is a backend that remembers what it was asked to send and
// refuses the tokens it is told to.
type recorder struct {
	sent    []push.Notification
	refuses string
}

func (r *recorder) Send(_ context.Context, n push.Notification) error {
	r.sent = append(r.sent, n)
	return nil
}

func (r *recorder) ValidateToken(token string) error {
	if token == r.refuses {
		return errors.New("not a device token of this service")
	}
	return nil
}

// A test push is meant to be seen: an app of priority auto sends it as
// an alert (high), not as a silent push that the device shows nothing of.
func TestSendTestAutoIsHigh(t *testing.T) {
	b := &recorder{}
	var out strings.Builder
	if err := admin.SendTest(context.Background(), &out, admin.TestPush{App: "ios", Backend: b, Priority: push.PriorityAuto, Token: "abcd"}); err != nil {
		t.Fatal(err)
	}
	if len(b.sent) != 1 || b.sent[0].Priority != push.PriorityHigh || b.sent[0].Token != "abcd" {
		t.Fatalf("sent %+v, want one push of priority high to abcd", b.sent)
	}
}

// A token the app's backend refuses is not sent to the push service:
// send-test says why and fails, as a registration of it would be refused.
func TestSendTestRefusedTokenNotSent(t *testing.T) {
	b := &recorder{refuses: "bad"}
	var out strings.Builder
	if err := admin.SendTest(context.Background(), &out, admin.TestPush{App: "ios", Backend: b, Priority: push.PriorityHigh, Token: "bad"}); err == nil {
		t.Fatalf("a refused token succeeded:\n%s", out.String())
	}
	if len(b.sent) != 0 || !strings.Contains(out.String(), "token refused before sending") {
		t.Fatalf("sent %d pushes to a refused token:\n%s", len(b.sent), out.String())
	}
}
