package h2client_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/h2client"
	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
	"github.com/push-appserver/push-appserver/internal/testutil/netfreeze"
)

// TestStalledDialDoesNotHoldRequests: a connection attempt that stalls
// (a front end of the service took the TCP connection and never answers
// the TLS hello) must not hold the requests waiting for it until the
// dial timeout, 10 s, twice the default push deadline: another attempt
// starts beside it, and a request with the default push deadline goes
// through on that one.
func TestStalledDialDoesNotHoldRequests(t *testing.T) {
	m, err := apnsmock.New(apnsmock.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	p := netfreeze.Start(t, strings.TrimPrefix(m.URL, "https://"))
	c := newClient(t, h2client.Options{CAPath: m.CADir})
	t.Cleanup(func() { c.Close() })
	// The first connection reaches the service only after a minute:
	// its handshake stalls. Those after it are carried at once.
	p.DelayNext(time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), push.DefaultPushDeadline)
	defer cancel()
	start := time.Now()
	if err := post(ctx, c, "https://"+p.Addr(), 0); err != nil {
		t.Fatalf("request while the first connection attempt stalls: %v after %s (%d connections accepted), want it sent on another", err, time.Since(start), p.Connections())
	}
	t.Logf("sent after %s", time.Since(start))
}
