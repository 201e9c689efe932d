package h2client_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push/h2client"
)

// slowUplink forwards TCP connections to addr, carrying what the client
// sends at rate bytes a second (a slow or congested uplink) and what the
// service sends at once.
func slowUplink(t *testing.T, addr string, rate int) string {
	return relay(t, addr, func(dst, src net.Conn) {
		buf := make([]byte, rate/20)
		for {
			n, err := src.Read(buf)
			if err != nil {
				dst.Close()
				return
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond * time.Duration(n) / time.Duration(len(buf)))
		}
	}, func(dst, src net.Conn) { io.Copy(dst, src); dst.Close() })
}

// A live service that the request's body reaches slowly (a slow uplink):
// nothing comes back until it has read the body, but it acks every ping
// as soon as the ping reaches it. The stall ping, queued behind the
// body, must not take the connection for dead.
func TestSlowUplinkNotTakenForDead(t *testing.T) {
	s := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write([]byte(strconv.Itoa(len(b))))
	}), nil)
	addr := slowUplink(t, strings.TrimPrefix(s.URL, "https://"), 100<<10)
	c := newClient(t, h2client.Options{CAPath: s.CADir})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	body := bytes.Repeat([]byte("a"), 600<<10)
	start := time.Now()
	_, err := c.Do(ctx, &h2client.Request{Method: http.MethodPost, Addr: addr, Authority: addr, Path: "/", Body: body})
	if err != nil {
		t.Fatalf("a %d-byte request over a 100 KB/s uplink to a live service: %v after %s", len(body), err, time.Since(start))
	}
}
