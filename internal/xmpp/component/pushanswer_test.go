package component

import (
	"errors"
	"fmt"
	"testing"

	"mellium.im/xmpp/stanza"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
)

// TestPushAnswer guards the error type each outcome of a push is
// answered with. Only a registration that is gone (an unknown node, a
// wrong secret, a dead token) is cancel: ejabberd ends the user's push
// session on the first error of any type but wait, and Prosody counts
// such errors towards disabling push, so everything that may pass (the
// push service's failure, a rate limit, a shutdown, an app not
// configured yet, one message too large) must be wait.
func TestPushAnswer(t *testing.T) {
	dead := &push.DeadTokenError{Reason: "Unregistered"}
	for _, tc := range []struct {
		name     string
		err      error
		wantType stanza.ErrorType
		wantCond stanza.Condition
	}{
		{"success", nil, "", ""},
		{"unknown node or wrong secret", appserver.ErrNotFound, stanza.Cancel, stanza.ItemNotFound},
		{"dead token", fmt.Errorf("%w: %w", appserver.ErrNotFound, dead), stanza.Cancel, stanza.ItemNotFound},
		{"dead token of a registration kept", fmt.Errorf("%w: %w", appserver.ErrPushFailed, dead), stanza.Wait, stanza.InternalServerError},
		{"push service failure", fmt.Errorf("%w: %w", appserver.ErrPushFailed, &push.TemporaryError{Reason: "503"}), stanza.Wait, stanza.InternalServerError},
		{"credentials refused", fmt.Errorf("%w: %w", appserver.ErrPushFailed, push.UntilReconfigured(&push.CredentialsRefusedError{Reason: "BadCertificate"})), stanza.Wait, stanza.InternalServerError},
		{"throttled", appserver.ErrThrottled, stanza.Wait, stanza.ServiceUnavailable},
		{"shutting down", appserver.ErrUnavailable, stanza.Wait, stanza.ServiceUnavailable},
		{"unknown app", fmt.Errorf("%w %q", appserver.ErrUnknownType, "nope"), stanza.Wait, stanza.InternalServerError},
		{"too large", fmt.Errorf("%w: %w", appserver.ErrPushFailed, push.ErrPayloadTooLarge), stanza.Wait, stanza.BadRequest},
		{"anything else", errors.New("surprise"), stanza.Wait, stanza.InternalServerError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			typ, cond, _ := pushAnswer(tc.err)
			if typ != tc.wantType || cond != tc.wantCond {
				t.Fatalf("pushAnswer(%v) = %s/%s, want %s/%s", tc.err, typ, cond, tc.wantType, tc.wantCond)
			}
		})
	}
}
