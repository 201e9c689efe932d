package h2client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push/h2client"
	"github.com/push-appserver/push-appserver/internal/testutil/mockhttp"
)

// startServer serves h over HTTP/2 and TLS with net/http's server, set up
// by setup when not nil.
func startServer(t *testing.T, h http.Handler, setup func(*http.Server)) *mockhttp.Server {
	t.Helper()
	s, err := mockhttp.StartWith("h2client", h, nil, setup)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func newClient(t *testing.T, o h2client.Options) *h2client.Client {
	t.Helper()
	hc, err := h2client.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return hc
}

// A body larger than the service's receive window goes out as the service
// grants more; response headers larger than a frame arrive in
// CONTINUATION frames; a response body over the client's limit fails its
// request alone.
func TestLargeBodiesAndHeaders(t *testing.T) {
	s := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("x-big", strings.Repeat("h", 40<<10))
		w.Header()["X-Twice"] = []string{"1", "2"}
		w.Header().Set("x-after", "3")
		w.Header().Set("x-length", strconv.Itoa(len(body)))
		if r.URL.Query().Has("huge") {
			w.Write(make([]byte, 1<<20))
			return
		}
		w.Write(bytes.ToUpper(body[:min(len(body), 100<<10)]))
	}), func(s *http.Server) {
		// Small windows, so that bodies wait for window updates.
		s.HTTP2 = &http.HTTP2Config{MaxReceiveBufferPerStream: 16 << 10, MaxReceiveBufferPerConnection: 64 << 10}
	})
	c := newClient(t, h2client.Options{CAPath: s.CADir})
	for _, size := range []int{0, 1, 65535, 65536, 300 << 10} {
		body := bytes.Repeat([]byte("a"), size)
		req, err := http.NewRequest(http.MethodPost, s.URL+"/echo", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := c.HTTP().Do(req.WithContext(ctx))
		if err != nil {
			cancel()
			t.Fatalf("%d bytes: %v", size, err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		if resp.Status != "200 OK" || resp.Header.Get("X-Length") != strconv.Itoa(size) || len(resp.Header.Get("X-Big")) != 40<<10 {
			t.Fatalf("%d bytes: status %q, x-length %q, x-big %d bytes", size, resp.Status, resp.Header.Get("X-Length"), len(resp.Header.Get("X-Big")))
		}
		if tw, af := resp.Header["X-Twice"], resp.Header["X-After"]; len(tw) != 2 || tw[0] != "1" || tw[1] != "2" || len(af) != 1 || af[0] != "3" {
			t.Fatalf("%d bytes: x-twice %q, x-after %q", size, tw, af)
		}
		if want := bytes.ToUpper(body[:min(size, 100<<10)]); !bytes.Equal(got, want) {
			t.Fatalf("%d bytes: %d bytes came back, want %d", size, len(got), len(want))
		}
	}
	if _, err := c.HTTP().Get(s.URL + "/?huge"); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Fatalf("1 MB response: %v, want it refused", err)
	}
	if _, err := c.HTTP().Get(s.URL + "/"); err != nil {
		t.Fatalf("after a refused response: %v", err)
	}
}

// A body that is not as long as the request's ContentLength says is
// refused before anything is sent; the connection serves the next request.
func TestBodyLengthMustMatch(t *testing.T) {
	var served atomic.Int32
	s := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		io.Copy(io.Discard, r.Body)
	}), nil)
	c := newClient(t, h2client.Options{CAPath: s.CADir})
	for _, tt := range []struct {
		body   string
		length int64
		ok     bool
	}{
		{"0123456789", 5, false},
		{"01234", 10, false},
		{"0123456789", 10, true},
	} {
		req, err := http.NewRequest(http.MethodPost, s.URL+"/", strings.NewReader(tt.body))
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = tt.length
		resp, err := c.HTTP().Transport.RoundTrip(req)
		if (err == nil) != tt.ok {
			t.Fatalf("%d-byte body, ContentLength %d: error %v", len(tt.body), tt.length, err)
		}
		if err == nil {
			resp.Body.Close()
		}
	}
	if n := served.Load(); n != 1 {
		t.Fatalf("the service saw %d requests, want 1", n)
	}
}

