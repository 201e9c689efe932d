package h2client_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push/h2client"
	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
	"github.com/push-appserver/push-appserver/internal/testutil/mockhttp"
)

const payload = `{"aps":{"content-available":1}}`

// post sends one APNS-shaped request straight through the client as an
// http.Client, with no retrying above it.
func post(ctx context.Context, c *h2client.Client, base string, i int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, fmt.Sprintf("%s/3/device/%064x", base, i+1), bytes.NewReader([]byte(payload)))
	if err != nil {
		return err
	}
	req.Header.Set("apns-topic", "im.example.app")
	req.Header.Set("apns-push-type", "background")
	req.Header.Set("apns-priority", "5")
	resp, err := c.HTTP().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// do sends the request post sends through Do.
func do(ctx context.Context, c *h2client.Client, base string, i int) error {
	host := strings.TrimPrefix(base, "https://")
	resp, err := c.Do(ctx, &h2client.Request{
		Method: http.MethodPost, Addr: host, Authority: host, Path: fmt.Sprintf("/3/device/%064x", i+1),
		Header: http.Header{"Apns-Topic": {"im.example.app"}, "Apns-Push-Type": {"background"}, "Apns-Priority": {"5"}},
		Body:   []byte(payload),
	})
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %s", resp.StatusCode, resp.Body)
	}
	if resp.Get("Apns-Id") == "" {
		return errors.New("no apns-id in the answer")
	}
	return nil
}

// newMock starts an APNS mock, closed when the test ends, and a client
// that trusts it.
func newMock(t *testing.T) (*apnsmock.Server, *h2client.Client) {
	t.Helper()
	m, err := apnsmock.New(apnsmock.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	c, err := h2client.New(h2client.Options{CAPath: m.CADir})
	if err != nil {
		t.Fatal(err)
	}
	return m, c
}

// Requests a GOAWAY excluded, which the server never processed, go out
// again on a new connection by the client itself, their bodies whole:
// with GOAWAY after every answer, all 200 arrive, none waits in a
// sleeping retry.
func TestResendsWhatGoAwayExcluded(t *testing.T) {
	for _, send := range []struct {
		name string
		fn   func(context.Context, *h2client.Client, string, int) error
	}{{"http.Client", post}, {"Do", do}} {
		t.Run(send.name, func(t *testing.T) {
			m, c := newMock(t)
			m.GoAwayEvery(1)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second*raceSlowdown)
			defer cancel()
			const n = 200
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() { errs[i] = send.fn(ctx, c, m.URL, i) })
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("request %d: %v", i, err)
				}
			}
			if m.Accepted() != n {
				t.Fatalf("%d of %d accepted over %d connections", m.Accepted(), n, m.Connections())
			}
		})
	}
}

// Do refuses a body larger than any push service takes before it opens
// a stream for it.
func TestDoRefusesHugeBody(t *testing.T) {
	m, c := newMock(t)
	host := strings.TrimPrefix(m.URL, "https://")
	_, err := c.Do(context.Background(), &h2client.Request{Method: http.MethodPost, Addr: host, Authority: host, Path: "/3/device/00", Body: make([]byte, 1<<20+1)})
	if err == nil || !strings.Contains(err.Error(), "request body over") {
		t.Fatalf("a body over 1 MiB: %v", err)
	}
	if m.Connections() != 0 {
		t.Fatalf("%d connections opened for it", m.Connections())
	}
}

