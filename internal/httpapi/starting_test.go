package httpapi_test

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/httpapi"
)

// TestStartingAnswers: while the server starts, liveness holds, readiness
// does not, both say why, and every other path asks the client to come
// back, never answering as if it had served the request.
func TestStartingAnswers(t *testing.T) {
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "# metrics\n") })
	s := httpapi.NewStarting("opening the registry", metrics, 10*time.Second)
	s.SetReason("waiting for PostgreSQL: connection refused")
	const v1 = "/push_appserver/v1/"
	for _, tt := range []struct {
		method, path string
		status       int
		body         string
	}{
		{"GET", v1 + "health", 200, "STARTING\nwaiting for PostgreSQL: connection refused\n"},
		{"GET", v1 + "ready", 503, "NOT READY\nwaiting for PostgreSQL: connection refused\n"},
		{"GET", v1 + "ready?require=http", 503, "NOT READY\nwaiting for PostgreSQL: connection refused\n"},
		{"GET", v1 + "live", 200, "STARTING\nwaiting for PostgreSQL: connection refused\n"},
		{"GET", "/metrics", 200, "# metrics\n"},
		{"POST", v1 + "register", 503, "ERROR\nStarting, try again later!"},
		{"POST", v1 + "unregister", 503, "ERROR\nStarting, try again later!"},
		{"POST", v1 + "push", 503, "ERROR\nStarting, try again later!"},
		{"POST", v1 + "push-batch", 503, "ERROR\nStarting, try again later!"},
		{"GET", v1 + "register", 503, "ERROR\nStarting, try again later!"},
		{"GET", v1 + "settings", 503, "ERROR\nStarting, try again later!"},
		{"POST", v1 + "health", 503, "ERROR\nStarting, try again later!"},
		{"GET", v1 + "no-such-page", 503, "ERROR\nStarting, try again later!"},
		{"GET", "/", 503, "ERROR\nStarting, try again later!"},
	} {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			w := httptest.NewRecorder()
			s.ServeHTTP(w, httptest.NewRequest(tt.method, tt.path, strings.NewReader(url.Values{"type": {"apns"}}.Encode())))
			if w.Code != tt.status || w.Body.String() != tt.body {
				t.Fatalf("got %d %q, want %d %q", w.Code, w.Body.String(), tt.status, tt.body)
			}
			retry := w.Header().Get("Retry-After")
			if tt.status == 503 && !strings.HasPrefix(tt.body, "NOT READY") && retry != "10" {
				t.Fatalf("Retry-After %q, want 10", retry)
			}
		})
	}

	t.Run("no metrics", func(t *testing.T) {
		w := httptest.NewRecorder()
		httpapi.NewStarting("starting", nil, time.Second).ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
		if w.Code != 503 {
			t.Fatalf("/metrics without metrics: %d", w.Code)
		}
	})
}

// TestSwitchKeepsConnections: a connection opened before the switch, kept
// alive over HTTP/1.1 or multiplexed over HTTP/2, gets the new handler
// for its next request, and no new connection is needed for it.
func TestSwitchKeepsConnections(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		name := "HTTP/1.1"
		if h2 {
			name = "HTTP/2"
		}
		t.Run(name, func(t *testing.T) {
			sw := httpapi.NewSwitch(httpapi.NewStarting("starting", nil, time.Second))
			srv := httptest.NewUnstartedServer(sw)
			var conns atomic.Int32
			srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
				if st == http.StateNew {
					conns.Add(1)
				}
			}
			srv.EnableHTTP2 = h2
			srv.StartTLS()
			defer srv.Close()
			client := srv.Client()
			register := func() (int, string, int) {
				t.Helper()
				resp, err := client.PostForm(srv.URL+"/push_appserver/v1/register", url.Values{"type": {"apns"}, "node": {"n1"}, "token": {"ab"}})
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				return resp.StatusCode, string(b), resp.ProtoMajor
			}
			if code, body, proto := register(); code != 503 || proto != map[bool]int{false: 1, true: 2}[h2] {
				t.Fatalf("before the switch: %d %q over HTTP/%d", code, body, proto)
			}
			sw.Set(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "OK\nn1\nsecret") }))
			if code, body, _ := register(); code != 200 || body != "OK\nn1\nsecret" {
				t.Fatalf("after the switch: %d %q", code, body)
			}
			if n := conns.Load(); n != 1 {
				t.Fatalf("%d connections, want the one kept from before the switch", n)
			}
		})
	}
}
