package component_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
	"github.com/push-appserver/push-appserver/internal/xmpp/component"
)

// TestReconnectFailuresNotRepeated: an XMPP server that keeps refusing
// the component (here its secret; the same goes for one that is down)
// is logged at once, and then again at most once a minute while the
// same failure repeats, with the count of attempts since: before, each
// attempt, about one a second, wrote the same warning, 50 lines a
// minute for as long as the server stayed away.
func TestReconnectFailuresNotRepeated(t *testing.T) {
	var log logbuf.Buffer
	f := newFixtureWith(t, 0, "wrong", func(o *component.Options) {
		o.Logger = slog.New(slog.NewTextHandler(&log, nil))
		o.MaxBackoff = 10 * time.Millisecond
	})
	rejected := 0
	timeout := time.After(20 * time.Second)
	for rejected < 30 {
		select {
		case e := <-f.srv.Events():
			if e.Kind == "rejected" {
				rejected++
			}
		case <-timeout:
			t.Fatalf("%d handshakes in 20 s, want the component to keep trying", rejected)
		}
	}
	const lost = `msg="component connection lost, reconnecting"`
	if n := strings.Count(log.String(), lost); n != 1 {
		t.Errorf("%d refused handshakes logged %d times, want once:\n%s", rejected, n, log.String())
	}
}
