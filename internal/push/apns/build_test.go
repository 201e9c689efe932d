package apns

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
)

// BenchmarkBuild measures turning a notification into headers and payload.
func BenchmarkBuild(b *testing.B) {
	p8, _, err := apnsmock.TokenKey()
	if err != nil {
		b.Fatal(err)
	}
	kf := filepath.Join(b.TempDir(), "k.p8")
	os.WriteFile(kf, p8, 0o600)
	be, err := New(Options{Topic: "im.example.app", TokenKeyFile: kf, KeyID: "K", TeamID: "T", AlertTitle: "New Message", AlertBody: "New Message", Sound: "default", MutableContent: true},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	n := push.Notification{Token: "ab", Priority: push.PriorityHigh, Summary: &push.Summary{MessageCount: 1, HasLastMessageBody: true}}
	for b.Loop() {
		r := be.build(n)
		if len(r.payload) == 0 {
			b.Fatal("empty payload")
		}
	}
}

// The requests rendered once per priority are exactly what rendering each
// notification gives, for every combination of options and notification.
func TestBuildMatchesRender(t *testing.T) {
	p8, _, err := apnsmock.TokenKey()
	if err != nil {
		t.Fatal(err)
	}
	kf := filepath.Join(t.TempDir(), "k.p8")
	os.WriteFile(kf, p8, 0o600)
	now := time.Date(2026, 11, 25, 5, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	summary := &push.Summary{MessageCount: 3, LastMessageSender: "juliet@example.org", LastMessageBody: "hi", HasLastMessageBody: true}
	for _, o := range []Options{
		{},
		{IncludeSummary: true, TTL: time.Hour, Collapse: true, Sound: "default", MutableContent: true, AlertTitle: "T", AlertBody: "B"},
		{TTL: 30 * time.Second, AlertBody: "New Message"},
	} {
		o.Topic, o.TokenKeyFile, o.KeyID, o.TeamID, o.Now = "im.example.app", kf, "K", "T", clock
		be, err := New(o, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []push.Priority{push.PriorityHigh, push.PrioritySilent, push.PriorityVoIP, "other"} {
			for _, n := range []push.Notification{
				{Priority: p},
				{Priority: p, Summary: summary},
				{Priority: p, Summary: &push.Summary{}},
				{Priority: p, Encrypted: &push.Encrypted{Payload: "cGF5bG9hZA==", IV: "aXY="}, Account: "romeo@example.org"},
			} {
				for range 2 { // a second build must not see the first's changes
					got, want := be.build(n), be.render(n)
					// What a shared request sends: its fields, made of
					// header, and then extra.
					sent := got.header.Clone()
					for k, v := range got.extra {
						sent[k] = v
					}
					if !reflect.DeepEqual(sent, want.header) || string(got.payload) != string(want.payload) {
						t.Fatalf("options %+v, notification %+v:\nbuilt    %v %s (fields %v)\nrendered %v %s", o, n, sent, got.payload, got.fields != nil, want.header, want.payload)
					}
				}
				now = now.Add(time.Minute)
			}
		}
	}
}

// TestClockStepped guards how a clock set anew is told from time that
// passed: by the wall clock moving against the monotonic one, either way,
// by more than a minute, and not by readings that lack a monotonic part.
func TestClockStepped(t *testing.T) {
	for _, tt := range []struct {
		wall, mono time.Duration
		want       bool
	}{
		{time.Hour, time.Hour, false},
		{2*time.Hour + 5*time.Minute, 5 * time.Minute, true}, // set forward two hours
		{-24 * time.Hour, 2 * time.Minute, true},             // set back a day
		{90 * time.Second, 60 * time.Second, false},          // NTP slewing
		{0, 2 * time.Minute, true},                           // set back two minutes
		{3 * time.Hour, time.Minute, true},                   // a suspend, which only the wall clock counts
	} {
		if got := stepped(tt.wall, tt.mono); got != tt.want {
			t.Errorf("stepped(wall %v, monotonic %v) = %v, want %v", tt.wall, tt.mono, got, tt.want)
		}
	}
	now := time.Now()
	if clockStepped(now, now.Add(time.Hour)) {
		t.Error("an hour that passed on both clocks taken for a step")
	}
	if clockStepped(now.Round(0), now.Round(0).Add(time.Hour)) {
		t.Error("readings without a monotonic part taken for a step")
	}
}