// A burst at start shares one connection, and while a service resets
// every connection, the client dials with backoff, not per request.
func TestDialling(t *testing.T) {
	m, c := newMock(t)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			if err := post(context.Background(), c, m.URL, i); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if m.Connections() != 1 {
		t.Fatalf("a burst of 50 opened %d connections", m.Connections())
	}

	m2, c2 := newMock(t)
	m2.ResetConnections(true)
	// Requests one after the other for a second: without backoff each
	// would dial.
	deadline := time.Now().Add(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for time.Now().Before(deadline) {
		if err := post(ctx, c2, m2.URL, 0); err == nil {
			t.Fatal("request through a resetting server succeeded")
		}
	}
	if n := m2.Connections(); n > 10 {
		t.Fatalf("%d connection attempts in a second of resets", n)
	}
}

// While dialling backs off, a request whose deadline reaches the next
// attempt waits for it and goes out once the service is back; one whose
// deadline comes first fails at once.
func TestWaitsForTheNextDial(t *testing.T) {
	m, c := newMock(t)
	m.ResetConnections(true)
	// Four failed dials: the next one is at least 400 ms away.
	for i := range 4 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := post(ctx, c, m.URL, i)
		cancel()
		if err == nil {
			t.Fatal("request through a resetting server succeeded")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	err := post(ctx, c, m.URL, 0)
	expired := ctx.Err() != nil
	cancel()
	if err == nil || expired {
		t.Fatalf("a request with too short a deadline ended with %v (deadline passed: %t), want an error before its deadline", err, expired)
	}
	m.ResetConnections(false)
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := post(ctx, c, m.URL, 0); err != nil {
		t.Fatalf("after the resets ended: %v", err)
	}
	t.Logf("sent %s after the resets ended", time.Since(start))
}

// The service's certificate must name the host dialled: the mock's names
// 127.0.0.1 (and example.com) but not localhost, though both reach it.
func TestVerifiesTheServiceName(t *testing.T) {
	m, c := newMock(t)
	if err := post(context.Background(), c, m.URL, 0); err != nil {
		t.Fatalf("to %s: %v", m.URL, err)
	}
	other := strings.Replace(m.URL, "127.0.0.1", "localhost", 1)
	err := post(context.Background(), c, other, 0)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("to %s, whose name the certificate lacks: %v, want a certificate error", other, err)
	}
}

// Close closes the client's connections, and one it was dialling as it
// comes up, rather than leave them until they have idled for minutes (a
// reload replaces a backend's client); requests after it fail without
// dialling.
func TestCloseClosesConnections(t *testing.T) {
	var open atomic.Int32
	hello, handshake := make(chan struct{}, 1), make(chan struct{})
	var holdHandshake atomic.Bool
	tlsCfg := &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		if holdHandshake.Load() {
			hello <- struct{}{}
			<-handshake
		}
		return nil, nil
	}}
	s, err := mockhttp.StartWith("h2client", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("apns-id", "1")
	}), tlsCfg, func(srv *http.Server) {
		srv.ConnState = func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				open.Add(1)
			case http.StateClosed, http.StateHijacked:
				open.Add(-1)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	waitClosed := func(what string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); open.Load() != 0; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d connections still open", what, open.Load())
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	c := newClient(t, h2client.Options{CAPath: s.CADir})
	if err := do(ctx, c, s.URL, 0); err != nil {
		t.Fatal(err)
	}
	c.Close()
	waitClosed("after Close")
	dialled := s.Connections()
	if err := do(ctx, c, s.URL, 0); err == nil || s.Connections() != dialled {
		t.Fatalf("a request after Close: %v, %d connections dialled for it", err, s.Connections()-dialled)
	}

	// Close while the only connection is in its handshake.
	c = newClient(t, h2client.Options{CAPath: s.CADir})
	holdHandshake.Store(true)
	errc := make(chan error, 1)
	go func() { errc <- do(ctx, c, s.URL, 0) }()
	<-hello
	c.Close()
	close(handshake)
	if err := <-errc; err == nil {
		t.Fatal("a request on a connection that came up after Close went through")
	}
	waitClosed("after Close during a dial")
}

// LoadCAs takes the certificates of a directory's regular files,
// through links as the system's directories hold them, and passes over
// what is not a file: a FIFO would keep it waiting for a writer.
func TestLoadCAsReadsRegularFilesOnly(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, http.NotFoundHandler(), nil)
	entries, err := os.ReadDir(s.CADir)
	if err != nil || len(entries) == 0 {
		t.Fatalf("the mock's CA directory: %v", err)
	}
	pemBytes, err := os.ReadFile(filepath.Join(s.CADir, entries[0].Name()))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "real.pem"), pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real.pem", filepath.Join(dir, "link.pem")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "pipe.pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		pool, err := h2client.LoadCAs(dir)
		if err == nil && pool.Equal(x509.NewCertPool()) {
			err = errors.New("no certificate taken")
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("LoadCAs still reading after 5 s: it opened the FIFO")
	}
}
