package component

import (
	"bytes"
	"cmp"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
	"unsafe"
)

func TestSourceOf(t *testing.T) {
	for _, tt := range []struct{ from, want string }{
		{"example.org", "example.org"},
		{"juliet@example.org", "@example.org"},
		{"juliet@example.org/phone", "@example.org"},
		{"Juliet@Example.ORG/Phone", "@example.org"},
		{"example.org/a@b.example", "example.org"},
		{"juliet@example.org/a@b.example/c", "@example.org"},
		{"", ""},
	} {
		if got := sourceOf(tt.from); got != tt.want {
			t.Errorf("sourceOf(%q) = %q, want %q", tt.from, got, tt.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { sourceOf("juliet@example.org/phone") }); n != 0 {
		t.Errorf("sourceOf allocates %v times for a domain in lower case, want 0", n)
	}
}

// A publish IQ is read into one allocation with its payload's memory and
// its handler's slot (its context's deadline room included), which,
// with the 8-byte header the runtime puts before an object of more than
// 512 bytes with pointers, fills the 1,152-byte size class: a word more
// takes the next, 1,280 bytes, for every push.
func TestStreamIQSize(t *testing.T) {
	if n := unsafe.Sizeof(streamIQ{}) + 8; n > 1152 {
		t.Errorf("streamIQ takes %d bytes, more than the 1,152-byte size class", n)
	}
}

func TestLeavesHost(t *testing.T) {
	for _, tt := range []struct {
		addr net.Addr
		want bool
	}{
		{&net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 5347}, false},
		{&net.TCPAddr{IP: net.ParseIP("::1"), Port: 5347}, false},
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 5347}, true},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 5347}, true},
	} {
		if got := leavesHost(tt.addr); got != tt.want {
			t.Errorf("leavesHost(%v) = %v, want %v", tt.addr, got, tt.want)
		}
	}
}

// TestWriterBounded: with a peer that never reads, what waits to be
// written never exceeds the limit (plus the one write under way): writers
// wait instead. When the write deadline passes, every waiting writer gets
// the error and the connection is closed.
func TestWriterBounded(t *testing.T) {
	const limit = 4 << 10
	ours, peer := net.Pipe() // unbuffered: nothing is written until peer reads
	defer peer.Close()
	w := newWriter(ours, 300*time.Millisecond, limit, systemClock())
	reply := bytes.Repeat([]byte("x"), 100)
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for range 1000 {
		wg.Go(func() { errs <- w.write(reply) })
	}
	maxQueued := 0
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		default:
			maxQueued = max(maxQueued, w.queued())
			runtime.Gosched()
		}
	}
	if maxQueued > limit {
		t.Fatalf("%d bytes queued, limit %d", maxQueued, limit)
	}
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			failed++
		}
	}
	// Only what fit before the stall was accepted.
	if failed < 1000-2*limit/len(reply) {
		t.Fatalf("%d of 1000 writes failed; the rest cannot all have fit", failed)
	}
	if _, err := peer.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after the write deadline")
	}
}

// TestWriterLeavesNothingBehind: replies written at once from many
// goroutines, with no flush after them, all reach the peer, each whole:
// whoever finds a write under way leaves its reply to that writer.
func TestWriterLeavesNothingBehind(t *testing.T) {
	ours, peer := net.Pipe()
	defer peer.Close()
	w := newWriter(ours, 5*time.Second, 4<<10, systemClock())
	const n = 2000
	var want bytes.Buffer
	replies := make([][]byte, n)
	for i := range replies {
		replies[i] = fmt.Appendf(nil, "<iq id='%d'/>", i)
		want.Write(replies[i])
	}
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, want.Len())
		if _, err := io.ReadFull(peer, b); err == nil {
			got <- b
		}
	}()
	var wg sync.WaitGroup
	for _, r := range replies {
		wg.Go(func() {
			if err := w.write(r); err != nil {
				t.Error(err)
			}
		})
	}
	var b []byte
	select {
	case b = <-got:
	case <-time.After(5 * time.Second):
		t.Fatalf("only part of the replies arrived; %d bytes still queued", w.queued())
	}
	wg.Wait()
	for _, r := range replies {
		if c := bytes.Count(b, r); c != 1 {
			t.Fatalf("%s arrived %d times", r, c)
		}
	}
}

