package postgres_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
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
// the log says why, and names the exec mode the DSN needs there unless
// it has it.
func TestThroughPgBouncer(t *testing.T) {
	for _, tc := range []struct {
		name, mode, dsn string
		live, advice    bool
	}{
		{"session", "session", "", true, false},
		{"transaction", "transaction", "", false, true},
		{"transaction_cache_describe", "transaction", "&default_query_exec_mode=cache_describe", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			direct := pg.DB(t)
			var log logbuf.Buffer
			s, err := postgres.Open(ctx, pg.Bouncer(t, direct, tc.mode)+tc.dsn, postgres.Options{
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

			if !tc.live {
				// The first probe is what finds the pooler: a shorter wait
				// for it keeps the test short.
				postgres.SetProbes(s, time.Minute, time.Second)
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
				for !strings.Contains(log.String(), "does not deliver notifications") {
					select {
					case <-live:
						t.Fatal("the change feed went live through a pooler in transaction mode")
					case <-time.After(50 * time.Millisecond):
					}
					if time.Now().After(deadline) {
						t.Fatalf("the log never said why the feed is not live: %s", log.String())
					}
				}
				if named := strings.Contains(log.String(), "default_query_exec_mode=cache_describe"); named != tc.advice {
					t.Errorf("the log names default_query_exec_mode=cache_describe: %v, want %v: %s", named, tc.advice, log.String())
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

// transactionMode is a DSN through PgBouncer in transaction mode to dsn,
// with the exec mode README asks for there.
func transactionMode(t *testing.T, dsn string) string {
	return pg.Bouncer(t, dsn, "transaction") + "&default_query_exec_mode=cache_describe"
}

// Through a pooler in transaction mode, with the DSN setting README asks
// for, one instance reads and registers from several goroutines at once
// without a statement failing: none meets another's prepared statement
// on a server connection.
func TestTransactionModeConcurrentReads(t *testing.T) {
	s, err := postgres.Open(context.Background(), transactionMode(t, pg.DB(t)), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := register(s, registry.Registration{Node: "n1", Type: "a", Token: "t", Secret: "s", Registered: time.Now()}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	errs := map[string]int{}
	deadline := time.Now().Add(3 * time.Second)
	for i := range 8 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				var err error
				switch i % 4 {
				case 0, 1:
					_, err = s.GetPushTarget(context.Background(), "n1")
				case 2:
					_, err = s.Get(context.Background(), "n1")
				case 3:
					_, err = register(s, registry.Registration{Node: fmt.Sprintf("m%d", i), Type: "a", Token: "t", Secret: "s", Registered: time.Now()})
				}
				if err != nil {
					mu.Lock()
					errs[err.Error()]++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	for e, n := range errs {
		t.Errorf("%d× %s", n, e)
	}
}

// Through a pooler in transaction mode, with the DSN setting README asks
// for, a second instance starts beside the first.
func TestTransactionModeSecondInstance(t *testing.T) {
	through := transactionMode(t, pg.DB(t))
	for i := range 2 {
		s, err := postgres.Open(context.Background(), through, postgres.Options{})
		if err != nil {
			t.Fatalf("instance %d: %v", i+1, err)
		}
		t.Cleanup(func() { s.Close() })
	}
}

// Instances starting together through a pooler in transaction mode, with
// the DSN setting README asks for, migrate once: the advisory lock and
// the lifted timeouts live in each migration's transaction, which the
// pooler keeps on one server connection, and not in a session it hands
// to other clients between statements.
func TestTransactionModeConcurrentStart(t *testing.T) {
	through := transactionMode(t, pg.DB(t))
	for round := range 3 {
		var wg sync.WaitGroup
		errc := make(chan error, 4)
		for range 4 {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				s, err := postgres.Open(ctx, through, postgres.Options{})
				if err != nil {
					errc <- err
					return
				}
				s.Close()
			})
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			t.Errorf("round %d: %v", round, err)
		}
	}
}

// Through a pooler in transaction mode without that setting, the second
// instance's statements meet the first's prepared statements on the
// server connection PgBouncer hands it: its start fails, and both the
// error and the log name the setting.
func TestTransactionModeWithoutExecModeSaysSo(t *testing.T) {
	through := pg.Bouncer(t, pg.DB(t), "transaction")
	var log logbuf.Buffer
	opts := postgres.Options{Logger: slog.New(slog.NewTextHandler(&log, nil))}
	first, err := postgres.Open(context.Background(), through, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	second, err := postgres.Open(context.Background(), through, opts)
	if err == nil {
		second.Close()
		t.Fatal("a second instance started through PgBouncer in transaction mode with named prepared statements")
	}
	const setting = "default_query_exec_mode=cache_describe"
	if !strings.Contains(err.Error(), setting) {
		t.Errorf("the error does not name %s: %v", setting, err)
	}
	if !strings.Contains(log.String(), setting) {
		t.Errorf("the log does not name %s: %s", setting, log.String())
	}
}