// The service's stream limit holds per connection: beyond it requests wait
// or go to another connection, up to MaxConns.
func TestStreamLimit(t *testing.T) {
	var mu sync.Mutex
	inFlight, most := map[string]int{}, 0
	s := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inFlight[r.RemoteAddr]++
		most = max(most, inFlight[r.RemoteAddr])
		mu.Unlock()
		time.Sleep(10 * time.Millisecond)
		mu.Lock()
		inFlight[r.RemoteAddr]--
		mu.Unlock()
	}), func(s *http.Server) { s.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: 5} })
	c, err := h2client.New(h2client.Options{CAPath: s.CADir, MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var failed atomic.Int32
	for i := range 100 {
		wg.Go(func() {
			if err := post(context.Background(), c, s.URL, i); err != nil {
				failed.Add(1)
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if most > 5 || len(inFlight) > 2 {
		t.Fatalf("%d requests at once on one connection (limit 5), %d connections (limit 2)", most, len(inFlight))
	}
}

// A new connection takes a few requests until its first answer; that
// answer lets all the waiting requests go, though it ended one stream and
// wakes one waiter: each waiter that finds room left wakes the next.
func TestFirstAnswerLetsEveryWaiterGo(t *testing.T) {
	const n, held = 50, 40
	var arrived, holding atomic.Int32
	release := make(chan struct{})
	s := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("apns-id", "1")
		if arrived.Add(1) == 1 {
			time.Sleep(50 * time.Millisecond) // the others queue meanwhile
			return
		}
		// Answer only once held requests are under way at once.
		if holding.Add(1) == held {
			close(release)
		}
		<-release
	}), nil)
	c := newClient(t, h2client.Options{CAPath: s.CADir, MaxConns: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := do(ctx, c, s.URL, i); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if h := holding.Load(); h < held {
		t.Fatalf("at most %d requests under way after the first answer, want %d", h, held)
	}
}

// A request whose deadline passes fails with the context's error; its
// stream is reset and the connection goes on serving.
func TestDeadlineResetsOnlyItsStream(t *testing.T) {
	reset := make(chan struct{})
	s := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-r.Context().Done():
				close(reset)
			case <-time.After(time.Minute):
			}
		}
	}), nil)
	c := newClient(t, h2client.Options{CAPath: s.CADir})
	// The connection is up before the slow request: a deadline that
	// passed during the dial would end the request before the service
	// had it, and the service would have no stream to be told about.
	if err := post(context.Background(), c, s.URL, 0); err != nil {
		t.Fatal(err)
	}
	// Long enough for the request's headers to reach the service on a
	// loaded machine; far shorter than the handler's minute.
	const timeout = time.Second
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+"/slow", strings.NewReader("{}"))
	start := time.Now()
	if _, err := c.HTTP().Do(req); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow request: %v, want the deadline", err)
	}
	if d := time.Since(start); d > timeout+10*time.Second {
		t.Fatalf("slow request failed after %s", d)
	}
	select {
	case <-reset:
	case <-time.After(10 * time.Second):
		t.Fatal("the service was not told that the request was abandoned")
	}
	for i := range 3 {
		if err := post(context.Background(), c, s.URL, i); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.Connections(); n != 1 {
		t.Fatalf("%d connections, want the first to go on serving", n)
	}
}

// relay forwards the TCP connections made to the address it returns to
// addr, as a network path between the two would: up carries what the
// client sends, down what the service sends.
func relay(t *testing.T, addr string, up, down func(dst, src net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			t.Cleanup(func() { c.Close(); s.Close() })
			go up(s, c)
			go down(c, s)
		}
	}()
	return ln.Addr().String()
}

