package h2client

import "testing"

// TestHostFoundWhateverTheOneBefore: requests to several hosts in any
// order each get their own host's pool, the one the pool keeps for that
// address, and the same one every time: the host remembered from the
// request before must never stand for another address, nor a second
// pool be made for an address.
func TestHostFoundWhateverTheOneBefore(t *testing.T) {
	c, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	addrs := []string{"a.example:443", "a.example:443", "b.example:443", "a.example:443", "b.example:443", "b.example:443", "c.example:8443", "a.example:443"}
	first := map[string]*hostPool{}
	for i, addr := range addrs {
		h := c.p.host(addr)
		if h.addr != addr {
			t.Fatalf("request %d to %s got the pool of %s", i, addr, h.addr)
		}
		if f, ok := first[addr]; ok && f != h {
			t.Fatalf("request %d to %s got a pool other than the first request's", i, addr)
		}
		first[addr] = h
		c.p.mu.Lock()
		kept := c.p.hosts[addr]
		c.p.mu.Unlock()
		if kept != h {
			t.Fatalf("request %d to %s got a pool the client does not keep", i, addr)
		}
	}
	if len(c.p.hosts) != 3 {
		t.Fatalf("%d pools for 3 addresses", len(c.p.hosts))
	}
}
