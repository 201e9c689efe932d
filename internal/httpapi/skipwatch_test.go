package httpapi

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/sockio"
	"github.com/push-appserver/push-appserver/internal/testutil/logcore"
)

// skipConn is an admitted connection that notes whether a handler let
// net/http's watch of the client go.
type skipConn struct {
	net.Conn
	skipped bool
}

func (c *skipConn) SkipWatch() { c.skipped = true }

// A push, and nothing else, lets net/http's watch of the client go: a
// push is carried out whether or not the client waits, where a batch
// whose client is gone must start no more pushes and a registration's
// context ends with its client. Over TLS and HTTP/2 there is no watch of
// the connection's to skip.
func TestOnlyPushSkipsTheWatch(t *testing.T) {
	h := New(Options{Service: logcore.New(t, appserver.Options{}), Logger: slog.New(slog.DiscardHandler)})
	for _, tc := range []struct {
		name, path, body string
		tls              bool
		major            int
		want             bool
	}{
		{"push", v1 + "push", "node=n1&secret=s", false, 1, true},
		{"push over TLS", v1 + "push", "node=n1&secret=s", true, 1, false},
		{"push over HTTP/2", v1 + "push", "node=n1&secret=s", false, 2, false},
		{"push without a body", v1 + "push", "", false, 1, false},
		{"push-batch", v1 + "push-batch", `{"pushes": [{"node": "n1", "secret": "s"}]}`, false, 1, false},
		{"register", v1 + "register", "type=fcm&node=n1&token=t", false, 1, false},
		{"unregister", v1 + "unregister", "type=fcm&node=n1", false, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &skipConn{}
			r := httptest.NewRequest("POST", tc.path, strings.NewReader(tc.body))
			r = r.WithContext(context.WithValue(r.Context(), connKey{}, &limitConn{Conn: c}))
			r.ProtoMajor = tc.major
			if tc.tls {
				r.TLS = &tls.ConnectionState{}
			}
			h.ServeHTTP(httptest.NewRecorder(), r)
			if c.skipped != tc.want {
				t.Fatalf("watch skipped: %v, want %v", c.skipped, tc.want)
			}
		})
	}
}

// Pushes that let net/http's watch go, and requests that keep it, follow
// one another on one kept-alive connection of the server's own
// listeners, each answered as it should be, and a skipped watch ends no
// later request's context (net/http ends the connection's for a watch
// that fails).
func TestSkippedWatchesKeepTheConnection(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	api := New(Options{Service: logcore.New(t, appserver.Options{}), Logger: slog.New(slog.DiscardHandler)})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == v1+"ctx" {
			io.ReadAll(r.Body)
			fmt.Fprint(w, r.Context().Err())
			return
		}
		api.ServeHTTP(w, r)
	})
	srv := NewServer("", h, slog.New(slog.DiscardHandler))
	go srv.Serve(LimitListener(sockio.Listener{Listener: l}, NewConnLimit(ConnLimitOptions{Slots: 4})))
	t.Cleanup(func() { srv.Close() })
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	post := func(endpoint, body string) string {
		t.Helper()
		fmt.Fprintf(c, "POST %s%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s", v1, endpoint, len(body), body)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", endpoint, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.Close {
			t.Fatalf("%s: %v, connection closed: %v", endpoint, err, resp.Close)
		}
		return string(b)
	}
	reg := post("register", "type=fcm&node=n1&token=t1")
	secret, ok := strings.CutPrefix(reg, "OK\nn1\n")
	if !ok {
		t.Fatalf("register: %q", reg)
	}
	for i := range 3 {
		if got := post("push", "node=n1&secret="+secret); got != "OK\nn1" {
			t.Fatalf("push %d: %q", i, got)
		}
		if got := post("push", "node=n1&secret=wrong"); got != "ERROR\nNode or secret not found!" {
			t.Fatalf("push %d with a wrong secret: %q", i, got)
		}
	}
	if got := post("ctx", "x=y"); got != "<nil>" {
		t.Fatalf("a request after the pushes has its context ended: %s", got)
	}
	if got := post("unregister", "type=fcm&node=n1"); !strings.HasPrefix(got, "OK\nn1") {
		t.Fatalf("unregister: %q", got)
	}
	if got := post("push", "node=n1&secret="+secret); got != "ERROR\nNode or secret not found!" {
		t.Fatalf("push after unregister: %q", got)
	}
}
