package h2client_test

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/push-appserver/push-appserver/internal/push/h2client"
)

// TestGoAwayReasonKept: APNS ends a connection it will not serve with a
// GOAWAY whose debug data names the reason, {"reason":"..."} (a
// certificate of the other environment, a revoked one, its shutdown).
// That is all the operator can learn of why the pushes fail: the error
// of the requests the GOAWAY excluded carries its code and debug data.
func TestGoAwayReasonKept(t *testing.T) {
	const reason = `{"reason":"BadCertificateEnvironment"}`
	url, ca := rawServer(t, func(c *tls.Conn, fr *http2.Framer) {
		fr.WriteSettings()
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			if _, ok := f.(*http2.HeadersFrame); ok {
				fr.WriteGoAway(0, http2.ErrCodeNo, []byte(reason))
				time.Sleep(50 * time.Millisecond)
				return
			}
		}
	})
	c := newClient(t, h2client.Options{CAPath: ca})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err := do(ctx, c, url, 0)
	if err == nil || !strings.Contains(err.Error(), "BadCertificateEnvironment") {
		t.Fatalf("request excluded by a GOAWAY with debug data %s failed with %v, want the reason in it", reason, err)
	}
}

// TestGoAwayReasonKeptPastDeadline: a request a GOAWAY excluded is sent
// again on another connection; when that one does not answer before the
// request's deadline, the error still names the GOAWAY's reason, the only
// word of why the pushes fail, not only that their time was up. And it
// still says the deadline passed, which the backends answer as such.
func TestGoAwayReasonKeptPastDeadline(t *testing.T) {
	const reason = `{"reason":"BadCertificateEnvironment"}`
	var conns atomic.Int32
	stop := make(chan struct{})
	url, ca := rawServer(t, func(c *tls.Conn, fr *http2.Framer) {
		fr.WriteSettings()
		first := conns.Add(1) == 1
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			if _, ok := f.(*http2.HeadersFrame); ok {
				if !first {
					// Takes the request and never answers.
					<-stop
					return
				}
				fr.WriteGoAway(0, http2.ErrCodeNo, []byte(reason))
				time.Sleep(50 * time.Millisecond)
				return
			}
		}
	})
	t.Cleanup(func() { close(stop) }) // before the server's Close, which waits for this
	c := newClient(t, h2client.Options{CAPath: ca})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := do(ctx, c, url, 0)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "BadCertificateEnvironment") {
		t.Fatalf("request excluded by a GOAWAY with debug data %s, then unanswered until its deadline: %v, want the deadline passed and the reason", reason, err)
	}
	if n := conns.Load(); n < 2 {
		t.Fatalf("%d connections: the request was not sent again", n)
	}
}
