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
