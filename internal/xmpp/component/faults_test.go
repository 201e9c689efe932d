package component_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/xmpp/component"
)

// run starts a component with opts against srv and returns its state
// changes; it stops when the test ends.
func run(t *testing.T, opts component.Options, f *fixture) (*component.Conn, <-chan bool) {
	t.Helper()
	states := make(chan bool, 64)
	opts.JID, opts.Secret = compJID, secret
	opts.OnState = func(c bool) { states <- c }
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.DrainTimeout == 0 {
		opts.DrainTimeout = 300 * time.Millisecond // see newFixtureWith
	}
	conn := component.New(opts, f.svc)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { conn.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return conn, states
}

// next returns the next state change, failing the test after 20 s.
func nextState(t *testing.T, states <-chan bool) bool {
	t.Helper()
	select {
	case v := <-states:
		return v
	case <-time.After(20 * time.Second):
		t.Fatal("no state change in 20 s")
		return false
	}
}

const discoInfo = `<iq type='get' id='%d' from='a@example.org/r' to='` + compJID + `'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`

// flood sends disco#info queries until the connection breaks or stalls
// for stall, and returns how many it wrote.
func flood(st *stream, max int, stall time.Duration) (sent int, stalled bool) {
	for sent = 0; sent < max; sent++ {
		st.Conn.SetWriteDeadline(time.Now().Add(stall))
		if err := st.Send(fmt.Sprintf(discoInfo, sent)); err != nil {
			var ne net.Error
			return sent, errors.As(err, &ne) && ne.Timeout()
		}
	}
	return sent, false
}

// TestWriteStallReconnects: when the XMPP server stops reading, the write
// deadline closes the stream, health says down, and the component
// reconnects (issue: it used to go on reading and never answer again).
func TestWriteStallReconnects(t *testing.T) {
	f := newFixture(t, 0, secret)
	srv := newFakeServer(t, secret)
	conn, states := run(t, component.Options{Addr: srv.Addr(), WriteTimeout: 300 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}, f)
	st := srv.accept(t)
	if !nextState(t, states) {
		t.Fatal("not connected")
	}
	// The server reads nothing from now on and floods the component with
	// queries whose answers pile up.
	go flood(st, 1_000_000, 30*time.Second)
	start := time.Now()
	if nextState(t, states) || conn.Connected() {
		t.Fatal("state change to up while stalled")
	}
	down := time.Since(start)
	st2 := srv.accept(t)
	if !nextState(t, states) {
		t.Fatal("not connected again")
	}
	t.Logf("stalled peer: down after %v, reconnected after %v", down.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	st2.send(t, fmt.Sprintf(discoInfo, 1))
	if r := st2.next(t); r.Type != "result" {
		t.Fatalf("after reconnecting: %+v", r)
	}
}

// TestReplyQueueBounded: a peer that sends but never reads gets
// backpressure: the component stops reading once its bounded reply queue
// and the kernel's buffers are full, instead of reading on and holding
// every unanswered reply in memory.
func TestReplyQueueBounded(t *testing.T) {
	f := newFixture(t, 0, secret)
	srv := newFakeServer(t, secret)
	run(t, component.Options{Addr: srv.Addr(), MaxReplyQueue: 64 << 10, WriteTimeout: time.Minute}, f)
	st := srv.accept(t)
	const queries = 500_000 // ~60 MB of queries, ~250 MB of answers
	sent, stalled := flood(st, queries, 2*time.Second)
	t.Logf("peer that never reads: the component stopped reading after %d queries (%.1f MB)", sent, float64(sent*len(fmt.Sprintf(discoInfo, sent)))/1e6)
	if !stalled {
		t.Fatalf("the component read all %d queries from a peer that reads nothing (sent %d)", queries, sent)
	}
}

// TestReplyQueueBoundedForPushes: pushes hold no slot while with their
// push service, but take one again to answer, so a peer that sends
// publishes and never reads still gets backpressure: the answers waiting
// for the reply queue hold the slots, and the reader stops, instead of
// reading on with a goroutine for each answer it cannot write.
func TestReplyQueueBoundedForPushes(t *testing.T) {
	const slots = 8
	const places = slots + slots + component.WaitingPerSlot*slots // fresh, resumed, waiting
	f := newFixture(t, 0, secret)
	r, err := f.svc.Register(context.Background(), appserver.Caller{}, "fcm", "n", "tok")
	if err != nil {
		t.Fatal(err)
	}
	srv := newFakeServer(t, secret)
	conn, _ := run(t, component.Options{Addr: srv.Addr(), MaxInFlight: slots, MaxReplyQueue: 64 << 10, WriteTimeout: time.Minute}, f)
	st := srv.accept(t)
	const publishes = 100_000 // ~40 MB of publishes, ~15 MB of answers
	sent := 0
	for ; sent < publishes; sent++ {
		st.Conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
		if err := st.Send(publish(fmt.Sprint(sent), "n", r.Secret, false)); err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatal(err)
			}
			break
		}
	}
	peak := conn.HandlingPeak()
	t.Logf("peer that never reads: the component stopped reading after %d publishes, with %d IQs handled at once at most", sent, peak)
	if sent == publishes {
		t.Fatalf("the component read all %d publishes from a peer that reads nothing", publishes)
	}
	if peak > appserver.AppMaxInFlight+places {
		t.Fatalf("%d IQs handled at once for a peer that reads nothing: answers waiting to be written are not bounded (%d with the push service, and %d places)", peak, appserver.AppMaxInFlight, places)
	}
}

