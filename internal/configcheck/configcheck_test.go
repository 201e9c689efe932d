package configcheck

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/push-appserver/push-appserver/internal/config"
)

// TestRegistryCountFailures guards which failures to count the registry
// fail the check: one that could not reach it or took too long is a
// warning (the unit checks before every start and reload, and neither
// should be refused for it), any other an error.
func TestRegistryCountFailures(t *testing.T) {
	for _, tt := range []struct {
		name    string
		err     error
		isError bool
	}{
		{"unreachable", fmt.Errorf("%w: dial tcp: connection refused", ErrUnreachable), false},
		{"too slow", fmt.Errorf("%w (over 10s): %w", ErrSlow, context.DeadlineExceeded), false},
		{"broken", errors.New("file is not a database"), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &config.Config{Database: config.Database{Driver: "postgres"}}
			out := Check(context.Background(), cfg, Options{TypeCounts: func(context.Context) (map[string]int, error) { return nil, tt.err }})
			var found *Finding
			for i := range out {
				if strings.Contains(out[i].Text, "registry") {
					found = &out[i]
				}
			}
			if found == nil {
				t.Fatalf("nothing said of the registry: %v", out)
			}
			if found.Error != tt.isError {
				t.Errorf("%v: error %v, want %v", found, found.Error, tt.isError)
			}
		})
	}
}

// TestRegistrationsOfLogApps guards the warning for registrations whose
// app only logs its pushes: a file with its apps left out gets the quick
// start's apns and fcm on the log backend, and every push to the devices
// registered for them would be answered OK and reach no device.
func TestRegistrationsOfLogApps(t *testing.T) {
	cfg := &config.Config{Database: config.Database{Driver: "postgres"}, Apps: map[string]*config.App{
		"apns": {Kind: config.KindLog}, "fcm": {Kind: config.KindLog}, "real": {Kind: config.KindAPNS},
	}}
	counts := map[string]int{"apns": 3, "real": 5}
	out := Check(context.Background(), cfg, Options{TypeCounts: func(context.Context) (map[string]int, error) { return counts, nil }})
	var said []string
	for _, f := range out {
		if f.Error {
			t.Errorf("an error: %v", f)
		}
		if strings.Contains(f.Text, "only logs") {
			said = append(said, f.Text)
		}
	}
	if len(said) != 1 || !strings.Contains(said[0], `3 registration(s) of type "apns"`) {
		t.Fatalf("warnings of registrations of log apps: %q, want one, of the 3 of apns", said)
	}
}
