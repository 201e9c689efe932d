package httpapi

import (
	"net"
	"sync"
	"syscall"
)

// ConnectionCap is how many connections the API listeners may hold
// together: the process's descriptor limit less a reserve for what it
// must open itself (the component's connections, the push services',
// the registry's, its files).
func ConnectionCap() int {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil || l.Cur > 1<<20 {
		return 1 << 16
	}
	return max(int(l.Cur)-max(int(l.Cur)/4, 100), 16)
}

// LimitListener closes at once what it accepts past the slots sem holds
// (one per open connection), so that a flood of connections cannot take
// the descriptors the process needs, nor sit in the kernel's backlog.
func LimitListener(l net.Listener, sem chan struct{}) net.Listener {
	return &limitListener{Listener: l, sem: sem}
}

type limitListener struct {
	net.Listener
	sem chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.sem <- struct{}{}:
			return &limitConn{Conn: c, sem: l.sem}, nil
		default:
			c.Close()
		}
	}
}

type limitConn struct {
	net.Conn
	sem  chan struct{}
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { <-c.sem })
	return err
}
