package metrics

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// The bounds of /metrics. A render (gathering every collector, encoding
// and compressing the page) costs hundreds of microseconds of CPU where
// the API's other requests cost ten, and whoever reaches the port can
// ask for one: unbounded, 2,000 scrapes a second raised a push's median
// latency from 0.13 to 5 ms.
const (
	// scrapeMaxWaiting is how many scrapes may wait for a render at
	// once; past it a scrape is answered 503. Monitoring scrapes a
	// server from one or two places, every few seconds at most.
	scrapeMaxWaiting = 64
	// scrapeIdleFactor is how many times its own duration a render is
	// followed by a pause before the next one begins: renders take
	// about a tenth of one core at most, whatever the rate of scrapes,
	// and a scrape that follows another at once waits a few ms.
	scrapeIdleFactor = 9
	// scrapeMaxIdle caps that pause, so that a render slowed by a
	// loaded machine does not hold the next scrapes past a scraper's
	// timeout.
	scrapeMaxIdle = time.Second
	// scrapeRetryAfter is the Retry-After of a scrape refused.
	scrapeRetryAfter = "1"
)

// scrapes serves the metrics page through next, rendering it once for
// the scrapes that wait together: one render at a time, each answering
// every scrape that arrived before it began and asked for the same page,
// so that a scrape never gets values older than itself and a thousand
// at once cost one render. A render is paced (scrapeIdleFactor) and at
// most maxWaiting scrapes wait; the others are answered 503 with
// Retry-After.
//
// promhttp's own MaxRequestsInFlight still renders once per scrape, and
// its CoalesceGather hands a scrape the values of a gather already under
// way, older than the scrape.
type scrapes struct {
	next       http.Handler
	maxWaiting int
	idleFactor time.Duration
	maxIdle    time.Duration
	now        func() time.Time
	sleep      func(time.Duration)

	mu      sync.Mutex
	waiting int
	// queue holds the renders not begun yet, oldest first, and pending
	// the same by page: a scrape joins its page's until it begins.
	queue     []*render
	pending   map[pageKey]*render
	rendering bool
	// notBefore is when the next render may begin.
	notBefore time.Time
}

// pageKey is what of a request the page rendered depends on: the formats
// and encodings it accepts (promhttp negotiates both) and the query
// (name[] picks families). Scrapes with the same key get the same bytes;
// the render is asked with a request built from the key alone, so this
// holds however promhttp reads it.
type pageKey struct {
	accept, acceptEncoding, query string
}

func keyOf(r *http.Request) pageKey {
	return pageKey{
		accept:         strings.Join(r.Header.Values("Accept"), "\n"),
		acceptEncoding: strings.Join(r.Header.Values("Accept-Encoding"), "\n"),
		query:          r.URL.RawQuery,
	}
}

// request rebuilds a request for the page of k. Header values never hold
// a newline, so the split gives back the values joined.
func (k pageKey) request() *http.Request {
	h := http.Header{}
	if k.accept != "" {
		h["Accept"] = strings.Split(k.accept, "\n")
	}
	if k.acceptEncoding != "" {
		h["Accept-Encoding"] = strings.Split(k.acceptEncoding, "\n")
	}
	r := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/metrics", RawQuery: k.query},
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: h, Host: "localhost"}
	return r.WithContext(context.Background())
}

// render is one rendering of a page and, once done is closed, its answer.
type render struct {
	key  pageKey
	done chan struct{}
	// waiters is how many scrapes wait for it; guarded by scrapes.mu.
	waiters int
	status  int
	header  http.Header
	body    bytes.Buffer
}

func newScrapes(next http.Handler) *scrapes {
	return &scrapes{
		next:       next,
		maxWaiting: scrapeMaxWaiting,
		idleFactor: scrapeIdleFactor,
		maxIdle:    scrapeMaxIdle,
		now:        time.Now,
		sleep:      time.Sleep,
		pending:    map[pageKey]*render{},
	}
}

func (s *scrapes) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := keyOf(r)
	s.mu.Lock()
	if s.waiting >= s.maxWaiting {
		s.mu.Unlock()
		w.Header().Set("Retry-After", scrapeRetryAfter)
		http.Error(w, "too many scrapes at once, try again later", http.StatusServiceUnavailable)
		return
	}
	s.waiting++
	rd := s.pending[key]
	if rd == nil {
		rd = &render{key: key, done: make(chan struct{})}
		s.pending[key] = rd
		s.queue = append(s.queue, rd)
	}
	rd.waiters++
	if !s.rendering {
		s.rendering = true
		go s.renderAll()
	}
	s.mu.Unlock()

	select {
	case <-rd.done:
	case <-r.Context().Done():
	}
	s.mu.Lock()
	s.waiting--
	rd.waiters--
	if rd.waiters == 0 && s.pending[rd.key] == rd {
		// Left by every scrape before it began: not rendered. Kept,
		// each scrape that leaves at once (a connection closed right
		// after its request, each with a query of its own) would add
		// a render to the queue, paced, past the bound on the
		// scrapes waiting: the queue would grow without bound, and a
		// scrape behind it wait for all of them.
		delete(s.pending, rd.key)
		s.queue = slices.DeleteFunc(s.queue, func(q *render) bool { return q == rd })
	}
	s.mu.Unlock()
	select {
	case <-rd.done:
	default:
		return // the client left
	}
	h := w.Header()
	for k, v := range rd.header {
		h[k] = slices.Clone(v)
	}
	w.WriteHeader(rd.status)
	_, _ = w.Write(rd.body.Bytes())
}

// renderAll renders the pages queued, one after the other, until none
// is left. A render is taken off the queue only as it begins, so that
// scrapes arriving during the pause before it still join it.
func (s *scrapes) renderAll() {
	for {
		s.mu.Lock()
		if len(s.queue) == 0 {
			s.rendering = false
			s.mu.Unlock()
			return
		}
		wait := s.notBefore.Sub(s.now())
		s.mu.Unlock()
		if wait > 0 {
			s.sleep(wait)
		}

		s.mu.Lock()
		if len(s.queue) == 0 {
			// Its scrapes all left during the pause.
			s.mu.Unlock()
			continue
		}
		rd := s.queue[0]
		s.queue[0] = nil
		s.queue = s.queue[1:]
		delete(s.pending, rd.key)
		s.mu.Unlock()

		start := s.now()
		rd.run(s.next)
		end := s.now()
		s.mu.Lock()
		s.notBefore = end.Add(min(end.Sub(start)*s.idleFactor, s.maxIdle))
		s.mu.Unlock()
		close(rd.done)
	}
}

// run renders the page into rd. A panic is answered 500 to the scrapes
// waiting (the registry already turns a collector's error into one) and
// ends no process: net/http recovers only the panics of its handlers'
// own goroutines.
func (rd *render) run(next http.Handler) {
	rec := &recorder{header: http.Header{}, body: &rd.body}
	defer func() {
		if recover() != nil {
			rd.status, rd.header = http.StatusInternalServerError, http.Header{"Content-Type": {"text/plain; charset=utf-8"}}
			rd.body.Reset()
			rd.body.WriteString("rendering the metrics failed\n")
			return
		}
		rd.status, rd.header = rec.status, rec.header
		if rd.status == 0 {
			rd.status = http.StatusOK
		}
	}()
	next.ServeHTTP(rec, rd.key.request())
}

// recorder is the http.ResponseWriter a render writes to.
type recorder struct {
	header http.Header
	status int
	body   *bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(p)
}
