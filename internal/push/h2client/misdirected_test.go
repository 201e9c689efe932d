package h2client_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push/h2client"
)

// TestMisdirectedConnectionNotReused guards the retry of a 421
// Misdirected Request: the answer says the connection cannot serve the
// host (RFC 9110 15.5.20), and the request may go again over a different
// one. Sent again on the same connection, it got 421 again, every push
// of the app until the connection closed for some other reason: the
// retries and redeliveries the APNS and FCM backends make of a 421 all
// went where it could not be served.
func TestMisdirectedConnectionNotReused(t *testing.T) {
	var mu sync.Mutex
	first := "" // the first connection's remote address
	s := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if first == "" {
			first = r.RemoteAddr
		}
		misdirected := r.RemoteAddr == first
		mu.Unlock()
		if misdirected {
			w.WriteHeader(http.StatusMisdirectedRequest)
			return
		}
		w.Header().Set("apns-id", "1")
		w.WriteHeader(http.StatusOK)
	}), nil)
	c := newClient(t, h2client.Options{CAPath: s.CADir})
	t.Cleanup(func() { c.Close() })
	host := strings.TrimPrefix(s.URL, "https://")
	send := func() int {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := c.Do(ctx, &h2client.Request{Method: http.MethodPost, Addr: host, Authority: host,
			Path: "/3/device/00", Body: []byte(payload)})
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode
	}
	if got := send(); got != http.StatusMisdirectedRequest {
		t.Fatalf("first request: status %d, want 421", got)
	}
	if got := send(); got != http.StatusOK {
		t.Errorf("request after a 421: status %d, want 200 on another connection", got)
	}
}
