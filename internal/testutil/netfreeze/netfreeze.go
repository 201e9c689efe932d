// Package netfreeze is a TCP forwarder whose connections can be made to
// go silent without closing, as when a NAT or firewall on the way forgets
// them or a peer's machine vanishes: what a keep-alive or health check
// must notice, since neither side gets an error for many minutes. New
// connections can also be made slow to reach the target, as through a
// slow network or to a busy server.
package netfreeze

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy forwards the connections it accepts to a target address.
type Proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	frozen []*atomic.Bool
	// cut holds, per connection, whether closes are no longer passed
	// on (see Cut).
	cut   []*atomic.Bool
	conns []net.Conn
	delay atomic.Int64 // see Delay
	// delayNext is DelayNext's, taken by the next connection accepted.
	delayNext atomic.Int64
	// open are the connections carried now, each with what is told
	// when it ends (see Ended).
	open map[*carried]struct{}
}

// carried is one forwarded connection.
type carried struct {
	once  sync.Once
	ended []chan time.Time
}

// Start listens on a free loopback port and forwards to target until the
// test ends.
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target}
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

// Addr is the host:port to connect to instead of the target.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Port is Addr's port.
func (p *Proxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		d := time.Duration(p.delayNext.Swap(0))
		if d == 0 {
			d = time.Duration(p.delay.Load())
		}
		if d > 0 {
			time.AfterFunc(d, func() { p.forward(c) })
			continue
		}
		p.forward(c)
	}
}

// forward connects c to the target.
func (p *Proxy) forward(c net.Conn) {
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	frozen, cut := new(atomic.Bool), new(atomic.Bool)
	cc := new(carried)
	p.mu.Lock()
	p.frozen = append(p.frozen, frozen)
	p.cut = append(p.cut, cut)
	p.conns = append(p.conns, c, u)
	if p.open == nil {
		p.open = map[*carried]struct{}{}
	}
	p.open[cc] = struct{}{}
	p.mu.Unlock()
	// Ended when either side closes: the other is closed then too.
	end := func() {
		cc.once.Do(func() {
			at := time.Now()
			p.mu.Lock()
			delete(p.open, cc)
			ended := cc.ended
			p.mu.Unlock()
			for _, ch := range ended {
				ch <- at
			}
		})
	}
	go func() { carry(u, c, frozen, cut); end() }()
	go func() { carry(c, u, frozen, cut); end() }()
}

// Ended returns a channel that receives the time the last of the
// connections carried now ended, read as either side closed it; at once
// if none is. Connections accepted later do not count.
func (p *Proxy) Ended() <-chan time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(chan time.Time, 1)
	if len(p.open) == 0 {
		out <- time.Now()
		return out
	}
	ends := make(chan time.Time, len(p.open))
	for cc := range p.open {
		cc.ended = append(cc.ended, ends)
	}
	n := len(p.open)
	go func() {
		var last time.Time
		for range n {
			if at := <-ends; at.After(last) {
				last = at
			}
		}
		out <- last
	}()
	return out
}

// Delay makes connections accepted from now on reach the target only
// after d: their client waits that long for the target's first word. 0
// ends it.
func (p *Proxy) Delay(d time.Duration) { p.delay.Store(int64(d)) }

// DelayNext delays the next connection accepted alone by d, as Delay
// does; those after it are carried as before. A client retrying soon
// after is then not held up by a test slow to end a delay.
func (p *Proxy) DelayNext(d time.Duration) { p.delayNext.Store(int64(d)) }

// carry copies from src to dst until either closes, dropping what it
// reads once frozen; once cut, a close of src is not passed on either.
func carry(dst, src net.Conn, frozen, cut *atomic.Bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			if !cut.Load() {
				dst.Close()
			}
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

// Freeze makes the connections open now carry nothing more, either way,
// and stay open. Later connections are carried.
func (p *Proxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, fr := range p.frozen {
		fr.Store(true)
	}
}

// Cut is Freeze, and what is more, a close of either side of the
// connections open now is not passed on to the other: the network
// between them is gone (a NAT or firewall that forgot them, a cable
// pulled), so neither hears that the other closed, and each learns of
// it only from its own timeouts. Later connections are carried.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, fr := range p.frozen {
		p.cut[i].Store(true)
		fr.Store(true)
	}
}

// Connections is how many connections the proxy accepted.
func (p *Proxy) Connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.frozen)
}

// Close stops listening and closes every connection. A client of a
// frozen connection may otherwise wait long at its own close (pgx waits
// 15 s for the server's goodbye).
func (p *Proxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

// Silent listens on a free loopback port, takes every connection and
// says nothing, as a server whose process hangs while its kernel still
// accepts; it returns the port. Everything closes when the test ends.
func Silent(t testing.TB) int {
	port, _ := SilentAccepting(t)
	return port
}

// SilentAccepting is Silent, and tells of each connection it takes on
// the channel it returns, up to 64 not yet received: for a test that
// waits for its client to have connected.
func SilentAccepting(t testing.TB) (int, <-chan struct{}) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	accepted := make(chan struct{}, 64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			select {
			case accepted <- struct{}{}:
			default:
			}
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, accepted
}
