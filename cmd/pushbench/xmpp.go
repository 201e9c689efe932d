package main

import (
	"bufio"
	"encoding/xml"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/xmppfake"
)

// newStream wraps an authenticated component stream for the benchmark.
func newStream(fs *xmppfake.Stream, jid string) *stream {
	st := &stream{conn: fs.Conn, dec: fs.Dec, w: bufio.NewWriterSize(fs.Conn, 64<<10), jid: jid, pending: map[string]time.Time{}}
	go st.read()
	return st
}

// stream sends publish IQs and matches the replies.
type stream struct {
	conn net.Conn
	dec  *xml.Decoder
	jid  string

	wmu sync.Mutex
	w   *bufio.Writer

	mu      sync.Mutex
	pending map[string]time.Time
	phase   *Phase
	slots   chan struct{}
	seq     atomic.Int64
	// tokenless: publish to each device's token instead of its node,
	// as fpush and Monal do.
	tokenless bool
}

func (s *stream) Close() { s.conn.Close() }

func (s *stream) send(d device, flush bool) error {
	id := "b" + strconv.FormatInt(s.seq.Add(1), 36)
	node := d.node
	if s.tokenless {
		node = d.token
	}
	iq := xmppfake.PublishIQ(id, "example.org", s.jid, node, d.secret, true)
	s.mu.Lock()
	s.pending[id] = time.Now()
	s.mu.Unlock()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if _, err := s.w.WriteString(iq); err != nil {
		return err
	}
	if flush {
		return s.w.Flush()
	}
	return nil
}

func (s *stream) flush() {
	s.wmu.Lock()
	s.w.Flush()
	s.wmu.Unlock()
}

// read matches replies to their IQs until the connection ends.
func (s *stream) read() {
	for {
		tok, err := s.dec.Token()
		if err != nil {
			return
		}
		st, ok := tok.(xml.StartElement)
		if !ok || st.Name.Local != "iq" {
			continue
		}
		var id, typ, to string
		for _, a := range st.Attr {
			switch a.Name.Local {
			case "id":
				id = a.Value
			case "type":
				typ = a.Value
			case "to":
				to = a.Value
			}
		}
		if typ == "get" || typ == "set" {
			// Not a reply. The component's keep-alive pings itself
			// through the server, which routes it back, as real
			// servers do; unanswered, the component would replace the
			// stream after a quiet minute and a half (a long
			// registration phase).
			if err := s.dec.Skip(); err != nil {
				return
			}
			if to == s.jid {
				s.routeBack(id)
			}
			continue
		}
		cond := ""
		if typ == "error" {
			cond = s.condition()
		} else if err := s.dec.Skip(); err != nil {
			return
		}
		now := time.Now()
		s.mu.Lock()
		sent, ok := s.pending[id]
		delete(s.pending, id)
		p := s.phase
		s.mu.Unlock()
		if ok && p != nil {
			p.observe(now.Sub(sent), cond)
		}
		if s.slots != nil {
			select {
			case <-s.slots:
			default:
			}
		}
	}
}

// routeBack sends the component the ping with id it addressed to itself.
func (s *stream) routeBack(id string) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.w.WriteString(`<iq type='get' id='` + id + `' from='` + s.jid + `' to='` + s.jid + `'><ping xmlns='urn:xmpp:ping'/></iq>`)
	s.w.Flush()
}

// condition reads an error reply to its end and returns the condition.
func (s *stream) condition() string {
	cond, depth := "", 1
	for depth > 0 {
		tok, err := s.dec.Token()
		if err != nil {
			return cond
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			if cond == "" && t.Name.Space == "urn:ietf:params:xml:ns:xmpp-stanzas" && t.Name.Local != "text" {
				cond = t.Name.Local
			}
		case xml.EndElement:
			depth--
		}
	}
	return cond
}