// TestIQWithoutID: an IQ without id is answered bad-request, without an
// id attribute (there is none to echo).
func TestIQWithoutID(t *testing.T) {
	f := newFixture(t, 0, secret)
	st := f.srv.accept(t)
	st.send(t, `<iq type='get' from='a@example.org/r' to='`+compJID+`'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`)
	st.send(t, fmt.Sprintf(discoInfo, 7))
	r := st.next(t)
	if r.Type != "error" || !strings.HasPrefix(r.Inner, "<error type='modify'><bad-request") {
		t.Fatalf("IQ without id answered %+v", r)
	}
	for _, a := range r.Attrs {
		if a.Name.Local == "id" {
			t.Fatalf("answer carries id=%q", a.Value)
		}
	}
	if r := st.next(t); r.ID != "7" || r.Type != "result" {
		t.Fatalf("next IQ answered %+v", r)
	}
}

// TestReconnectTiming: while the XMPP server is down (it drops every
// connection), the component tries a few times quickly and then at most
// about once a second; once the server accepts again it is connected
// within 2 s, however long it was down.
func TestReconnectTiming(t *testing.T) {
	f := newFixture(t, 0, secret)
	srv := newFakeServer(t, secret)
	run(t, component.Options{Addr: srv.Addr()}, f) // the default backoff
	st := srv.accept(t)
	const downFor = 6 * time.Second
	srv.SetDown(true)
	down := time.Now()
	st.Close()
	var attempts []time.Duration
	deadline := time.After(downFor)
	for collecting := true; collecting; {
		select {
		case e := <-srv.Events():
			if e.Kind == "connect" && e.At.After(down) {
				attempts = append(attempts, e.At.Sub(down))
			}
		case <-deadline:
			collecting = false
		}
	}
	srv.SetDown(false)
	up := time.Now()
	if _, err := srv.Accept(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	back := time.Since(up)
	late := 0
	for _, a := range attempts {
		if a > 2*time.Second {
			late++
		}
	}
	t.Logf("down %v: %d connection attempts (%d in its last %v); connected %v after the server accepted again",
		downFor, len(attempts), late, downFor-2*time.Second, back.Round(time.Millisecond))
	// After the quick first attempts, at most one a second (+1 for the
	// window's edges).
	if limit := int((downFor-2*time.Second)/time.Second) + 1; late > limit {
		t.Errorf("%d attempts in %v while the server was down, want at most %d", late, downFor-2*time.Second, limit)
	}
	if len(attempts) < 3 {
		t.Errorf("only %d attempts in %v", len(attempts), downFor)
	}
	// The cap is 1.8 s; what is left is the handshake on a loaded machine.
	if back > 2500*time.Millisecond {
		t.Errorf("connected %v after the server came back, want within 2 s", back)
	}
}

// TestRetryAndReleased: a standby told that another instance released the
// component connects at once, not at its next retry (a second or more
// later); an instance that shuts down says it released the component once
// the server closed its side of the stream, not before.
func TestRetryAndReleased(t *testing.T) {
	f := newFixture(t, 0, secret)
	srv := newFakeServer(t, secret)
	retry := make(chan struct{}, 1)
	released := make(chan struct{}, 1)
	conn := component.New(component.Options{Addr: srv.Addr(), JID: compJID, Secret: secret, MaxBackoff: 10 * time.Second,
		Retry: retry, Released: func() { released <- struct{}{} }, Logger: slog.New(slog.DiscardHandler)}, f.svc)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	srv.SetDown(true)
	go func() { conn.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	// Past the quick first attempts every wait is a second or more.
	for srv.Connections() < 5 {
		time.Sleep(10 * time.Millisecond)
	}
	srv.SetDown(false)
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	retry <- struct{}{}
	st := srv.accept(t)
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("connected %v after the retry signal, want at once", d)
	}
	cancel()
	st.waitClosed(t)
	select {
	case <-released:
		t.Fatal("released before the server closed its side")
	case <-time.After(100 * time.Millisecond):
	}
	st.send(t, "</stream:stream>")
	select {
	case <-released:
	case <-time.After(5 * time.Second):
		t.Fatal("not released after the server closed the stream")
	}
}

// connects returns the times of the next n connections srv accepts,
// failing the test after timeout.
func connects(t *testing.T, srv *fakeServer, n int, timeout time.Duration) []time.Time {
	t.Helper()
	var at []time.Time
	deadline := time.After(timeout)
	for len(at) < n {
		select {
		case e := <-srv.Events():
			if e.Kind == "connect" {
				at = append(at, e.At)
			}
		case <-deadline:
			t.Fatalf("%d connection attempts within %v, want %d", len(at), timeout, n)
		}
	}
	return at
}

// TestReconnectFloorAfterQuickAttempts: past its first quick attempts,
// the component waits at least a second between attempts, or
// MaxBackoff when that is lower, however the jitter falls: a server that
// is down is not hammered.
func TestReconnectFloorAfterQuickAttempts(t *testing.T) {
	const maxBackoff = 400 * time.Millisecond // the floor, below a second
	f := newFixture(t, 0, secret)
	srv := newFakeServer(t, secret)
	srv.SetDown(true)
	run(t, component.Options{Addr: srv.Addr(), MaxBackoff: maxBackoff}, f)
	// The first attempt fails, then four quick ones; from the sixth,
	// the floor holds.
	at := connects(t, srv, 10, 20*time.Second)
	for i := 6; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < maxBackoff {
			t.Errorf("attempt %d came %v after the one before, want at least %v", i+1, gap.Round(time.Millisecond), maxBackoff)
		}
	}
}

// TestRetryStartsBackoffOver: told that another instance released the
// component, a standby connects at once, and when that attempt fails too
// (the server has not dropped the other's stream yet) it tries again
// within the quick first attempts, not after the long wait it had reached.
func TestRetryStartsBackoffOver(t *testing.T) {
	f := newFixture(t, 0, secret)
	srv := newFakeServer(t, secret)
	retry := make(chan struct{}, 1)
	srv.SetDown(true)
	run(t, component.Options{Addr: srv.Addr(), MaxBackoff: 10 * time.Second, Retry: retry}, f)
	// Past the quick attempts, the waits are seconds long.
	connects(t, srv, 6, 20*time.Second)
	retry <- struct{}{}
	at := connects(t, srv, 2, 20*time.Second)
	if gap := at[1].Sub(at[0]); gap > time.Second {
		t.Fatalf("the attempt after the one the retry signal started came %v later, want the backoff started over (about 100 ms)", gap.Round(time.Millisecond))
	}
}
