package metrics

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// gateCollector counts the renders that gather it and exports the count
// as render_number, so a scrape tells which render answered it. The
// first render blocks in Collect until release is closed, once entered
// has been closed.
type gateCollector struct {
	desc     *prometheus.Desc
	calls    atomic.Int64
	entered  chan struct{}
	release  chan struct{}
	advance  func() // when set, called in each Collect
	blockOne bool
	opened   sync.Once
}

// open lets the first render go on. A test defers it too, after the
// server's Close, which waits for the scrapes held.
func (g *gateCollector) open() { g.opened.Do(func() { close(g.release) }) }

func newGateCollector(block bool) *gateCollector {
	return &gateCollector{
		desc:     prometheus.NewDesc("render_number", "Which render this is.", nil, nil),
		entered:  make(chan struct{}),
		release:  make(chan struct{}),
		blockOne: block,
	}
}

func (g *gateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- g.desc }

func (g *gateCollector) Collect(ch chan<- prometheus.Metric) {
	n := g.calls.Add(1)
	if g.advance != nil {
		g.advance()
	}
	if n == 1 && g.blockOne {
		close(g.entered)
		<-g.release
	}
	ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, float64(n))
}

// scrape gets /metrics from srv, uncompressed, and returns the status
// and body.
func scrape(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Error(err)
		return 0, ""
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Error(err)
	}
	return resp.StatusCode, string(b)
}

// waitWaiting waits until n scrapes wait in s: they are in, before their
// render begins.
func waitWaiting(t *testing.T, s *scrapes, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		w := s.waiting
		s.mu.Unlock()
		if w == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d scrapes waiting, want %d", w, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// renderOf returns the render_number a page shows.
func renderOf(page string) string {
	for l := range strings.Lines(page) {
		if v, ok := strings.CutPrefix(l, "render_number "); ok {
			return strings.TrimSpace(v)
		}
	}
	return "none"
}

// Scrapes that arrive while a render runs cost one render between them,
// the next, and none gets the render under way as it arrived: its values
// would be older than the scrape.
func TestScrapesShareTheNextRender(t *testing.T) {
	m := New()
	g := newGateCollector(true)
	m.reg.MustRegister(g)
	m.scrapes.sleep = func(time.Duration) {}
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	defer g.open()

	first := make(chan string, 1)
	go func() { _, page := scrape(t, srv.URL); first <- page }()
	<-g.entered
	const wave = 40
	pages := make(chan string, wave)
	var wg sync.WaitGroup
	for range wave {
		wg.Go(func() {
			code, page := scrape(t, srv.URL)
			if code != http.StatusOK {
				t.Errorf("status %d", code)
			}
			pages <- page
		})
	}
	waitWaiting(t, m.scrapes, wave+1)
	g.open()
	wg.Wait()
	close(pages)

	if got := renderOf(<-first); got != "1" {
		t.Errorf("first scrape got render %s, want 1", got)
	}
	for page := range pages {
		if got := renderOf(page); got != "2" {
			t.Errorf("a scrape arrived during render 1 got render %s, want 2", got)
		}
	}
	if n := g.calls.Load(); n != 2 {
		t.Errorf("%d renders for %d scrapes, want 2", n, wave+1)
	}
}

// Past the scrapes that may wait, a scrape is answered 503 with
// Retry-After at once, and the ones waiting are answered as usual.
func TestScrapesPastTheBoundAreRefused(t *testing.T) {
	m := New()
	g := newGateCollector(true)
	m.reg.MustRegister(g)
	m.scrapes.sleep = func(time.Duration) {}
	m.scrapes.maxWaiting = 3
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	defer g.open()

	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if code, _ := scrape(t, srv.URL); code != http.StatusOK {
				t.Errorf("a scrape within the bound: status %d, want 200", code)
			}
		})
	}
	<-g.entered
	waitWaiting(t, m.scrapes, 3)
	// A scrape let in would wait for the render held: the timeout
	// fails the test rather than hanging it.
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" {
		t.Errorf("past the bound: status %d, Retry-After %q; want 503 and 1", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	g.open()
	wg.Wait()
	if code, _ := scrape(t, srv.URL); code != http.StatusOK {
		t.Errorf("once the others are answered: status %d, want 200", code)
	}
}

