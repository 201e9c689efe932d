package h2client_test

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/push-appserver/push-appserver/internal/push/h2client"
)

// rawServer serves HTTP/2 connections with serve, which gets each one
// after the TLS handshake and the client's preface.
func rawServer(t *testing.T, serve func(c *tls.Conn, fr *http2.Framer)) (url, caDir string) {
	t.Helper()
	s := startServer(t, http.NotFoundHandler(), func(s *http.Server) {
		s.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){
			"h2": func(_ *http.Server, c *tls.Conn, _ http.Handler) {
				defer c.Close()
				preface := make([]byte, len(http2.ClientPreface))
				if _, err := io.ReadFull(c, preface); err != nil {
					return
				}
				serve(c, http2.NewFramer(c, c))
			},
		}
	})
	return s.URL, s.CADir
}

// A service that stops reading (its process hangs while its kernel still
// holds the connection) once the client has filled the socket buffers:
// the request whose goroutine is writing must not wait for the ping
// check (PingAfter + PingTimeout, 30 + 10 s by default) when every other
// request ends at its deadline.
func TestStalledWriteEndsAtDeadline(t *testing.T) {
	const pingTimeout = time.Second
	stop := make(chan struct{})
	url, ca := rawServer(t, func(c *tls.Conn, fr *http2.Framer) {
		// Windows as large as HTTP/2 allows, then nothing read any more.
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1}, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1000})
		fr.WriteWindowUpdate(0, 1<<31-1-65535)
		fr.ReadFrame() // the client's SETTINGS
		fr.WriteSettingsAck()
		<-stop
	})
	t.Cleanup(func() { close(stop) }) // before the server's Close, which waits for this
	c := newClient(t, h2client.Options{CAPath: ca, PingAfter: 5 * time.Second, PingTimeout: pingTimeout})
	host := strings.TrimPrefix(url, "https://")
	const deadline = 500 * time.Millisecond
	var mu sync.Mutex
	longest := time.Duration(0)
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			start := time.Now()
			_, err := c.Do(ctx, &h2client.Request{Method: http.MethodPost, Addr: host, Authority: host, Path: "/" + string(rune('a'+i%26)), Body: make([]byte, 1<<20)})
			took := time.Since(start)
			mu.Lock()
			if took > longest {
				longest = took
				t.Logf("request %d: %v after %s", i, err, took)
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	// A socket that takes nothing for PingTimeout is as dead as a
	// connection that answers no ping in that time.
	if limit := deadline + pingTimeout + 500*time.Millisecond; longest > limit {
		t.Fatalf("a request with a %s deadline returned after %s, want within %s", deadline, longest, limit)
	}
}

// A request whose deadline has passed by the time it gets a stream (it
// waited for room, or its caller ran late) is not sent: the caller is told
// the deadline passed and counts the push as failed (the core keeps it
// for redelivery), so a copy the service delivered meanwhile would reach
// the device twice.
func TestExpiredRequestNotSent(t *testing.T) {
	var served atomic.Int32
	s := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served.Add(1); w.Header().Set("apns-id", "1") }), nil)
	c := newClient(t, h2client.Options{CAPath: s.CADir})
	if err := do(context.Background(), c, s.URL, 0); err != nil { // a connection with room
		t.Fatal(err)
	}
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Millisecond))
	defer cancel()
	err := do(ctx, c, s.URL, 1)
	time.Sleep(200 * time.Millisecond)
	if n := served.Load(); n != 1 {
		t.Fatalf("a request past its deadline (answered %v) reached the service: %d requests served, want 1", err, n)
	}
}
