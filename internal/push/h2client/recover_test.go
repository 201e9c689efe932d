package h2client

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/push-appserver/push-appserver/internal/push"
)

// A panic in the read loop, set off by what the service sent (here in the
// pool's hook, which the read loop calls on SETTINGS), ends the connection
// rather than the process: the request under way fails with the panic as
// a *push.PanicError, for the core to count, and the connection takes no
// more.
func TestReadLoopPanicEndsTheConnection(t *testing.T) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	var armed atomic.Bool
	cc := newClientConn(a, func(bool) {
		if armed.CompareAndSwap(true, false) {
			var fields []string
			_ = fields[len(fields)] // index out of range
		}
	})
	started := make(chan error, 1)
	go func() { started <- cc.start(context.Background()) }()
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(b, preface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(b, b)
	if _, err := fr.ReadFrame(); err != nil { // the client's SETTINGS
		t.Fatal(err)
	}
	go io.Copy(io.Discard, b)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	st := &stream{id: 1, done: make(chan struct{}, 1)}
	cc.mu.Lock()
	cc.streams[1] = st
	cc.mu.Unlock()
	armed.Store(true)
	go cc.readLoop()

	if err := fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 10}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cc.readDone:
	case <-time.After(5 * time.Second):
		t.Fatal("the read loop did not end")
	}
	<-st.done
	var pe *push.PanicError
	if !errors.As(st.err, &pe) || pe.Value == nil || len(pe.Stack) == 0 {
		t.Fatalf("the request under way failed with %v, want the panic", st.err)
	}
	if cc.Err() == nil {
		t.Fatal("the connection still takes requests")
	}
}

// A lock left held is found, and a free pair is not mistaken for one.
func TestUnlocked(t *testing.T) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	cc := newClientConn(a, func(bool) {})
	if !cc.unlocked(10 * time.Millisecond) {
		t.Fatal("free locks taken for held")
	}
	cc.wmu.Lock()
	if cc.unlocked(10 * time.Millisecond) {
		t.Fatal("a held write lock missed")
	}
	cc.wmu.Unlock()
	cc.mu.Lock()
	if cc.unlocked(10 * time.Millisecond) {
		t.Fatal("a held lock missed")
	}
	cc.mu.Unlock()
}
