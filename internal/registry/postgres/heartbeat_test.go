package postgres_test

import (
	"context"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry/postgres"
)

// freezer forwards TCP connections to target. freeze makes the
// connections open at that moment stop carrying anything, either way,
// without closing them, as a link that drops its packets does; later
// connections are carried.
type freezer struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	frozen []*atomic.Bool
	conns  []net.Conn
}

func newFreezer(t *testing.T, target string) *freezer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target}
	go f.serve()
	t.Cleanup(f.close)
	return f
}

// close closes the listener and every connection: a frozen connection's
// pgx client otherwise waits 15 s at Close for the server's goodbye.
func (f *freezer) close() {
	f.ln.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
}

func (f *freezer) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", f.target)
		if err != nil {
			c.Close()
			continue
		}
		frozen := new(atomic.Bool)
		f.mu.Lock()
		f.frozen = append(f.frozen, frozen)
		f.conns = append(f.conns, c, u)
		f.mu.Unlock()
		go carry(u, c, frozen)
		go carry(c, u, frozen)
	}
}

// carry copies from src to dst until either closes, dropping what it
// reads once frozen.
func carry(dst, src net.Conn, frozen *atomic.Bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			dst.Close()
			return
		}
		if frozen.Load() {
			continue
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			src.Close()
			return
		}
	}
}

func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fr := range f.frozen {
		fr.Store(true)
	}
}

// A LISTEN connection that goes silent without closing, as after a
// failover that moved the server's address, is found by the feed's next
// probe: the feed goes down and comes back on a new connection, which
// hears the others' writes again.
func TestFeedProbesSilentConnection(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	direct := pg.DB(t)
	u, err := url.Parse(direct)
	if err != nil {
		t.Fatal(err)
	}
	f := newFreezer(t, u.Host)
	u.Host = f.ln.Addr().String()
	s, err := postgres.Open(ctx, u.String(), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	defer f.close()
	postgres.SetProbes(s, 300*time.Millisecond, time.Second)
	live := make(chan bool, 16)
	changed := make(chan string, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Follow(ctx, func(n string) { changed <- n }, func(l bool) { live <- l })
	}()
	defer func() { cancel(); <-done }()
	expect := func(want bool, within time.Duration) {
		t.Helper()
		select {
		case l := <-live:
			if l != want {
				t.Fatalf("live(%v), want live(%v)", l, want)
			}
		case <-time.After(within):
			t.Fatalf("no live(%v) within %v", want, within)
		}
	}
	expect(true, 10*time.Second)
	// Quiet for several heartbeats: every probe comes back.
	select {
	case l := <-live:
		t.Fatalf("live(%v) while the connection is well", l)
	case <-time.After(time.Second):
	}
	f.freeze()
	start := time.Now()
	expect(false, 5*time.Second)
	t.Logf("silent connection found after %v", time.Since(start).Round(time.Millisecond))
	expect(true, 10*time.Second)
	if !heardOtherWrite(t, direct, changed, "n1") {
		t.Fatal("another instance's write not heard on the new connection")
	}
}