// blackhole forwards TCP connections to addr until told to drop
// everything, as a dead network path does.
type blackhole struct {
	addr    string
	dropped atomic.Bool
}

func newBlackhole(t *testing.T, addr string) *blackhole {
	b := &blackhole{}
	b.addr = relay(t, addr, b.pipe, b.pipe)
	return b
}

func (b *blackhole) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		if !b.dropped.Load() {
			dst.Write(buf[:n])
		}
	}
}

// A connection on which nothing arrives any more is pinged and, when the
// ping goes unanswered too, closed: the request on it fails long before
// its deadline, and the next one goes out on a new connection.
func TestUnansweredPingClosesTheConnection(t *testing.T) {
	s := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), nil)
	b := newBlackhole(t, strings.TrimPrefix(s.URL, "https://"))
	base := "https://" + b.addr
	c := newClient(t, h2client.Options{CAPath: s.CADir, PingAfter: 100 * time.Millisecond, PingTimeout: 100 * time.Millisecond})
	if err := post(context.Background(), c, base, 0); err != nil {
		t.Fatal(err)
	}
	b.dropped.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	err := post(ctx, c, base, 1)
	if err == nil || ctx.Err() != nil {
		t.Fatalf("request over a dead path: %v (deadline passed: %t), want the connection closed first", err, ctx.Err() != nil)
	}
	t.Logf("failed after %s: %v", time.Since(start), err)
	b.dropped.Store(false)
	if err := post(ctx, c, base, 2); err != nil {
		t.Fatalf("after the path came back: %v", err)
	}
}

// A stream the service resets fails only its own request.
func TestResetStreamFailsOneRequest(t *testing.T) {
	s := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, fmt.Sprintf("%064x", 2)) {
			panic(http.ErrAbortHandler) // RST_STREAM INTERNAL_ERROR
		}
	}), nil)
	c := newClient(t, h2client.Options{CAPath: s.CADir})
	for i := range 4 {
		err := post(context.Background(), c, s.URL, i)
		if (err != nil) != (i == 1) {
			t.Fatalf("request %d: %v", i, err)
		}
	}
}

// Requests with Fields arrive with those fields at net/http's server,
// whichever Fields, extra Header fields and body lengths come in between,
// with the server's table at its default and at sizes that evict the
// fields or keep none.
func TestFieldsArrive(t *testing.T) {
	for _, table := range []int{0, 100, 1} { // 0: the server's default
		t.Run(fmt.Sprint(table), func(t *testing.T) {
			s := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				fmt.Fprintf(w, "%s %s %s %d %d", r.Header.Get("Authorization"), r.Header.Get("Apns-Priority"), r.Header.Get("X-Extra"), r.ContentLength, len(body))
			}), func(s *http.Server) {
				if table > 0 {
					s.HTTP2 = &http.HTTP2Config{MaxDecoderHeaderTableSize: table}
				}
			})
			c := newClient(t, h2client.Options{CAPath: s.CADir})
			host := strings.TrimPrefix(s.URL, "https://")
			var fields []*h2client.Fields
			for i := range 3 {
				fs, err := h2client.NewFields(http.Header{"Authorization": {fmt.Sprintf("bearer %d%s", i, strings.Repeat("t", 200))}, "Apns-Priority": {fmt.Sprint(i)}})
				if err != nil {
					t.Fatal(err)
				}
				fields = append(fields, fs)
			}
			for i := range 60 {
				n := i % 3
				if i%7 == 0 {
					n = (i / 7) % 3
				}
				req := &h2client.Request{Method: http.MethodPost, Addr: host, Authority: host, Path: fmt.Sprintf("/%d", i), Fields: fields[n], Body: make([]byte, i%5)}
				extra := ""
				if i%4 == 0 {
					extra = fmt.Sprint("x", i)
					req.Header = http.Header{"X-Extra": {extra}}
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				resp, err := c.Do(ctx, req)
				cancel()
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				want := fmt.Sprintf("bearer %d%s %d %s %d %d", n, strings.Repeat("t", 200), n, extra, i%5, i%5)
				if got := string(resp.Body); resp.StatusCode != 200 || got != want {
					t.Fatalf("request %d: %d %q\nwant %q", i, resp.StatusCode, got, want)
				}
			}
		})
	}
}

