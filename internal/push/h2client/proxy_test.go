package h2client_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push/h2client"
	"github.com/push-appserver/push-appserver/internal/testutil/connectproxy"
)

// proxied starts a service that answers 200 and a proxy in front of it;
// the service is reached as example.com (a name its certificate holds),
// which only the proxy resolves.
func proxied(t *testing.T, opts connectproxy.Options) (addr string, p *connectproxy.Proxy, caDir string) {
	t.Helper()
	s := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), nil)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(s.URL, "https://"))
	addr = net.JoinHostPort("example.com", port)
	opts.Route = map[string]string{addr: strings.TrimPrefix(s.URL, "https://")}
	return addr, connectproxy.Start(t, opts), s.CADir
}

func get(c *h2client.Client, addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Do(ctx, &h2client.Request{Method: http.MethodGet, Addr: addr, Authority: addr, Path: "/"})
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return err
}

// Behind an egress proxy the client reaches its service through the
// proxy's CONNECT tunnel, with the proxy's credentials; TLS still ends at
// the service, whose name its certificate must hold.
func TestThroughProxy(t *testing.T) {
	addr, p, ca := proxied(t, connectproxy.Options{User: "push", Password: "proxy-secret"})
	c := newClient(t, h2client.Options{CAPath: ca, Proxy: func(*url.URL) (*url.URL, error) { return p.URL, nil }})
	for range 3 {
		if err := get(c, addr); err != nil {
			t.Fatal(err)
		}
	}
	if got := p.Tunnels(); len(got) != 1 || got[0] != addr {
		t.Fatalf("tunnels %q, want one to %s", got, addr)
	}
}

// A proxy that refuses the credentials fails the dial with its answer;
// the error names the proxy but not its password.
func TestProxyRefusal(t *testing.T) {
	addr, p, ca := proxied(t, connectproxy.Options{User: "push", Password: "proxy-secret"})
	wrong := *p.URL
	wrong.User = url.UserPassword("push", "not-the-secret")
	c := newClient(t, h2client.Options{CAPath: ca, Proxy: func(*url.URL) (*url.URL, error) { return &wrong, nil }})
	err := get(c, addr)
	if err == nil || !strings.Contains(err.Error(), "407") || strings.Contains(err.Error(), "not-the-secret") {
		t.Fatalf("through a proxy refusing the credentials: %v", err)
	}
	if p.Refused() == 0 || len(p.Tunnels()) != 0 {
		t.Fatalf("%d refused, tunnels %q", p.Refused(), p.Tunnels())
	}
}

// Without Options.Proxy the environment names the proxy, as for Go's own
// clients.
func TestProxyFromEnvironment(t *testing.T) {
	addr, p, ca := proxied(t, connectproxy.Options{})
	t.Setenv("HTTPS_PROXY", p.URL.String())
	t.Setenv("NO_PROXY", "")
	c := newClient(t, h2client.Options{CAPath: ca})
	if err := get(c, addr); err != nil {
		t.Fatal(err)
	}
	if got := p.Tunnels(); len(got) != 1 {
		t.Fatalf("tunnels %q, want one", got)
	}
}

// RFC 9110 9.3.6: a client MUST ignore Content-Length and
// Transfer-Encoding in a 2xx answer to CONNECT; the tunnel starts after
// the blank line. Proxies written with net/http's server send
// "Transfer-Encoding: chunked" when they flush the 200 before hijacking
// the connection; Go's own Transport and curl take the tunnel.
func TestProxyAnswerWithFramingHeaders(t *testing.T) {
	for _, answer := range []string{
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
	} {
		addr, p, ca := proxied(t, connectproxy.Options{Answer: answer})
		c := newClient(t, h2client.Options{CAPath: ca, Proxy: func(*url.URL) (*url.URL, error) { return p.URL, nil }})
		start := time.Now()
		if err := get(c, addr); err != nil {
			t.Errorf("proxy answering %q: after %v: %v", answer, time.Since(start).Round(time.Millisecond), err)
		}
		c.Close()
	}
}

// An HTTPS_PROXY that is not a URL (here a password with a bare '%', a
// likely slip) is reported as such (hostPool.proxyErr), not ignored for
// a direct connection whose errors never mention the proxy.
func TestProxyFromEnvironmentNotAURL(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "http://push:50%off@127.0.0.1:3128")
	t.Setenv("NO_PROXY", "")
	c := newClient(t, h2client.Options{})
	err := get(c, "push.invalid:443")
	if err == nil || !strings.Contains(err.Error(), "HTTPS_PROXY") || strings.Contains(err.Error(), "50%off") {
		t.Fatalf("with an HTTPS_PROXY that is not a URL: %v", err)
	}
}
