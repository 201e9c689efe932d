// Package sockio owns how the server reads and writes its busiest TCP
// connections: the component stream, the HTTP/2 connections to the push
// services and the HTTP API's connections.
//
// A push at a moderate rate (a few thousand a second, which is how most
// servers run) arrives to an idle process: every read and write then pays
// for more than the system call itself. Go's runtime announces each
// blocking system call to its monitor thread (sysmon), and when that
// thread was asleep because the process was idle, the announcement wakes
// it, and it then polls every 20 µs until the process is idle again. On
// a virtual machine each of those wake-ups is a context switch that costs
// several microseconds. Reads and writes on a non-blocking socket never
// block, so Conn makes them as raw system calls, which the monitor does
// not hear about; the runtime's network poller still parks a reader with
// nothing to read and a writer whose socket buffer is full, exactly as
// net.Conn does. The price: during the call, a few microseconds, the
// goroutine keeps its processor instead of offering it to others.
//
// It does not skip the read that follows a short one, although that read
// mostly fails with EAGAIN: RawConn's Read clears the poller's readiness
// before it calls its function, so waiting without reading first could
// sleep through data that had already arrived.
package sockio

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Conn is a TCP connection whose Read and Write go straight to the
// socket, and whose deadlines reach the runtime only when an operation
// waits (see deadline). Everything else (addresses, Close) is the
// *net.TCPConn's.
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn

	rdl, wdl deadline

	// The read in progress. RawConn takes a function, and a closure made
	// per call would be an allocation per read; readFn is bound once.
	rmu    sync.Mutex
	rbuf   []byte
	rn     int
	rerr   syscall.Errno
	readFn func(fd uintptr) bool
	// served says a Listener accepted the connection: net/http's server
	// reads it, and SkipWatch applies.
	served bool
	// skipWatch is set by SkipWatch until the next read.
	skipWatch atomic.Bool
	// rlate is the error of a read begun after its deadline, made once:
	// net/http ends the read it watches each request's client with by
	// moving the deadline into the past, mostly before that read has
	// begun, so every HTTP request made one.
	rlate error

	// The write in progress, likewise.
	wmu     sync.Mutex
	wbuf    []byte
	wn      int
	werr    syscall.Errno
	writeFn func(fd uintptr) bool
	wlate   error
}

// Wrap returns c as a Conn when it is a TCP connection whose socket can be
// reached, and c itself otherwise.
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	sc := &Conn{TCPConn: tc, rc: rc}
	sc.readFn, sc.writeFn = sc.read, sc.write
	sc.rdl.apply, sc.wdl.apply = tc.SetReadDeadline, tc.SetWriteDeadline
	return sc
}

// SetReadDeadline sets the deadline of reads, pending and future ones,
// as net.Conn's does. The error is the socket's when a read waits.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.rdl.set(t) }

// SetWriteDeadline sets the deadline of writes, as SetReadDeadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.wdl.set(t) }

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	return errors.Join(c.rdl.set(t), c.wdl.set(t))
}

// Read reads up to len(p) bytes. It has net.Conn's semantics: a deadline
// that passes while it waits ends it with os.ErrDeadlineExceeded, and the
// peer's close with io.EOF.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.skipWatch.Load() && c.skipWatch.Swap(false) && c.served && len(p) == 1 {
		// net/http takes a watch that read nothing and failed for
		// one that saw nothing of the client.
		return 0, nil
	}
	if !c.rdl.begin() {
		if c.rlate == nil {
			c.rlate = c.timeout("read")
		}
		return 0, c.rlate
	}
	c.rbuf, c.rn, c.rerr = p, 0, 0
	err := c.outcome("read", c.rc.Read(c.readFn), c.rerr)
	c.rdl.end()
	n := c.rn
	c.rbuf = nil
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// read is the RawConn callback of Read: false asks the poller to wait
// until the socket is readable.
func (c *Conn) read(fd uintptr) bool {
	for {
		n, e := sysRead(fd, c.rbuf)
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			c.rdl.wait()
			return false
		}
		c.rn, c.rerr = max(n, 0), e
		return true
	}
}

// Write writes all of p unless the connection fails or its deadline
// passes, waiting for room in the socket's buffer as needed.
func (c *Conn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.wdl.begin() {
		if c.wlate == nil {
			c.wlate = c.timeout("write")
		}
		return 0, c.wlate
	}
	c.wbuf, c.wn, c.werr = p, 0, 0
	err := c.outcome("write", c.rc.Write(c.writeFn), c.werr)
	c.wdl.end()
	n := c.wn
	c.wbuf = nil
	return n, err
}

// write is the RawConn callback of Write.
func (c *Conn) write(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		n, e := sysWrite(fd, c.wbuf[c.wn:])
		switch e {
		case 0:
			c.wn += n
		case syscall.EINTR:
		case syscall.EAGAIN:
			c.wdl.wait()
			return false
		default:
			c.werr = e
			return true
		}
	}
	return true
}

// outcome is the error of a read or write: the poller's (a deadline or a
// closed connection, already a *net.OpError), else the system call's,
// given the shape net.Conn's errors have so that callers find what they
// look for.
func (c *Conn) outcome(op string, err error, errno syscall.Errno) error {
	if err != nil {
		return err
	}
	if errno == 0 {
		return nil
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError(op, errno)}
}

// timeout is the error of an operation begun after its deadline, as
// net.Conn's.
func (c *Conn) timeout(op string) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.ErrDeadlineExceeded}
}

// SkipWatch ends the connection's next read at once, with nothing read
// and no error, if it is net/http's watch of the client (a read of a
// single byte on a connection a Listener accepted, see there); a read of
// any other kind takes the mark away. A handler whose request's context
// need not end when the client hangs up or sends its next request calls
// it before it reads the body, whose end starts the watch: net/http then
// finds the watch over when the handler returns, where it would end it
// by a deadline moved into the past, which the poller hands to the
// waiting watch and the watch back to the handler's goroutine, two
// hand-overs of every request.
func (c *Conn) SkipWatch() { c.skipWatch.Store(true) }

// Listener wraps the connections a TCP listener accepts, for net/http's
// server.
//
// Their reads of a single byte read first, as every read does, though
// net/http's watch of the client (its background read, one a request)
// mostly finds nothing: a read of one byte that waited for the socket
// first saved that system call, but net/http reads one byte into its
// 4 KiB buffer also when it holds 4,095 bytes of a header line, and
// the poller's readiness is cleared as a read begins (see the package
// comment): the rest of a request already in the socket would not have
// been seen until the header's deadline. A push ends its watch without
// a read instead (SkipWatch).
type Listener struct{ net.Listener }

// Accept waits for the next connection and returns it wrapped.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	c = Wrap(c)
	if sc, ok := c.(*Conn); ok {
		sc.served = true
	}
	return c, nil
}
