package postgres_test

import (
	"context"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry/postgres"
	"github.com/push-appserver/push-appserver/internal/testutil/netfreeze"
)

// Close ends within its bound when PostgreSQL went silent (its host gone,
// its address moved) while a group commit of registrations was under
// way: Close waits for the group-commit writer before its bounded pool
// close, and the batch's transaction is no caller's.
func TestCloseWhileBatchOnSilentPostgres(t *testing.T) {
	u, err := url.Parse(pg.DB(t))
	if err != nil {
		t.Fatal(err)
	}
	f := netfreeze.Start(t, u.Host)
	u.Host = f.Addr()
	s, err := postgres.Open(context.Background(), u.String(), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Register(context.Background(), "warm", plain("warm")); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	release := make(chan struct{})
	queued := make(chan struct{}, 16)
	var once sync.Once
	postgres.SetHooks(s, func() { queued <- struct{}{} }, func(node string) {
		if node == "n0" {
			once.Do(func() { close(started); <-release })
		}
	}, nil)
	var wg sync.WaitGroup
	reg := func(node string) {
		wg.Go(func() {
			// The caller gives up after 2 s, as an HTTP client or a
			// component's stop does.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err := s.Register(ctx, node, plain(node))
			t.Logf("Register(%s) = %v", node, err)
		})
	}
	reg("n0")
	<-started
	<-queued
	for _, n := range []string{"n1", "n2", "n3"} {
		reg(n)
		<-queued
	}
	// The database goes silent just as the batch is taken.
	f.Freeze()
	close(release)
	wg.Wait() // every caller has given up by now
	start := time.Now()
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
		t.Logf("Close took %v", time.Since(start))
	case <-time.After(10 * time.Second):
		t.Fatalf("Close still waits %v after PostgreSQL went silent with a registration batch under way (closeWait is 2 s)", time.Since(start).Round(time.Second))
	}
}

// A registration whose caller set no deadline (an ad-hoc command: the
// component hands it context.Background, so that a stop does not cut it
// off) ends when PostgreSQL has gone silent, within the statement
// timeout and a margin, rather than when TCP gives up on the connection
// (many minutes): until then the group-commit writer, which every
// registration of the instance waits for, and the component's working
// place are held, and a stop waits for the command.
func TestRegisterWithoutDeadlineOnSilentPostgres(t *testing.T) {
	u, err := url.Parse(pg.DB(t))
	if err != nil {
		t.Fatal(err)
	}
	f := netfreeze.Start(t, u.Host)
	u.Host = f.Addr()
	s, err := postgres.Open(context.Background(), u.String(), postgres.Options{}) // statement_timeout 5 s
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Register(context.Background(), "warm", plain("warm")); err != nil {
		t.Fatal(err)
	}
	f.Freeze()
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		_, err := s.Register(context.Background(), "n1", plain("n1"))
		done <- err
	}()
	select {
	case err := <-done:
		t.Logf("Register = %v after %v", err, time.Since(start).Round(time.Millisecond))
	case <-time.After(15 * time.Second):
		t.Fatalf("Register still waits %v after PostgreSQL went silent (statement_timeout 5 s)", time.Since(start).Round(time.Second))
	}
}