// A render is followed by a pause of scrapeIdleFactor times its
// duration, at most scrapeMaxIdle, before the next begins: a flood of
// scrapes takes a bounded share of the CPU however fast it comes.
func TestScrapesPaceRenders(t *testing.T) {
	for _, tc := range []struct {
		render, pause time.Duration
	}{
		{time.Millisecond, scrapeIdleFactor * time.Millisecond},
		{20 * time.Millisecond, scrapeIdleFactor * 20 * time.Millisecond},
		{time.Second, scrapeMaxIdle},
	} {
		t.Run(tc.render.String(), func(t *testing.T) {
			var mu sync.Mutex
			clock := time.Unix(1e9, 0)
			now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
			tick := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
			var slept []time.Duration
			reg := prometheus.NewRegistry()
			g := newGateCollector(false)
			g.advance = func() { tick(tc.render) }
			reg.MustRegister(g)
			s := newScrapes(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
			s.now = now
			s.sleep = func(d time.Duration) { slept = append(slept, d); tick(d) }
			srv := httptest.NewServer(s)
			defer srv.Close()

			for range 3 {
				if code, _ := scrape(t, srv.URL); code != http.StatusOK {
					t.Fatalf("status %d", code)
				}
			}
			want := []time.Duration{tc.pause, tc.pause}
			if fmt.Sprint(slept) != fmt.Sprint(want) {
				t.Errorf("pauses %v, want %v", slept, want)
			}
		})
	}
}

// A single scraper gets the page promhttp serves, byte for byte, with
// its headers, whatever format, encoding and families it asks for.
func TestScrapePageUnchanged(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "test_total", Help: "A counter."}, []string{"app"})
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "test_seconds", Help: "A histogram."})
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "test_gauge", Help: "A gauge."})
	reg.MustRegister(c, h, gauge)
	for i := range 50 {
		c.WithLabelValues(fmt.Sprint("app", i%7)).Add(float64(i))
		h.Observe(float64(i) / 100)
	}
	gauge.Set(3)
	direct := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer direct.Close()
	shared := httptest.NewServer(newScrapes(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	defer shared.Close()
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}

	for _, tc := range []struct {
		name  string
		query string
		head  http.Header
	}{
		{"no headers", "", nil},
		{"gzip", "", http.Header{"Accept-Encoding": {"gzip"}}},
		{"prometheus", "", http.Header{
			"Accept":          {"application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"},
			"Accept-Encoding": {"gzip"},
		}},
		{"protobuf", "", http.Header{"Accept": {"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3"}}},
		{"identity refused", "", http.Header{"Accept-Encoding": {"identity;q=0", "br"}}},
		{"some families", "name[]=test_total&name[]=test_gauge", http.Header{"Accept-Encoding": {"gzip"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			get := func(base string) (*http.Response, []byte) {
				req, err := http.NewRequest(http.MethodGet, base+"/metrics?"+tc.query, nil)
				if err != nil {
					t.Fatal(err)
				}
				for k, v := range tc.head {
					req.Header[k] = v
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				return resp, b
			}
			want, wantBody := get(direct.URL)
			got, gotBody := get(shared.URL)
			if got.StatusCode != want.StatusCode || !bytes.Equal(gotBody, wantBody) {
				t.Errorf("status %d, body %q; want %d, %q", got.StatusCode, gotBody, want.StatusCode, wantBody)
			}
			for _, k := range []string{"Content-Type", "Content-Encoding", "Vary", "Content-Length", "Transfer-Encoding"} {
				if g, w := got.Header.Values(k), want.Header.Values(k); fmt.Sprint(g) != fmt.Sprint(w) {
					t.Errorf("%s: %q, want %q", k, g, w)
				}
			}
			if fmt.Sprint(got.TransferEncoding) != fmt.Sprint(want.TransferEncoding) {
				t.Errorf("transfer encoding %v, want %v", got.TransferEncoding, want.TransferEncoding)
			}
		})
	}
}

// The server's own page keeps its families and format: the Go runtime's
// and the process's beside the app server's.
func TestScrapeServesEveryFamily(t *testing.T) {
	m := New()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q", ct)
	}
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if !bytes.Contains(b, []byte("\n# TYPE "+f.GetName()+" ")) && !bytes.HasPrefix(b, []byte("# HELP "+f.GetName()+" ")) {
			t.Errorf("family %s missing", f.GetName())
		}
	}
}

// A scrape that leaves before its render begins leaves no render behind
// when no other scrape waits for it: scrapes that close their
// connections at once, each with a page of its own, would otherwise pile
// up renders past the bound on the scrapes waiting, without end, and a
// scrape that stays waits behind every one of them, paced.
func TestAbandonedScrapesLeaveNoRender(t *testing.T) {
	m := New()
	g := newGateCollector(true)
	m.reg.MustRegister(g)
	m.scrapes.sleep = func(time.Duration) {}
	defer g.open()

	first := make(chan struct{})
	go func() {
		defer close(first)
		m.scrapes.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/metrics", nil))
	}()
	<-g.entered
	const left = 1000
	for i := range left {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		req := httptest.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("/metrics?left=%d", i), nil)
		m.scrapes.ServeHTTP(httptest.NewRecorder(), req)
	}
	m.scrapes.mu.Lock()
	queued := len(m.scrapes.queue)
	m.scrapes.mu.Unlock()
	g.open()
	<-first

	rec := httptest.NewRecorder()
	m.scrapes.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("status %d, want 200", rec.Code)
	}
	if queued != 0 {
		t.Errorf("%d renders queued for %d scrapes that left, want 0", queued, left)
	}
	if n := g.calls.Load(); n != 2 {
		t.Errorf("%d renders for 2 scrapes that stayed and %d that left, want 2", n, left)
	}
}
