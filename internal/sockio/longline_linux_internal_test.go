package sockio

import (
	"bufio"
	"net"
	"net/http"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// ioctlInt is the int an ioctl of the socket of c reports.
func ioctlInt(t *testing.T, c syscall.Conn, req uintptr) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int32
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, req, uintptr(unsafe.Pointer(&v)))
	}); err != nil {
		t.Fatal(err)
	}
	if errno != 0 {
		t.Fatal(errno)
	}
	return int(v)
}

// acceptedConns is a Listener that hands over what it accepts.
type acceptedConns struct {
	Listener
	conns chan *Conn
}

func (l acceptedConns) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if sc, ok := c.(*Conn); ok {
		l.conns <- sc
	}
	return c, err
}

// net/http reads a request's header through a 4 KiB buffer, and reads
// a single byte into it when it holds 4,095 bytes of a line: a request
// with a line of 4 KiB or more can have a read of one byte that is not
// the watch of the client. Such a read must not wait for the socket
// before it reads: what it is to read may be there already, its arrival
// announced to an earlier read, and the request would wait for its
// header's deadline instead of being answered.
//
// The request's first 4,121 bytes (read in two reads: the buffer, then
// what the next line needs) are sent first; once the server has read
// them and waits for more, the rest comes, all at once, in time for the
// third read, which fills the buffer and leaves the rest in the socket
// for the fourth, of one byte.
func TestHeaderReadOfOneByteIsNotAWatch(t *testing.T) {
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := acceptedConns{Listener: Listener{Listener: tl}, conns: make(chan *Conn, 1)}
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}),
		ReadHeaderTimeout: time.Minute,
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	head := "GET / HTTP/1.1\r\nHost: x\r\n"
	// Its line feed the first byte of the third read, whose buffer the
	// line's first 4,096 bytes had filled before.
	a := "A: " + strings.Repeat("a", 4096-3) + "\n"
	b := "B: " + strings.Repeat("b", 5000) + "\r\n"
	req := head + a + b + "\r\n"
	first := len(head) + 4096

	client, err := net.Dial("tcp", tl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c := <-ln.conns
	if _, err := client.Write([]byte(req[:first])); err != nil {
		t.Fatal(err)
	}
	// Wait until the server's socket has taken in those bytes (none
	// left unacknowledged), the server has read them all, and it waits
	// for the socket.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.rdl.mu.Lock()
		waiting := c.rdl.waiting
		c.rdl.mu.Unlock()
		if ioctlInt(t, client.(*net.TCPConn), syscall.TIOCOUTQ) == 0 && ioctlInt(t, c.TCPConn, syscall.TIOCINQ) == 0 && waiting {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the server did not read the request's first bytes")
		}
		runtime.Gosched()
	}
	if _, err := client.Write([]byte(req[first:])); err != nil {
		t.Fatal(err)
	}
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(client), nil)
	if err != nil {
		t.Fatalf("no answer to a request with a header line of 4 KiB: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("answer %s, want 200", resp.Status)
	}
}
