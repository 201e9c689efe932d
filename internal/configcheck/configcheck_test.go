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

// TestReplicationWarnings guards that what the registry's replication
// settings risk is said, each as a warning and never an error (the unit
// checks before every start and reload, and the settings are the
// DBA's), that a failure to read them is a warning too, and that a
// registry that cannot be reached is said once, by the count.
func TestReplicationWarnings(t *testing.T) {
	unreachable := fmt.Errorf("%w: dial tcp: connection refused", ErrUnreachable)
	for _, tt := range []struct {
		name  string
		risks []string
		err   error
		want  []string // the warnings' texts, in order
	}{
		{"none", nil, nil, nil},
		{"risks", []string{"a", "b"}, nil, []string{"registry: a", "registry: b"}},
		{"not read", nil, errors.New("permission denied"), []string{"registry: could not tell whether its commits survive a crash and reach PostgreSQL's standbys: permission denied"}},
		{"unreachable", nil, unreachable, []string{"registry not checked: " + unreachable.Error()}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &config.Config{Database: config.Database{Driver: "postgres"}}
			out := Check(context.Background(), cfg, Options{
				TypeCounts: func(context.Context) (map[string]int, error) {
					if errors.Is(tt.err, ErrUnreachable) {
						return nil, tt.err
					}
					return nil, nil
				},
				Replication: func(context.Context) ([]string, error) { return tt.risks, tt.err },
			})
			var got []string
			for _, f := range out {
				if f.Error {
					t.Errorf("an error: %v", f)
				}
				got = append(got, f.Text)
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("warnings %q, want %q", got, tt.want)
			}
		})
	}
}