// TestWorkersReused: IQs handled one after the other run on the worker
// started for the first; IQs handled at once each get a worker; closing
// ends the idle ones.
func TestWorkersReused(t *testing.T) {
	var wg sync.WaitGroup
	release := make(chan struct{})
	p := newWorkers(100, func(q *streamIQ) {
		defer wg.Done()
		if q.Type == "block" {
			<-release
		}
	})
	for range 100 {
		wg.Add(1)
		p.run(&streamIQ{})
		wg.Wait()
		// The worker is between its handler's return and its wait for
		// the next IQ: let it get there.
		for range 100 {
			runtime.Gosched()
		}
	}
	if n := p.started.Load(); n > 2 {
		t.Fatalf("%d workers started for 100 IQs handled one at a time", n)
	}
	before := p.started.Load()
	wg.Add(10)
	for range 10 {
		p.run(&streamIQ{iq: iq{Type: "block"}})
	}
	if n := p.started.Load() - before; n < 9 {
		t.Fatalf("%d workers started for 10 IQs at once", n)
	}
	close(release)
	wg.Wait()
	g := runtime.NumGoroutine()
	p.close()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > g-9 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > g-9 {
		t.Fatalf("%d goroutines after close, %d before: idle workers did not end", n, g)
	}
}

// chunkConn hands out its data chunk bytes per read (default 3), then its
// error.
type chunkConn struct {
	net.Conn
	data  []byte
	err   error
	chunk int
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, c.err
	}
	n := copy(p[:min(len(p), cmp.Or(c.chunk, 3))], c.data)
	c.data = c.data[n:]
	return n, nil
}

// TestStreamConn: bytes come out in order whether read by byte or in
// blocks, after what was put back in front; the connection's error comes
// after its data, and stays.
func TestStreamConn(t *testing.T) {
	boom := errors.New("boom")
	sc := newStreamConn(&limitReader{Conn: &chunkConn{data: []byte("defghijklmnop"), err: boom}})
	sc.limit.Store(1 << 20)
	if b, err := sc.ReadByte(); b != 'd' || err != nil {
		t.Fatalf("ReadByte = %q, %v", b, err)
	}
	sc.unread([]byte("abc"))
	var got []byte
	buf := make([]byte, 4)
	for i := 0; ; i++ {
		var err error
		if i%2 == 0 {
			var b byte
			if b, err = sc.ReadByte(); err == nil {
				got = append(got, b)
			}
		} else {
			var n int
			n, err = sc.Read(buf)
			got = append(got, buf[:n]...)
		}
		if err != nil {
			if !errors.Is(err, boom) {
				t.Fatalf("error %v, want boom", err)
			}
			break
		}
	}
	if string(got) != "abcefghijklmnop" {
		t.Fatalf("read %q", got)
	}
	if _, err := sc.ReadByte(); !errors.Is(err, boom) {
		t.Fatalf("after the error: %v", err)
	}
}

// escapeText writes what xml.EscapeText writes.
func TestEscapeText(t *testing.T) {
	cases := []string{"", "5c3f", "juliet@example.org/phone", "a<b>c&d'e\"f", "tab\there", "nl\ncr\r",
		"ünïcode", "bad\xffutf8", "\x00ctl", "\uFFFE", "push.example.net"}
	for b := range 256 {
		cases = append(cases, "id-"+string(byte(b))+"-x")
	}
	for _, s := range cases {
		var got, want bytes.Buffer
		escapeText(&got, s)
		xml.EscapeText(&want, []byte(s))
		if got.String() != want.String() {
			t.Errorf("escapeText(%q) = %q, want %q", s, got.String(), want.String())
		}
	}
}

// Two components' streams to one listener are on the same server, and
// so are streams to one port at 127.0.0.1 and ::1 (a dual-stack
// listener); anything else may be another server's.
func TestSameListener(t *testing.T) {
	for _, c := range []struct {
		a, b string
		same bool
	}{
		{"127.0.0.1:5347", "127.0.0.1:5347", true},
		{"127.0.0.1:5347", "[::1]:5347", true},
		{"[::ffff:127.0.0.1]:5347", "[::1]:5347", true},
		{"127.0.0.1:5347", "127.0.0.2:5347", false}, // another server may bind it
		{"127.0.0.1:5347", "[::1]:5348", false},
		{"10.0.0.1:5347", "127.0.0.1:5347", false},
		{"10.0.0.1:5347", "10.0.0.2:5347", false},
		{"", "127.0.0.1:5347", false},
	} {
		a, b := &Conn{}, &Conn{}
		if c.a != "" {
			a.remote.Store(&c.a)
		}
		b.remote.Store(&c.b)
		if got := sameListener(a, b); got != c.same {
			t.Errorf("sameListener(%s, %s) = %v", c.a, c.b, got)
		}
	}
}

