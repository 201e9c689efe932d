// Package connectproxy is an HTTP CONNECT proxy for tests: what an egress
// proxy between the server and the push services does, with basic
// authentication, and routes that stand in for the proxy's own name
// resolution.
package connectproxy

import (
	"bufio"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
)

// Options say what the proxy asks and where it connects.
type Options struct {
	// User and Password, when User is set, are the credentials every
	// CONNECT must carry (Proxy-Authorization: Basic).
	User, Password string
	// Route maps a tunnel's target (host:port, as the client asked) to
	// the address to connect to: a test's push service mock listens on
	// loopback under a name only the proxy knows. Other targets are
	// connected to as they are.
	Route map[string]string
	// Answer is what the proxy answers a CONNECT it opens a tunnel for,
	// status line, header and blank line; "HTTP/1.1 200 Connection
	// established" and no header when empty. Proxies differ here: some
	// send a Content-Length or Transfer-Encoding a client must ignore.
	Answer string
}

// Proxy is a running proxy.
type Proxy struct {
	// URL is the proxy's, credentials included.
	URL *url.URL

	ln   net.Listener
	opts Options

	mu      sync.Mutex
	tunnels []string // targets of the tunnels opened, in order
	refused int      // CONNECTs refused for their credentials
}

// Start starts a proxy on a loopback port, stopped when t ends.
func Start(t testing.TB, opts Options) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, opts: opts, URL: &url.URL{Scheme: "http", Host: ln.Addr().String()}}
	if opts.User != "" {
		p.URL.User = url.UserPassword(opts.User, opts.Password)
	}
	var wg sync.WaitGroup
	conns := map[net.Conn]bool{}
	var cmu sync.Mutex
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			cmu.Lock()
			conns[c] = true
			cmu.Unlock()
			wg.Go(func() {
				p.serve(c)
				cmu.Lock()
				delete(conns, c)
				cmu.Unlock()
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		cmu.Lock()
		for c := range conns {
			c.Close()
		}
		cmu.Unlock()
		wg.Wait()
	})
	return p
}

// Tunnels returns the targets of the tunnels opened so far.
func (p *Proxy) Tunnels() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.tunnels...)
}

// Refused returns how many CONNECTs were refused for their credentials.
func (p *Proxy) Refused() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refused
}

func (p *Proxy) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	if req.Method != http.MethodConnect {
		io.WriteString(c, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
		return
	}
	if p.opts.User != "" {
		want := "Basic " + base64.StdEncoding.EncodeToString([]byte(p.opts.User+":"+p.opts.Password))
		if req.Header.Get("Proxy-Authorization") != want {
			p.mu.Lock()
			p.refused++
			p.mu.Unlock()
			io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n")
			return
		}
	}
	addr := req.Host
	if r, ok := p.opts.Route[addr]; ok {
		addr = r
	}
	up, err := net.Dial("tcp", addr)
	if err != nil {
		io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	defer up.Close()
	p.mu.Lock()
	p.tunnels = append(p.tunnels, req.Host)
	p.mu.Unlock()
	answer := p.opts.Answer
	if answer == "" {
		answer = "HTTP/1.1 200 Connection established\r\n\r\n"
	}
	if _, err := io.WriteString(c, answer); err != nil {
		return
	}
	// Either side's end ends the tunnel, both ways: neither an HTTP/2
	// client nor a server half-closes.
	done := make(chan struct{}, 2)
	go func() {
		// What the client sent after its CONNECT is in br already.
		io.Copy(up, br)
		done <- struct{}{}
	}()
	go func() {
		io.Copy(c, up)
		done <- struct{}{}
	}()
	<-done
	c.Close()
	up.Close()
	<-done
}
