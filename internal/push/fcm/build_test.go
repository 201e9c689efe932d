package fcm

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/testutil/fcmmock"
)

// mapBuild is how messages were built before they were structs, kept as
// the reference the structs must match.
func mapBuild(o Options, n push.Notification) []byte {
	data := map[string]string{"node": n.Node}
	if o.IncludeSummary && n.Summary != nil {
		if n.Summary.MessageCount > 0 {
			data["message-count"] = strconv.Itoa(n.Summary.MessageCount)
		}
		if n.Summary.LastMessageSender != "" {
			data["last-message-sender"] = n.Summary.LastMessageSender
		}
		if n.Summary.HasLastMessageBody {
			data["last-message-body"] = push.Truncate(n.Summary.LastMessageBody, 2048)
		}
	}
	if e := n.Encrypted; e != nil {
		data["encrypted"], data["iv"] = e.Payload, e.IV
	}
	// Sent with every push since p2's fingerprints (Conversations drops
	// a push without "account"), the channel's after a space.
	if account, channel, _ := strings.Cut(n.Account, " "); account != "" {
		data["account"] = account
		if channel != "" {
			data["channel"] = channel
		}
	}
	android := map[string]any{"priority": strings.ToUpper(o.Priority)}
	if o.TTL > 0 {
		android["ttl"] = strconv.FormatInt(int64(o.TTL/time.Second), 10) + "s"
	}
	if o.CollapseKey != "" {
		android["collapse_key"] = o.CollapseKey
	}
	if n.Priority != push.PrioritySilent && (o.NotificationTitle != "" || o.NotificationBody != "") {
		android["notification"] = map[string]string{"title": o.NotificationTitle, "body": o.NotificationBody}
	}
	out, _ := json.Marshal(map[string]any{"message": map[string]any{"token": n.Token, "data": data, "android": android}})
	return out
}

// Every combination of options and notification fields gives the message
// the map-built one gave: the same keys, the empty ones included where
// they were, and the same values.
func TestBuildMatchesMaps(t *testing.T) {
	m, err := fcmmock.New("p")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	sa, err := m.WriteServiceAccount(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("é", 1500) // cut at 2,048 bytes, not inside a rune
	options := []Options{
		{},
		{Priority: "normal", TTL: 90 * time.Second, CollapseKey: "chat", IncludeSummary: true},
		{NotificationTitle: "New message", IncludeSummary: true},
		{NotificationBody: "Open <the> app \"now\"", TTL: time.Hour},
	}
	summaries := []*push.Summary{
		nil,
		{},
		{MessageCount: 3, LastMessageSender: "juliet@example.org", LastMessageBody: "hi\n\u2028", HasLastMessageBody: true},
		{HasLastMessageBody: true},
		{LastMessageBody: long, HasLastMessageBody: true},
	}
	encrypted := []*push.Encrypted{nil, {}, {Payload: "cGF5bG9hZA==", IV: "aXY="}}
	n := 0
	for _, o := range options {
		o.ServiceAccountFile, o.Endpoint = sa, m.URL
		b, err := New(o, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		o = b.opts // with the defaults New fills in
		for _, s := range summaries {
			for _, e := range encrypted {
				for _, account := range []string{"", "romeo@example.net", "91065e9185829f3db3c007e46cc2fb81790039ba", "91065e9185829f3db3c007e46cc2fb81790039ba 423e7be35d33ee516d9894ee41b2d061196d7f3a"} {
					for _, p := range []push.Priority{push.PrioritySilent, push.PriorityHigh, push.PriorityVoIP} {
						note := push.Notification{Node: "node-1", Token: "tok:en/1", Priority: p, Summary: s, Encrypted: e, Account: account}
						var got, want any
						if err := json.Unmarshal(b.build(note), &got); err != nil {
							t.Fatal(err)
						}
						json.Unmarshal(mapBuild(o, note), &want)
						if !reflect.DeepEqual(got, want) {
							t.Fatalf("options %+v, notification %+v:\n got %v\nwant %v", o, note, got, want)
						}
						n++
					}
				}
			}
		}
	}
	if n != 4*5*3*4*3 {
		t.Fatal(fmt.Sprint(n, " cases"))
	}
}
