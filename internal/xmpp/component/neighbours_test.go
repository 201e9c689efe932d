package component_test

import (
	"context"
	"encoding/xml"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/testutil/xmppfake"
)

// TestThrottleFloodDoesNotStopOtherServers guards the other servers'
// pushes on a component stream against one server that asks for two
// pushes within the throttle window at each of many nodes of its own:
// the second push of each node waits for its window, and once the
// waiting places are taken, one more such push must not wait holding a
// working place, or a few of them stop the stream's reader until their
// windows pass and every other server's push waits as long (a minute
// here at a distance of 5 s, a minute at 60 s). It is refused as throttled instead,
// as the pushes in between a burst's first and last are.
func TestThrottleFloodDoesNotStopOtherServers(t *testing.T) {
	const slots, nodes = 2, 40
	logger := slog.New(slog.DiscardHandler)
	svc, err := appserver.New(memory.New(), []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: nopBackend{}}},
		appserver.Options{RateLimit: 5 * time.Second, PushTimeout: time.Minute}, logger)
	if err != nil {
		t.Fatal(err)
	}
	st := serveWith(t, svc, slots, logger)
	flood := func(id, node, secret string) string {
		return xmppfake.PublishIQ(id, "flood.example", compJID, node, secret, true)
	}
	var first, second strings.Builder
	for i := range nodes {
		node := fmt.Sprint("f", i)
		r, err := svc.Register(context.Background(), appserver.Caller{}, "fcm", node, fmt.Sprint("tok", i))
		if err != nil {
			t.Fatal(err)
		}
		first.WriteString(flood(fmt.Sprint("first-", i), node, r.Secret))
		second.WriteString(flood(fmt.Sprint("second-", i), node, r.Secret))
	}
	st.send(t, first.String())
	for range nodes {
		if r := st.next(t); r.Type != "result" {
			t.Fatalf("first push: %+v", r)
		}
	}
	victim, err := svc.Register(context.Background(), appserver.Caller{}, "fcm", "victim", "victim-token")
	if err != nil {
		t.Fatal(err)
	}
	// Written aside: a stopped reader would block the write.
	go st.Send(second.String() + xmppfake.PublishIQ("victim", "quiet.example", compJID, "victim", victim.Secret, true))
	start := time.Now()
	refused := 0
	for {
		r, err := nextBy(st, start.Add(2*time.Second))
		if err != nil {
			t.Fatalf("the other server's push unanswered after %v behind one server's throttled pushes (%d of theirs refused): %v", time.Since(start), refused, err)
		}
		if r.ID != "victim" {
			if r.Type == "error" {
				refused++
			}
			continue
		}
		t.Logf("the other server's push answered %s in %v behind %d throttled pushes of one server (%d refused at once)", r.Type, time.Since(start), nodes, refused)
		if r.Type != "result" {
			t.Fatalf("the other server's push: %+v", r)
		}
		return
	}
}

// nextBy reads the next stanza the component sent, waiting until by.
func nextBy(st *stream, by time.Time) (reply, error) {
	st.Conn.SetReadDeadline(by)
	for {
		tok, err := st.Dec.Token()
		if err != nil {
			return reply{}, err
		}
		if start, ok := tok.(xml.StartElement); ok {
			var r reply
			err := st.Dec.DecodeElement(&r, &start)
			return r, err
		}
	}
}
