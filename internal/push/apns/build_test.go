package apns

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

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
