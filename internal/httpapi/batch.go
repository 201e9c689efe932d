package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
)

// MaxBatchPushes bounds the pushes of one push-batch request, and with them
// the pushes one request can keep in flight.
const MaxBatchPushes = 100

// MaxBatchBodySize bounds a push-batch request's body: room for
// MaxBatchPushes nodes of the longest length a registration allows (256
// bytes) with 64-character secrets.
const MaxBatchBodySize = 64 << 10

// batchRequest is a push-batch request's body.
type batchRequest struct {
	Pushes []batchPush `json:"pushes"`
}

type batchPush struct {
	Node   string `json:"node"`
	Secret string `json:"secret"`
}

// batchResult is one push's outcome, in the request's order. Status is
// "ok" or one of the error codes of pushOutcome; Error is then the text
// the single push endpoint would have answered.
type batchResult struct {
	Node   string `json:"node"`
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

// pushBatch sends several pushes for one request, each with its own node
// and secret and each checked, throttled and reported as /v1/push would.
// It exists for the backends that wake many devices at once: a request
// per push costs the server more in HTTP than in the push itself.
func (a *api) pushBatch(w http.ResponseWriter, r *http.Request) {
	allowOrigin(w, r)
	pushes, msg := readBatch(r.Body, r.ContentLength)
	if msg != "" {
		// The whole batch is refused: one malformed request, as /push
		// counts one.
		a.rejectMalformed("", msg)
		badRequest(w, msg)
		return
	}
	batch := &batchRun{a: a, source: a.pushSource(r), results: make([]batchResult, len(pushes))}
	jobs := make([]batchJob, len(pushes)) // one allocation for the batch
	ctx := pushContext(r)
	for i, p := range pushes {
		j := &jobs[i]
		j.run, j.i, j.push = batch, i, p
		j.slot.Init(ctx, a.pushers.places)
		batch.wg.Add(1)
		// A client that is gone stops the pushes not yet started.
		if err := a.pushers.run(r.Context(), &j.slot, j); err != nil {
			batch.wg.Done()
			batch.results[i] = batchResultOf(p.Node, err)
		}
	}
	batch.wg.Wait()
	// Whole, with its length: net/http would send a longer answer than
	// its buffer chunked, in several writes.
	b, err := json.Marshal(struct {
		Results []batchResult `json:"results"`
	}{batch.results})
	if err != nil {
		a.Logger.Error("encoding a push-batch answer", "err", err)
		http.Error(w, "ERROR\nInternal server error!", http.StatusInternalServerError)
		return
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}

// batchRun is what the pushes of one push-batch request share.
type batchRun struct {
	a       *api
	source  string // the client's, for every push of the batch
	results []batchResult
	wg      sync.WaitGroup
}

// batchJob is one push of a batch, with its slot: a value in a slice of
// the batch's rather than a closure each, which would cost the push an
// allocation.
type batchJob struct {
	slot push.Slot
	run  *batchRun
	i    int
	push batchPush
}

func (j *batchJob) do() {
	defer j.run.wg.Done()
	j.run.results[j.i] = batchResultOf(j.push.Node, j.run.a.batchPush(j.slot.Context(), j.push, j.run.source))
}

// errPanicked fails a push of a batch whose handling panicked.
var errPanicked = errors.New("handling the push panicked")

// batchPush sends one push of a batch. It runs on a pusher, off the
// request's goroutine, where nothing else would recover a panic: one
// fails its own push only.
func (a *api) batchPush(ctx context.Context, p batchPush, source string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			a.guard.logPanic(r, "path", "push-batch")
			err = errPanicked
		}
	}()
	return a.Service.Push(ctx, appserver.PushRequest{Node: p.Node, Secret: p.Secret, Source: source})
}

func batchResultOf(node string, err error) batchResult {
	if err == nil {
		return batchResult{Node: node, Status: "ok"}
	}
	status, text := pushOutcome(err)
	return batchResult{Node: node, Status: status, Error: text}
}

// readBatch decodes a push-batch body, or says in one line what is wrong
// with it.
func readBatch(body io.ReadCloser, length int64) ([]batchPush, string) {
	b, msg := readBody(body, length, MaxBatchBodySize)
	if msg != "" {
		return nil, msg
	}
	if msg := strictBatch(b); msg != "" {
		return nil, msg
	}
	var req batchRequest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, "Malformed JSON: " + firstLine(err)
	}
	switch {
	case len(req.Pushes) == 0:
		return nil, "No pushes"
	case len(req.Pushes) > MaxBatchPushes:
		return nil, fmt.Sprintf("More than %d pushes", MaxBatchPushes)
	}
	for i, p := range req.Pushes {
		if p.Node == "" {
			return nil, fmt.Sprintf("Missing field 'node' in push %d", i)
		}
		if p.Secret == "" {
			return nil, fmt.Sprintf("Missing field 'secret' in push %d", i)
		}
	}
	return req.Pushes, ""
}

// batchKeys are the keys a push-batch body may hold: the request's
// object's, then each push's.
var batchKeys = [...][]string{{"pushes"}, {"node", "secret"}}

