package main

import (
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// httpPusher sends push requests to the HTTP API, the way an XMPP server
// module of mod_push_appserver's era does: one form POST per push.
type httpPusher struct {
	client *formClient
}

func newHTTPPusher(base string, conns int) *httpPusher {
	c, err := newFormClient(base, "/push_appserver/v1/push", conns)
	if err != nil {
		panic(err) // base is ours: http://host:port
	}
	return &httpPusher{client: c}
}

// push sends one request and returns "" for success, else what went wrong.
func (h *httpPusher) push(d device) string {
	form := "node=" + url.QueryEscape(d.node) + "&secret=" + url.QueryEscape(d.secret)
	status, body, err := h.client.post([]byte(form))
	if err != nil {
		return "transport"
	}
	if s := string(body); s == "OK\n"+d.node {
		return ""
	} else if why, ok := strings.CutPrefix(s, "ERROR\n"); ok {
		return why
	}
	return fmt.Sprintf("HTTP %d", status)
}

// ClosedLoop keeps c requests in flight for d, or until count (if > 0)
// pushes were sent.
func (h *httpPusher) ClosedLoop(devices []device, c int, d time.Duration, count int) *Phase {
	p := newPhase()
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for range c {
		wg.Go(func() {
			for time.Now().Before(end) {
				i := int(next.Add(1)) - 1
				if count > 0 && i >= count {
					return
				}
				t := time.Now()
				cond := h.push(devices[i%len(devices)])
				p.observe(time.Since(t), cond)
			}
		})
	}
	wg.Wait()
	p.duration = time.Since(start)
	p.Sent = int64(len(p.lat))
	p.finish()
	return p
}

// OpenLoop sends rate requests/s for d, whatever the answers do, with at
// most maxInFlight outstanding (beyond that a send counts as "overload").
func (h *httpPusher) OpenLoop(devices []device, rate float64, d time.Duration, maxInFlight int) *Phase {
	p := newPhase()
	p.Target = rate
	slots := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	start := time.Now()
	interval := time.Duration(float64(time.Second) / rate)
	next := start
	for i := 0; time.Since(start) < d; i++ {
		if wait := time.Until(next); wait > 0 {
			time.Sleep(wait)
		}
		next = next.Add(interval)
		p.Sent++
		select {
		case slots <- struct{}{}:
		default:
			p.mu.Lock()
			p.Errors["overload"]++
			p.mu.Unlock()
			continue
		}
		dev := devices[i%len(devices)]
		wg.Go(func() {
			defer func() { <-slots }()
			t := time.Now()
			cond := h.push(dev)
			p.observe(time.Since(t), cond)
		})
	}
	p.duration = time.Since(start)
	wg.Wait()
	p.finish()
	return p
}
