package appserver_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
)

// credentialsCounted is rejections that also hears of pushes refused for
// the app's credentials, as the credentials gauge does.
type credentialsCounted struct {
	rejections
	refused []string
}

func (c *credentialsCounted) CredentialsRefused(app string) {
	c.mu.Lock()
	c.refused = append(c.refused, app)
	c.mu.Unlock()
}

func (c *credentialsCounted) CredentialsTaken(string, time.Duration) {}

// TestPushOutcomesObserved guards what the metrics hear of each push, by
// the push service's answer: a dead token, a payload too large and a
// failure are counted apart (the alerts and dashboards on failed pushes
// read these), and a push refused for the app's own credentials sets the
// credentials gauge to refused, unless the refusal was for some of the
// app's devices alone (Partial), which says nothing of its credentials.
func TestPushOutcomesObserved(t *testing.T) {
	for _, tc := range []struct {
		name        string
		answer      error
		wantOutcome appserver.Outcome
		wantRefused []string
	}{
		{"success", nil, appserver.OutcomeSuccess, nil},
		{"dead token", &push.DeadTokenError{Since: time.Now().Add(time.Hour), Reason: "Unregistered"}, appserver.OutcomeDeadToken, nil},
		{"temporary", &push.TemporaryError{Reason: "503", Outage: true}, appserver.OutcomeFailed, nil},
		{"too large", fmt.Errorf("building the push: %w", push.ErrPayloadTooLarge), appserver.OutcomeTooLarge, nil},
		{"credentials refused", push.UntilReconfigured(&push.CredentialsRefusedError{Reason: "InvalidProviderToken", Check: "the key"}),
			appserver.OutcomeFailed, []string{"fcm"}},
		{"credentials refused for some devices", push.UntilReconfigured(&push.CredentialsRefusedError{Reason: "THIRD_PARTY_AUTH_ERROR", Check: "the APNs key", Partial: true}),
			appserver.OutcomeFailed, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			obs := &credentialsCounted{}
			b := &scripted{answers: map[string]error{"tok": tc.answer}}
			svc, err := appserver.New(memory.New(), testApps(b), appserver.Options{Observer: obs}, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			r, err := svc.Register(ctx, appserver.Caller{}, "fcm", "n", "tok")
			if err != nil {
				t.Fatal(err)
			}
			if err := svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: r.Secret}); !errors.Is(err, tc.answer) {
				t.Fatalf("Push = %v, want %v", err, tc.answer)
			}
			obs.mu.Lock()
			defer obs.mu.Unlock()
			if want := []string{"fcm/" + string(tc.wantOutcome)}; !slices.Equal(obs.apps, want) {
				t.Errorf("pushes observed as %v, want %v", obs.apps, want)
			}
			if !slices.Equal(obs.refused, tc.wantRefused) {
				t.Errorf("credentials refused told for %v, want %v", obs.refused, tc.wantRefused)
			}
		})
	}
}