// A connection is pinged once it has been quiet for PingAfter, and closed
// PingTimeout later when nothing came (Options' doc, README: "quiet for
// 30 s is pinged and dropped when no answer comes within 10 s"), however
// the last frame fell against the watch's own ticks.
func TestQuietConnectionPingedOnTime(t *testing.T) {
	// Two seconds, so that a loaded machine's late timers (hundreds of
	// milliseconds under the race detector) fit between the latest ping
	// the watch may send and the one a look per PingAfter would send.
	const after, timeout = 2 * time.Second, 200 * time.Millisecond
	s := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), nil)
	b := newBlackhole(t, strings.TrimPrefix(s.URL, "https://"))
	base := "https://" + b.addr
	c := newClient(t, h2client.Options{CAPath: s.CADir, PingAfter: after, PingTimeout: timeout})
	if err := post(context.Background(), c, base, 0); err != nil { // dials: the watch starts
		t.Fatal(err)
	}
	// Just after the watch's first look, which saw the answer above.
	time.Sleep(after + 100*time.Millisecond)
	if err := post(context.Background(), c, base, 1); err != nil {
		t.Fatal(err)
	}
	b.dropped.Store(true) // the last frame came just now
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	err := post(ctx, c, base, 2)
	took := time.Since(start)
	t.Logf("request on the dead path failed after %s: %v", took, err)
	// Pinged at most a quarter of PingAfter after it became due (the
	// watch looks four times per PingAfter), the request fails within
	// 2.5 s + PingTimeout = 2.7 s. A watch looking once per PingAfter
	// would ping almost PingAfter late, 3.9 s after the last frame here,
	// the request failing after 4.1 s (timers are late, never early).
	// The limit, 3.8 s, lies between, with 1.1 s for a loaded machine's
	// late timers: 600 ms was too little, the request failing after up
	// to 3.6 s in 20 runs beside three busy loops on two cores. (A watch
	// looking once per PingAfter but at least once a second, as the
	// stall check makes it, fails it after 3.1 s: too close to 2.7 s
	// for a bound between the two to hold on a loaded machine.)
	if limit := after + after/2 + timeout + 600*time.Millisecond; took > limit {
		t.Fatalf("the connection, quiet since %s ago, was dropped only then; want within %s (PingAfter %s + PingTimeout %s)", took, limit, after, timeout)
	}
}

// A request that waits on a connection from which nothing at all comes
// gets it pinged at once, not once the connection has been quiet for
// PingAfter (30 s): when the ping goes unanswered, the connection is
// closed within seconds, the request fails well before its deadline, and
// the next one goes out on a new connection.
func TestStalledRequestPingsAtOnce(t *testing.T) {
	s := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), nil)
	b := newBlackhole(t, strings.TrimPrefix(s.URL, "https://"))
	base := "https://" + b.addr
	c := newClient(t, h2client.Options{CAPath: s.CADir})
	if err := post(context.Background(), c, base, 0); err != nil {
		t.Fatal(err)
	}
	b.dropped.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	err := post(ctx, c, base, 1)
	took := time.Since(start)
	if err == nil || ctx.Err() != nil || took > 12*time.Second {
		t.Fatalf("request over a dead path: %v after %s (deadline passed: %t), want the connection closed within seconds", err, took, ctx.Err() != nil)
	}
	b.dropped.Store(false)
	if err := post(ctx, c, base, 2); err != nil {
		t.Fatalf("after the path came back: %v", err)
	}
}
