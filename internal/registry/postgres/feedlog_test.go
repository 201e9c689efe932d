package postgres_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry/postgres"
	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
)

// TestFeedOutageLoggedOnce: while PostgreSQL is down the change feed is
// tried again about once a second; the loss is logged at once, and then
// once a minute while the attempts fail the same way, not at each of
// them (63 lines a minute before); and when the feed is back, the log
// says so, where before the last word was that it was lost.
func TestFeedOutageLoggedOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var log logbuf.Buffer
	s, err := postgres.Open(ctx, pg.DB(t), postgres.Options{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	live := make(chan bool, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Follow(ctx, func(string) {}, func(l bool) { live <- l })
	}()
	defer func() { cancel(); <-done }()
	expect := func(want bool) {
		t.Helper()
		for {
			select {
			case l := <-live:
				if l == want {
					return
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("no live(%v)\n%s", want, log.String())
			}
		}
	}
	expect(true)
	pg.Down(t)
	expect(false)
	const lost = `msg="registration change feed lost`
	waitLog := func(what string) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !strings.Contains(log.String(), what); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no %s line\n%s", what, log.String())
			}
		}
	}
	waitLog(lost)
	// The feed is tried again at most a second apart (after 50, 100,
	// 200, 400 and 800 ms): in 4 s, five attempts or more failed.
	time.Sleep(4 * time.Second)
	// The loss, and the first attempt refused: failures of two kinds.
	if n := strings.Count(log.String(), lost); n > 2 {
		t.Errorf("the feed's loss logged %d times in 4 s of PostgreSQL down, want at most twice:\n%s", n, log.String())
	}
	pg.Up(t)
	expect(true)
	waitLog(`msg="registration change feed back"`)
}
