package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// httpPusher sends push requests to the HTTP API, the way an XMPP server
// module of mod_push_appserver's era does: one form POST per push; or,
// with batch > 1, batch pushes per push-batch request, the way a backend
// waking many devices would.
type httpPusher struct {
	client *formClient
	batch  int
}

func newHTTPPusher(base string, conns, batch int) *httpPusher {
	path := "/push_appserver/v1/push"
	if batch > 1 {
		path = "/push_appserver/v1/push-batch"
	}
	c, err := newFormClient(base, path, conns)
	if err != nil {
		panic(err) // base is ours: http://host:port
	}
	return &httpPusher{client: c, batch: max(batch, 1)}
}

// send pushes to the devices of one request and observes each push.
func (h *httpPusher) send(p *Phase, devices []device) {
	t := time.Now()
	if h.batch == 1 {
		cond := h.push(devices[0])
		p.observe(time.Since(t), cond)
		return
	}
	conds := h.pushBatch(devices)
	lat := time.Since(t)
	for _, c := range conds {
		p.observe(lat, c)
	}
}

// pushBatch sends one push-batch request and returns each push's outcome
// as push does.
func (h *httpPusher) pushBatch(devices []device) []string {
	type item struct {
		Node   string `json:"node"`
		Secret string `json:"secret,omitempty"`
		Status string `json:"status,omitempty"`
		Error  string `json:"error,omitempty"`
	}
	var req struct {
		Pushes []item `json:"pushes"`
	}
	for _, d := range devices {
		req.Pushes = append(req.Pushes, item{Node: d.node, Secret: d.secret})
	}
	body, _ := json.Marshal(req)
	conds := make([]string, len(devices))
	fail := func(why string) []string {
		for i := range conds {
			conds[i] = why
		}
		return conds
	}
	status, resp, err := h.client.post(body)
	if err != nil {
		return fail("transport")
	}
	var ans struct {
		Results []item `json:"results"`
	}
	if status != 200 || json.Unmarshal(resp, &ans) != nil || len(ans.Results) != len(devices) {
		return fail(fmt.Sprintf("HTTP %d", status))
	}
	for i, r := range ans.Results {
		switch {
		case r.Node != devices[i].node:
			conds[i] = "answer for another node"
		case r.Status == "ok":
		default:
			conds[i] = r.Status
		}
	}
	return conds
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
			batch := make([]device, h.batch)
			for time.Now().Before(end) {
				i := int(next.Add(int64(h.batch))) - h.batch
				if count > 0 && i >= count {
					return
				}
				for j := range batch {
					batch[j] = devices[(i+j)%len(devices)]
				}
				h.send(p, batch)
			}
		})
	}
	wg.Wait()
	p.duration = time.Since(start)
	p.Sent = int64(len(p.lat))
	p.finish()
	return p
}

// OpenLoop sends rate pushes/s for d (in rate/batch requests/s), whatever
// the answers do, with at most maxInFlight requests outstanding (beyond
// that a request's pushes count as "overload").
func (h *httpPusher) OpenLoop(devices []device, rate float64, d time.Duration, maxInFlight int) *Phase {
	p := newPhase()
	p.Target = rate
	slots := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	start := time.Now()
	interval := time.Duration(float64(time.Second) * float64(h.batch) / rate)
	next := start
	for i := 0; time.Since(start) < d; i++ {
		if wait := time.Until(next); wait > 0 {
			time.Sleep(wait)
		}
		next = next.Add(interval)
		p.Sent += int64(h.batch)
		select {
		case slots <- struct{}{}:
		default:
			p.mu.Lock()
			p.Errors["overload"] += int64(h.batch)
			p.mu.Unlock()
			continue
		}
		batch := make([]device, h.batch)
		for j := range batch {
			batch[j] = devices[(i*h.batch+j)%len(devices)]
		}
		wg.Go(func() {
			defer func() { <-slots }()
			h.send(p, batch)
		})
	}
	p.duration = time.Since(start)
	wg.Wait()
	p.finish()
	return p
}
