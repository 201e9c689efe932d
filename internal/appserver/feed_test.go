package appserver_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
)

// failingFeed fails the first time it is followed; afterwards it
// announces the nodes sent on changes, and sends on announced after.
type failingFeed struct {
	calls     chan int
	changes   chan string
	announced chan struct{}
	n         int
}

func (f *failingFeed) Follow(ctx context.Context, changed func(string), live func(bool)) error {
	f.n++
	f.calls <- f.n
	live(true)
	if f.n == 1 {
		live(false)
		return errors.New("database gone")
	}
	defer live(false)
	for {
		select {
		case <-ctx.Done():
			return nil
		case n := <-f.changes:
			changed(n)
			f.announced <- struct{}{}
		}
	}
}

// A change feed that fails is followed again: the cache comes back and
// stays coherent, rather than caching going off for good.
func TestChangeFeedFollowedAgain(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	store := memory.New()
	feed := &failingFeed{calls: make(chan int, 4), changes: make(chan string), announced: make(chan struct{})}
	svc, err := appserver.New(store, []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: &scripted{answers: map[string]error{}}}},
		appserver.Options{Changes: feed, CacheTTL: time.Hour}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { svc.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for want := 1; want <= 2; want++ {
		select {
		case n := <-feed.calls:
			if n != want {
				t.Fatalf("follow #%d, want #%d", n, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("feed not followed a %dth time", want)
		}
	}
	r, err := svc.Register(ctx, appserver.Caller{}, "fcm", "n", "tok")
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: r.Secret}); err != nil {
		t.Fatal(err)
	}
	// Another writer deletes it, and the feed says so.
	if _, err := store.Delete(ctx, "n", "fcm"); err != nil {
		t.Fatal(err)
	}
	feed.changes <- "n"
	<-feed.announced
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: r.Secret}); !errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("push after the feed announced the deletion: %v, want %v", err, appserver.ErrNotFound)
	}
}
