package postgres_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/postgres"
	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
)

// Every connection is bounded by the statement timeout, the pool's once
// the migrations (which lift it) are done too.
func TestStatementTimeoutSet(t *testing.T) {
	s, err := postgres.Open(t.Context(), pg.DB(t), postgres.Options{StatementTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, name := range []string{"statement_timeout", "lock_timeout"} {
		if v, err := postgres.Setting(t.Context(), s, name); err != nil || v != "3s" {
			t.Errorf("%s = %q, %v; want 3s", name, v, err)
		}
	}
}

// heardOtherWrite registers node through a store of its own on dsn, as
// another instance would, and reports whether changed announces it
// within 10 s.
func heardOtherWrite(t *testing.T, dsn string, changed <-chan string, node string) bool {
	t.Helper()
	if _, err := register(open(t, dsn), registry.Registration{Node: node, Type: "a", Token: "t", Secret: "s", Registered: time.Now()}); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case n := <-changed:
			if n == node {
				return true
			}
		case <-timeout:
			return false
		}
	}
}

// Through PgBouncer in session mode the store works as it does on
// PostgreSQL itself: it connects (PgBouncer refuses startup parameters it
// does not track, such as statement_timeout), its statements are bounded,
// and its change feed hears another instance's writes. In transaction
// mode the feed never goes live, since notifications do not arrive, and
// the log says why.
func TestThroughPgBouncer(t *testing.T) {
	for _, tc := range []struct {
		mode string
		live bool
	}{
		{"session", true},
		{"transaction", false},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			direct := pg.DB(t)
			var log logbuf.Buffer
			s, err := postgres.Open(ctx, pg.Bouncer(t, direct, tc.mode), postgres.Options{
				StatementTimeout: 4 * time.Second,
				Logger:           slog.New(slog.NewTextHandler(&log, nil)),
			})
			if err != nil {
				t.Fatalf("open through PgBouncer: %v", err)
			}
			defer s.Close()
			if tc.mode == "session" {
				if v, err := postgres.Setting(ctx, s, "statement_timeout"); err != nil || v != "4s" {
					t.Errorf("statement_timeout through PgBouncer = %q, %v; want 4s", v, err)
				}
			}
			if _, err := register(s, registry.Registration{Node: "n1", Type: "a", Token: "t", Secret: "s", Registered: time.Now()}); err != nil {
				t.Fatalf("register through PgBouncer: %v", err)
			}
			if r, err := s.Get(ctx, "n1"); err != nil || r.Token != "t" {
				t.Fatalf("get through PgBouncer: %+v, %v", r, err)
			}

			live := make(chan bool, 4)
			changed := make(chan string, 16)
			done := make(chan struct{})
			go func() {
				defer close(done)
				s.Follow(ctx, func(n string) { changed <- n }, func(l bool) { live <- l })
			}()
			defer func() { cancel(); <-done }()
			if !tc.live {
				deadline := time.Now().Add(20 * time.Second)
				for !strings.Contains(log.String(), "transaction mode") {
					select {
					case <-live:
						t.Fatal("the change feed went live through a pooler in transaction mode")
					case <-time.After(50 * time.Millisecond):
					}
					if time.Now().After(deadline) {
						t.Fatalf("the log never said why the feed is not live: %s", log.String())
					}
				}
				return
			}
			select {
			case l := <-live:
				if !l {
					t.Fatal("live(false)")
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("the change feed never went live through PgBouncer: %s", log.String())
			}
			if !heardOtherWrite(t, direct, changed, "n2") {
				t.Fatal("another instance's write not heard through PgBouncer")
			}
		})
	}
}