// strictBatch refuses a body that encoding/json would read by guessing:
// a key given twice (it keeps the last, so {"node": a, ..., "node": b}
// pushes to b), a key in other case or escaped (it matches any case, and
// decodes escapes), anything after the object (its check for more data
// passes a closing bracket). A form with a field twice is refused for the
// same reason. A scan of the bytes (0.2 µs a push of a full batch), not
// of json.Decoder's tokens (4.4 µs): what it cannot judge, malformed
// JSON, the decoder after it refuses.
func strictBatch(b []byte) string {
	type frame struct {
		object bool
		keys   [2][]byte // the keys seen, of at most the two allowed
		n      int
	}
	var stack []frame
	objects := 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			j, escaped := i+1, false
			for j < len(b) && b[j] != '"' {
				if b[j] == '\\' {
					escaped = true
					j++
				}
				j++
			}
			if j >= len(b) {
				return ""
			}
			k := j + 1
			for k < len(b) && (b[k] == ' ' || b[k] == '\t' || b[k] == '\n' || b[k] == '\r') {
				k++
			}
			// Keys are checked in the request's object and its
			// pushes; anything deeper the decoder refuses.
			if top := len(stack) - 1; top >= 0 && stack[top].object && objects <= len(batchKeys) && k < len(b) && b[k] == ':' {
				key, f := b[i+1:j], &stack[top]
				switch {
				case escaped:
					return fmt.Sprintf("Malformed JSON: escaped field name %q", key)
				case !slices.ContainsFunc(batchKeys[objects-1], func(k string) bool { return string(key) == k }):
					return fmt.Sprintf("Malformed JSON: unknown field %q", key)
				case slices.ContainsFunc(f.keys[:f.n], func(k []byte) bool { return bytes.Equal(k, key) }):
					return fmt.Sprintf("Malformed JSON: field %q given twice", key)
				}
				f.keys[f.n] = key
				f.n++
			}
			i = j
		case '{', '[':
			stack = append(stack, frame{object: b[i] == '{'})
			if len(stack) > 3 {
				// {"pushes": [{...}]} is three deep: a deeper body is
				// refused before its stack costs more than its bytes.
				return "Malformed JSON: nested too deeply"
			}
			if b[i] == '{' {
				objects++
			}
		case '}', ']':
			top := len(stack) - 1
			if top < 0 {
				return ""
			}
			if stack[top].object {
				objects--
			}
			stack = stack[:top]
			if top == 0 {
				// JSON's whitespace only: bytes.TrimSpace's Unicode
				// spaces after the object are data.
				if len(bytes.TrimLeft(b[i+1:], " \t\r\n")) > 0 {
					return "Malformed JSON: data after the object"
				}
				return ""
			}
		}
	}
	return ""
}

// maxBatchInFlight bounds the pushes of all push-batch requests doing
// work at once; more wait for one of them to end. At a push service's
// answer time of 20 ms, 1,024 carry 50,000 pushes/s. A push waiting on a
// timer (its throttle window, a retry's backoff) does no work and holds
// none of them (see push.Places): otherwise one client with nodes of its
// own, anyone may register some, would hold them all for a window
// (rate_limit) by asking for two pushes of each, and every other
// backend's batch would wait that long. Nor does a push waiting on a push
// service its subscription chose (WebPush), whatever maxBatchWaiting.
const maxBatchInFlight = 1024

// maxBatchWaiting bounds the pushes waiting on a timer without holding
// one of maxBatchInFlight. A waiting push is still a goroutine, with the
// stack the push grew (about 8 KiB: 24 MiB for 3,072): unbounded, a
// client could keep one for each node it registered. Past the bound a
// push waits holding its working place, as all did before: a client then
// holds the others up only with nodes enough for both bounds, 4,096
// where 1,024 did, at 60 registrations a minute and address
// (http.register_limit) over an hour's worth.
const maxBatchWaiting = 3 * maxBatchInFlight

// pusherIdle is how long a pusher waits for another push before it ends.
const pusherIdle = 30 * time.Second

// pushers runs the pushes of push-batch requests on goroutines kept from
// earlier ones. A push grows its goroutine's stack (the push service's
// request, SQLite's frames when the registration is not cached), and a
// fresh goroutine per push paid that copy every time: 14 % of the CPU of
// a batch. The component's workers keep their stacks the same way.
//
// A push holds a working place from before it is handed to a pusher
// until it ends, but for its waits: on a timer it may hold a waiting
// place instead, and waiting on a push service someone else chose it
// holds none (see push.Places). The pushers are then bounded by the
// pushes, not by a count of their own: those holding places, and those
// waiting elsewhere, which their backend bounds (WebPush: 1,024 an app).
// Bounded by the places, as they were, they could all be taken by pushes
// back from elsewhere, each waiting for a working place, while the pushes
// holding every working place waited for a pusher. run never waits for
// one.
type pushers struct {
	jobs   chan handed
	places *push.Places
	live   atomic.Int64 // pushers, for the tests
	idle   time.Duration
}

// job is a push as a pusher runs it.
type job interface{ do() }

// handed is a job with the slot it holds.
type handed struct {
	j job
	s *push.Slot
}

// newPushers returns pushers of which at most working pushes do work at
// once, and at most waiting more wait on a timer.
func newPushers(working, waiting int, idle time.Duration) *pushers {
	return &pushers{
		jobs:   make(chan handed),
		places: push.NewPlaces(working, waiting),
		idle:   idle,
	}
}

// run takes a working place for j, whose slot is s, waiting for one until
// ctx is done, then hands j to an idle pusher, or starts one. The pusher
// gives s's place back once j is done.
func (p *pushers) run(ctx context.Context, s *push.Slot, j job) error {
	if err := s.Take(ctx); err != nil {
		return err
	}
	h := handed{j, s}
	select {
	case p.jobs <- h:
	default:
		p.live.Add(1)
		go p.work(h)
	}
	return nil
}

func (p *pushers) work(h handed) {
	idle := time.NewTimer(p.idle)
	defer idle.Stop()
	for {
		h.j.do()
		h.s.Release()
		idle.Reset(p.idle)
		select {
		case h = <-p.jobs:
		case <-idle.C:
			p.live.Add(-1)
			return
		}
	}
}