// TestKeepAliveWhitespaceIgnoresWallStep: the wall clock stepped back an
// hour after a write holds back no whitespace keep-alive: the stream's
// silence is timed on the monotonic clock. The clock's monotonic reading
// stands still after half of KeepAlive, so no ping is ever due and the
// first thing written can only be the whitespace.
func TestKeepAliveWhitespaceIgnoresWallStep(t *testing.T) {
	const keepAlive = 40 * time.Millisecond
	wall, mono := time.Unix(1_800_000_000, 0), time.Duration(0)
	c := &Conn{
		opts:   Options{JID: "push.example", KeepAlive: keepAlive},
		logger: slog.New(slog.DiscardHandler),
		clock:  clock{now: func() time.Time { return wall }, elapsed: func() time.Duration { return mono }},
	}
	ours, peer := net.Pipe()
	defer ours.Close()
	defer peer.Close()
	got := make(chan string, 16)
	go func() {
		b := make([]byte, 512)
		for {
			n, err := peer.Read(b)
			if err != nil {
				return
			}
			got <- string(b[:n])
		}
	}()
	w := newWriter(ours, 5*time.Second, 4<<10, c.clock)
	if err := w.write([]byte("<presence/>")); err != nil {
		t.Fatal(err)
	}
	<-got
	// Set before keepAlive starts, which then only reads them.
	wall = wall.Add(-time.Hour)
	mono += keepAlive / 2

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.keepAlive(ctx, w, &limitReader{Conn: ours})
	}()
	defer func() { cancel(); <-done }()
	select {
	case s := <-got:
		if s != " " {
			t.Fatalf("wrote %q, want the whitespace keep-alive", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no whitespace within 5 s at a keep-alive of %v, after the wall clock stepped back an hour", keepAlive)
	}
}

// TestHeldByDeadStreamSpansTCPGiveUp guards how long after the
// keep-alive gave up a stream a conflict is taken as the XMPP server
// still holding that stream: as long as the server's TCP may take to
// give up writing to it (about 15 minutes on Linux), so that an outage
// is reported as one and not as another instance serving the component;
// and no longer, nor before any stream was given up.
func TestHeldByDeadStreamSpansTCPGiveUp(t *testing.T) {
	var mono time.Duration
	c := &Conn{clock: clock{now: time.Now, elapsed: func() time.Duration { return mono }}}
	if c.heldByDeadStream() {
		t.Fatal("a conflict taken as our dead stream's before any stream was given up")
	}
	mono = time.Hour
	c.foundDead.Store(int64(mono) + 1)
	for _, tc := range []struct {
		after time.Duration
		want  bool
	}{{0, true}, {time.Minute, true}, {15 * time.Minute, true}, {19 * time.Minute, true}, {21 * time.Minute, false}} {
		mono = time.Hour + tc.after
		if got := c.heldByDeadStream(); got != tc.want {
			t.Errorf("%v after the stream was given up: held %v, want %v", tc.after, got, tc.want)
		}
	}
}

// TestWriterSendsStanzaLargerThanQueue: a stanza larger than the reply
// queue's bound (a long disco or command answer under a small
// max_reply_queue) goes alone once the queue is empty, rather than wait
// for room that can never be: its handler, and the slot it holds, would
// wait for good.
func TestWriterSendsStanzaLargerThanQueue(t *testing.T) {
	ours, peer := net.Pipe()
	defer peer.Close()
	w := newWriter(ours, 5*time.Second, 64, systemClock())
	big := bytes.Repeat([]byte("x"), 1000)
	errc := make(chan error, 1)
	go func() { errc <- w.write(big) }()
	got := make([]byte, 0, len(big))
	buf := make([]byte, 512)
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(got) < len(big) {
		n, err := peer.Read(buf)
		if err != nil {
			t.Fatalf("read %d of the %d bytes of a stanza larger than the queue: %v", len(got), len(big), err)
		}
		got = append(got, buf[:n]...)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, big) {
		t.Fatal("the stanza arrived altered")
	}
}