// Phase is one measured run.
type Phase struct {
	Sent     int64            `json:"sent"`
	OK       int64            `json:"ok"`
	Errors   map[string]int64 `json:"errors"`
	Rate     float64          `json:"completed_per_s"`
	Target   float64          `json:"target_per_s,omitempty"`
	P50ms    float64          `json:"p50_ms"`
	P90ms    float64          `json:"p90_ms"`
	P99ms    float64          `json:"p99_ms"`
	Maxms    float64          `json:"max_ms"`
	CPUus    float64          `json:"server_cpu_us_per_push"`
	Allocs   float64          `json:"allocs_per_push,omitempty"`
	Syscalls float64          `json:"syscalls_per_push,omitempty"`
	// Context switches of the server's threads per push.
	Voluntary   float64 `json:"voluntary_switches_per_push,omitempty"`
	Involuntary float64 `json:"involuntary_switches_per_push,omitempty"`
	// CacheHits is the share of the phase's lookups that found the
	// registration in the server's cache.
	CacheHits float64 `json:"cache_hit_ratio,omitempty"`
	WindowS   float64 `json:"window_s,omitempty"` // of an instruction count
	mu        sync.Mutex
	lat       []time.Duration
	duration  time.Duration
}

func newPhase() *Phase { return &Phase{Errors: map[string]int64{}} }

func (p *Phase) observe(d time.Duration, cond string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lat = append(p.lat, d)
	if cond == "" {
		p.OK++
	} else {
		p.Errors[cond]++
	}
}

func (p *Phase) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	sort.Slice(p.lat, func(i, j int) bool { return p.lat[i] < p.lat[j] })
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	p.P50ms, p.P90ms, p.P99ms = ms(percentile(p.lat, 50)), ms(percentile(p.lat, 90)), ms(percentile(p.lat, 99))
	if len(p.lat) > 0 {
		p.Maxms = ms(p.lat[len(p.lat)-1])
	}
	p.Rate = float64(len(p.lat)) / p.duration.Seconds()
}

// percentile of sorted durations, nearest rank.
func percentile(sorted []time.Duration, pct float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*pct/100+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func (s *stream) start(p *Phase) {
	s.mu.Lock()
	s.phase = p
	s.mu.Unlock()
}

// drain waits for the replies still pending, at most 10 s.
func (s *stream) drain() {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		n := len(s.pending)
		s.mu.Unlock()
		if n == 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ClosedLoop keeps c IQs in flight for d, or until count (if > 0) were sent.
func (s *stream) ClosedLoop(devices []device, c int, d time.Duration, count int) *Phase {
	p := newPhase()
	s.slots = make(chan struct{}, c)
	s.start(p)
	start := time.Now()
	end := start.Add(d)
	for i := 0; time.Now().Before(end) && (count <= 0 || p.Sent < int64(count)); i++ {
		select {
		case s.slots <- struct{}{}:
		case <-time.After(time.Second):
			continue
		}
		// Flush when the window is full, so writes batch under load.
		if err := s.send(devices[i%len(devices)], len(s.slots) == cap(s.slots) || i%16 == 0); err != nil {
			break
		}
		p.Sent++
	}
	s.flush()
	p.duration = time.Since(start)
	s.drain()
	s.slots = nil
	p.finish()
	return p
}

// OpenLoop sends at rate IQs/s for d, whatever the replies do.
func (s *stream) OpenLoop(devices []device, rate float64, d time.Duration) *Phase {
	p := newPhase()
	p.Target = rate
	s.start(p)
	start := time.Now()
	interval := time.Duration(float64(time.Second) / rate)
	next := start
	for i := 0; time.Since(start) < d; i++ {
		if wait := time.Until(next); wait > 0 {
			time.Sleep(wait)
		}
		s.send(devices[i%len(devices)], true)
		p.Sent++
		next = next.Add(interval)
	}
	p.duration = time.Since(start)
	s.drain()
	p.finish()
	return p
}
