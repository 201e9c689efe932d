package h2client_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push/h2client"
)

// Warm says whether the service can be reached (the log's "push service
// reachable" or "not reachable yet"): a dial that a push started a moment
// before, and that fails, is no success. After a reload under traffic a
// push often starts the new backend's dial first (FCM's warm-up waits for
// the access token with the pushes, then they race for the dial).
func TestWarmWaitsForTheDialUnderWay(t *testing.T) {
	// An address that takes connections and drops them 300 ms later
	// without a word.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var taken atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			taken.Add(1)
			time.AfterFunc(300*time.Millisecond, func() { c.Close() })
		}
	}()
	c := newClient(t, h2client.Options{})
	defer c.Close()
	pushed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		pushed <- do(ctx, c, "https://"+ln.Addr().String(), 0)
	}()
	for deadline := time.Now().Add(5 * time.Second); taken.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the push never dialled")
		}
	}
	werr := c.Warm(context.Background(), ln.Addr().String())
	if perr := <-pushed; perr == nil {
		t.Fatal("the push went through an address that answers nothing")
	}
	if werr == nil {
		t.Fatal("Warm = nil (logged \"push service reachable\") while the dial under way failed")
	}
	if n := taken.Load(); n != 1 {
		t.Errorf("%d connections: Warm dialled beside the dial under way", n)
	}
}
