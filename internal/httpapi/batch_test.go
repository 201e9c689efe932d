package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/httpapi"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/testutil/logcore"
)

const batchPath = "/push_appserver/v1/push-batch"

type batchResult struct {
	Node, Status, Error string
}

// batch posts body to push-batch and decodes the answer, failing the
// test on anything but 200 and JSON.
func (f *fixture) batch(t *testing.T, body string) []batchResult {
	t.Helper()
	code, body, hdr := f.do(t, "POST", batchPath, body)
	if code != http.StatusOK || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("push-batch: %d %s %q", code, hdr.Get("Content-Type"), body)
	}
	var a struct{ Results []batchResult }
	if err := json.Unmarshal([]byte(body), &a); err != nil {
		t.Fatalf("push-batch answer %q: %v", body, err)
	}
	return a.Results
}

func (f *fixture) register(t *testing.T, node string) (secret string) {
	t.Helper()
	_, body, _ := f.do(t, "POST", "/push_appserver/v1/register", "type=fcm&node="+node+"&token=tok-"+node)
	lines := strings.Split(body, "\n")
	if len(lines) != 3 {
		t.Fatalf("register %s: %q", node, body)
	}
	return lines[2]
}

// Each push of a batch is checked and sent as /v1/push would, and
// answered in the request's order.
func TestPushBatch(t *testing.T) {
	f := newFixture(t, false, 0)
	s1, s2 := f.register(t, "n1"), f.register(t, "n2")
	body := fmt.Sprintf(`{"pushes": [
		{"node": "n1", "secret": %q},
		{"node": "n2", "secret": %q},
		{"node": "n2", "secret": %q},
		{"node": "nope", "secret": %q}]}`, s1, s1, s2, s1)
	got := f.batch(t, body)
	want := []batchResult{
		{"n1", "ok", ""},
		{"n2", "not-found", "Node or secret not found!"},
		{"n2", "ok", ""},
		{"nope", "not-found", "Node or secret not found!"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("results %+v, want %+v", got, want)
	}
	if sent := f.pushedTo(); len(sent) != 2 || sent["tok-n1"] != 1 || sent["tok-n2"] != 1 {
		t.Fatalf("pushes sent: %v", sent)
	}
}

// The rate limit holds across a batch as across requests: of three pushes
// to one node, one goes at once, one at the next window, one is refused.
func TestPushBatchThrottled(t *testing.T) {
	f := newFixture(t, false, 200*time.Millisecond)
	s := f.register(t, "n1")
	p := fmt.Sprintf(`{"node": "n1", "secret": %q}`, s)
	got := f.batch(t, `{"pushes": [`+p+","+p+","+p+`]}`)
	count := map[string]int{}
	for _, r := range got {
		count[r.Status]++
	}
	if len(got) != 3 || count["ok"] != 2 || count["rate-limited"] != 1 {
		t.Fatalf("results %+v", got)
	}
	if n := f.pushedTo()["tok-n1"]; n != 2 {
		t.Fatalf("%d pushes sent, want 2", n)
	}
}

// countingPushes is a Service that counts the pushes asked of it and
// those that ended, and ends those still under way once stop is done.
type countingPushes struct {
	httpapi.Service
	asked, ended *atomic.Int64
	stop         context.Context
}

func (c countingPushes) Push(ctx context.Context, req appserver.PushRequest) error {
	c.asked.Add(1)
	defer c.ended.Add(1)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(c.stop, cancel)()
	return c.Service.Push(ctx, req)
}

// A batch push waiting for its throttle window leaves its place among
// the pushes doing work, which all clients share, to others: a client
// with a node of its own for each place (anyone may register some) and
// two pushes to each, one of which waits a window, holds up no other
// client's batch. The window is an hour, which no run of the test comes
// near, so none of those waiting has ended when the other client's push
// is answered unless that push waited for one of their places; the test
// ends them as it ends.
func TestPushBatchThrottleWaitsHoldNoPlace(t *testing.T) {
	var asked, ended atomic.Int64
	stop, stopPushes := context.WithCancel(context.Background())
	f := newFixtureOpts(t, false, appserver.Options{RateLimit: time.Hour, PushTimeout: 2 * time.Hour}, func(o *httpapi.Options) {
		o.Service = countingPushes{o.Service, &asked, &ended, stop}
	})
	victim := f.register(t, "victim")
	nodes := httpapi.MaxBatchInFlight
	var bodies, batch []string
	for i := range nodes {
		node := fmt.Sprint("a", i)
		r, err := f.svc.Register(context.Background(), appserver.Caller{}, "fcm", node, "tok-"+node)
		if err != nil {
			t.Fatal(err)
		}
		p := fmt.Sprintf(`{"node": %q, "secret": %q}`, node, r.Secret)
		if batch = append(batch, p, p); len(batch) == httpapi.MaxBatchPushes || i == nodes-1 {
			bodies = append(bodies, `{"pushes": [`+strings.Join(batch, ",")+`]}`)
			batch = nil
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopPushes()
	for _, body := range bodies {
		wg.Go(func() {
			resp, err := http.Post(f.srv.URL+batchPath, "application/json", strings.NewReader(body))
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
		})
	}
	attackerSent := func() int { return len(f.sent.Sent()) - f.pushedTo()["tok-victim"] }
	// Every push has started, and one to each node has gone and ended:
	// the others wait for their windows. Holding their places, they
	// would hold all.
	for deadline := time.Now().Add(30 * time.Second); asked.Load() < int64(2*nodes) || attackerSent() < nodes || ended.Load() < int64(nodes); {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d pushes started, %d of %d sent, %d ended (pushes waiting for their windows hold places?)", asked.Load(), 2*nodes, attackerSent(), nodes, ended.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Should it wait for a place, the waiting pushes are ended after a
	// while, so that it gets one and the test fails rather than hangs.
	answered := make(chan string, 1)
	go func() {
		resp, err := http.Post(f.srv.URL+batchPath, "application/json", strings.NewReader(fmt.Sprintf(`{"pushes": [{"node": "victim", "secret": %q}]}`, victim)))
		if err != nil {
			answered <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			answered <- err.Error()
			return
		}
		answered <- string(b)
	}()
	var answer string
	select {
	case answer = <-answered:
	case <-time.After(30 * time.Second):
		stopPushes()
		answer = <-answered
	}
	n := ended.Load() - 1
	if !strings.Contains(answer, `"status":"ok"`) {
		t.Fatalf("push-batch answer %q", answer)
	}
	// Had the victim's push waited for a place, it would have had one
	// only once a waiting push had ended.
	if n != int64(nodes) {
		t.Fatalf("another client's push waited for a place until %d pushes waiting for their windows had ended", n-int64(nodes))
	}
}

// elsewhere is a Service whose pushes to nodes starting with "hang" wait
// on a push service someone else chose (as WebPush's do, push.Elsewhere)
// until release is closed.
type elsewhere struct {
	httpapi.Service
	entered *atomic.Int64
	release chan struct{}
}

func (e elsewhere) Push(ctx context.Context, req appserver.PushRequest) error {
	if !strings.HasPrefix(req.Node, "hang") {
		return e.Service.Push(ctx, req)
	}
	return push.Elsewhere(ctx, func() error {
		e.entered.Add(1)
		<-e.release
		return nil
	})
}

// A batch push waiting on a push service its subscription chose (WebPush)
// holds no place among the pushes doing work, even past the places of
// those waiting on a timer: a client with subscriptions at an endpoint
// that never answers, as many as both kinds of places, holds up no other
// client's batch.
func TestPushBatchElsewhereHoldsNoPlace(t *testing.T) {
	var entered atomic.Int64
	release := make(chan struct{})
	f := newFixtureOpts(t, false, appserver.Options{}, func(o *httpapi.Options) {
		o.Service = elsewhere{o.Service, &entered, release}
	})
	victim := f.register(t, "victim")
	hanging := httpapi.MaxBatchInFlight + httpapi.MaxBatchWaiting
	var once sync.Once
	stop := func() { once.Do(func() { close(release) }) }
	items := make([]string, hanging)
	for i := range items {
		items[i] = fmt.Sprintf(`{"node": "hang%d", "secret": "s"}`, i)
	}
	holdsUpNoOtherBatch(t, f.srv.URL, items, &entered, victim, stop, "waited on a push service its subscription chose")
}

// holdsUpNoOtherBatch sends items, pushes that stay with a push service
// (entered counts those that reached it), in as many batches as they
// take, then one push of another client's to the node victim, whose
// secret is that, and fails unless it is answered ok before stop ends the
// others' wait.
func holdsUpNoOtherBatch(t *testing.T, url string, items []string, entered *atomic.Int64, victim string, stop func(), what string) {
	t.Helper()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	for start := 0; start < len(items); start += httpapi.MaxBatchPushes {
		body := `{"pushes": [` + strings.Join(items[start:min(start+httpapi.MaxBatchPushes, len(items))], ",") + `]}`
		wg.Go(func() {
			resp, err := http.Post(url+batchPath, "application/json", strings.NewReader(body))
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
		})
	}
	for deadline := time.Now().Add(10 * time.Second); entered.Load() < int64(len(items)); {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d pushes reached the push service", entered.Load(), len(items))
		}
		time.Sleep(5 * time.Millisecond)
	}
	answered := make(chan string, 1)
	go func() {
		body := fmt.Sprintf(`{"pushes": [{"node": "victim", "secret": %q}]}`, victim)
		resp, err := http.Post(url+batchPath, "application/json", strings.NewReader(body))
		if err != nil {
			answered <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		answered <- string(b)
	}()
	select {
	case got := <-answered:
		if !strings.Contains(got, `"status":"ok"`) {
			t.Fatalf("victim's batch: %q", got)
		}
	case <-time.After(10 * time.Second):
		stop()
		<-answered
		t.Fatalf("another client's push waited for a place while %d pushes %s", len(items), what)
	}
}

// hanging is a push service that takes every request and answers none
// until release is closed.
type hanging struct {
	entered *atomic.Int64
	release chan struct{}
}

func (h hanging) Send(ctx context.Context, _ push.Notification) error {
	h.entered.Add(1)
	select {
	case <-h.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// A batch push waiting on its app's push service holds no place among
// the pushes doing work: an APNS or FCM service that takes requests and
// answers none, with as many pushes under way as there are places, holds
// up no other app's batch.
func TestPushBatchStalledAppHoldsNoPlace(t *testing.T) {
	var entered atomic.Int64
	release := make(chan struct{})
	var once sync.Once
	stop := func() { once.Do(func() { close(release) }) }
	defer stop()
	svc, err := appserver.New(memory.New(), []appserver.App{
		{Name: "ios", Priority: push.PriorityHigh, Backend: hanging{&entered, release}},
		{Name: "fcm", Priority: push.PriorityHigh, Backend: &recorder{}},
	}, appserver.Options{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixtureOpts(t, false, appserver.Options{}, func(o *httpapi.Options) { o.Service = svc })
	secret := func(app, node string) string {
		r, err := svc.Register(context.Background(), appserver.Caller{}, app, node, "tok-"+node)
		if err != nil {
			t.Fatal(err)
		}
		return r.Secret
	}
	victim := secret("fcm", "victim")
	items := make([]string, httpapi.MaxBatchInFlight)
	for i := range items {
		node := fmt.Sprint("ios", i)
		items[i] = fmt.Sprintf(`{"node": %q, "secret": %q}`, node, secret("ios", node))
	}
	holdsUpNoOtherBatch(t, f.srv.URL, items, &entered, victim, stop, "waited on a stalled push service")
}

// A malformed batch is refused whole: no push of it is sent.
func TestPushBatchBadRequests(t *testing.T) {
	f := newFixture(t, false, 0)
	s := f.register(t, "n1")
	one := fmt.Sprintf(`{"node": "n1", "secret": %q}`, s)
	many := func(n int) string { return `{"pushes": [` + strings.Repeat(one+",", n-1) + one + `]}` }
	tests := []struct{ name, body, want string }{ // want: exact, or a prefix ending in "*"
		{"empty body", "", "ERROR\nMalformed JSON: *"},
		{"a form", "node=n1&secret=" + s, "ERROR\nMalformed JSON: *"},
		{"no pushes", `{"pushes": []}`, "ERROR\nNo pushes"},
		{"no list", `{}`, "ERROR\nNo pushes"},
		{"too many", many(httpapi.MaxBatchPushes + 1), "ERROR\nMore than 100 pushes"},
		{"unknown field", `{"pushes": [` + one + `], "priority": "high"}`, "ERROR\nMalformed JSON: *"},
		{"data after", `{"pushes": [` + one + `]} {}`, "ERROR\nMalformed JSON: data after the object"},
		{"brackets after", `{"pushes": [` + one + `]}]]}}`, "ERROR\nMalformed JSON: data after the object"},
		{"a space JSON does not know after", `{"pushes": [` + one + "]}\u00a0\v", "ERROR\nMalformed JSON: data after the object"},
		{"a field twice", `{"pushes": [{"node": "n1", "secret": "x", "node": "n2"}]}`, "ERROR\nMalformed JSON: field \"node\" given twice"},
		{"the list twice", `{"pushes": [` + one + `], "pushes": [` + one + `]}`, "ERROR\nMalformed JSON: field \"pushes\" given twice"},
		{"a key in other case", `{"PUSHES": [` + one + `]}`, "ERROR\nMalformed JSON: unknown field \"PUSHES\""},
		{"node missing", `{"pushes": [` + one + `, {"secret": "x"}]}`, "ERROR\nMissing field 'node' in push 1"},
		{"secret missing", `{"pushes": [{"node": "n1"}]}`, "ERROR\nMissing field 'secret' in push 0"},
		{"wrong type", `{"pushes": [{"node": 1, "secret": "x"}]}`, "ERROR\nMalformed JSON: *"},
		{"oversized", `{"pushes": [{"node": "` + strings.Repeat("n", httpapi.MaxBatchBodySize) + `", "secret": "x"}]}`, "ERROR\nRequest body larger than 65536 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body, _ := f.do(t, "POST", batchPath, tt.body)
			prefix, wild := strings.CutSuffix(tt.want, "*")
			if code != http.StatusBadRequest || body != tt.want && !(wild && strings.HasPrefix(body, prefix) && !strings.Contains(body[len(prefix):], "\n")) {
				t.Errorf("%d %q, want 400 %q", code, body, tt.want)
			}
		})
	}
	if got := f.batch(t, many(httpapi.MaxBatchPushes)); len(got) != httpapi.MaxBatchPushes {
		t.Fatalf("%d results for %d pushes", len(got), httpapi.MaxBatchPushes)
	}
	if n := f.pushedTo()["tok-n1"]; n != httpapi.MaxBatchPushes {
		t.Fatalf("%d pushes sent, want only the %d of the one good batch", n, httpapi.MaxBatchPushes)
	}
	if r, err := f.store.Get(context.Background(), "n1"); err != nil || r.Secret != s {
		t.Fatalf("registration after bad batches: %+v, %v", r, err)
	}
}

// FuzzPushBatch posts arbitrary bodies to push-batch through the real
// core: nothing panics, a request is answered 200 with one result per push
// or 400 with one line, never a server error.
func FuzzPushBatch(f *testing.F) {
	h := httpapi.New(httpapi.Options{Service: logcore.New(f, appserver.Options{}), Logger: slog.New(slog.DiscardHandler)})
	for _, s := range []string{
		`{"pushes": [{"node": "n1", "secret": "s"}]}`,
		`{"pushes": [{"node": "n1", "secret": "s"}, {"node": "n\u0000", "secret": "\ud800"}]}`,
		`{"pushes": null}`,
		`[]`,
		`{"pushes": [{"node": "n1", "secret": "s", "node": ""}]}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest("POST", batchPath, strings.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		got := rec.Body.String()
		switch rec.Code {
		case http.StatusBadRequest:
			if !strings.HasPrefix(got, "ERROR\n") || strings.Count(got, "\n") != 1 {
				t.Fatalf("%q: refusal %q", body, got)
			}
		case http.StatusOK:
			var in, out struct{ Pushes, Results []batchResult }
			if err := json.Unmarshal([]byte(body), &in); err != nil {
				t.Fatalf("%q: accepted, but is not JSON: %v", body, err)
			}
			if err := json.Unmarshal([]byte(got), &out); err != nil || len(out.Results) != len(in.Pushes) {
				t.Fatalf("%q: answer %q (%v)", body, got, err)
			}
		default:
			t.Fatalf("%q: status %d %q", body, rec.Code, got)
		}
	})
}

// A push-batch request costs memory in proportion to its body, not 300
// times it: anyone may send one, as many at once as they like.
func TestPushBatchNestingMemoryBounded(t *testing.T) {
	h := httpapi.New(httpapi.Options{Service: logcore.New(t, appserver.Options{}), Logger: slog.New(slog.DiscardHandler)})
	body := `{"pushes":` + strings.Repeat("[", httpapi.MaxBatchBodySize-20)
	allocated := func() uint64 {
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", batchPath, strings.NewReader(body)))
		runtime.ReadMemStats(&m1)
		if rec.Code != http.StatusBadRequest {
			t.Fatalf("answered %d %q", rec.Code, rec.Body.String())
		}
		return m1.TotalAlloc - m0.TotalAlloc
	}
	if n := allocated(); n > 8*httpapi.MaxBatchBodySize {
		t.Fatalf("a %d-byte body nested %d deep allocated %d bytes (%dx)", len(body), len(body)-10, n, n/uint64(len(body)))
	}
}

// BenchmarkPushBatch sends full batches through the real core on the log
// backend: what push-batch costs a push besides its push service.
func BenchmarkPushBatch(b *testing.B) {
	svc := logcore.New(b, appserver.Options{})
	h := httpapi.New(httpapi.Options{Service: svc, Logger: slog.New(slog.DiscardHandler)})
	var pushes []string
	for i := range httpapi.MaxBatchPushes {
		node := fmt.Sprint("n", i)
		r, err := svc.Register(context.Background(), appserver.Caller{}, "fcm", node, "tok-"+node)
		if err != nil {
			b.Fatal(err)
		}
		pushes = append(pushes, fmt.Sprintf(`{"node": %q, "secret": %q}`, node, r.Secret))
	}
	body := `{"pushes": [` + strings.Join(pushes, ",") + `]}`
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", batchPath, strings.NewReader(body)))
		if rec.Code != http.StatusOK || strings.Count(rec.Body.String(), `"ok"`) != httpapi.MaxBatchPushes {
			b.Fatalf("%d %q", rec.Code, rec.Body.String())
		}
	}
}

// BenchmarkPush sends one push a request through the real core on the
// log backend: what the push endpoint's handler and the core cost a push
// besides net/http's reading and writing.
func BenchmarkPush(b *testing.B) {
	svc := logcore.New(b, appserver.Options{})
	h := httpapi.New(httpapi.Options{Service: svc, Logger: slog.New(slog.DiscardHandler)})
	reg, err := svc.Register(context.Background(), appserver.Caller{}, "fcm", "n1", "tok-n1")
	if err != nil {
		b.Fatal(err)
	}
	body := "node=n1&secret=" + reg.Secret
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest("POST", "/push_appserver/v1/push", strings.NewReader(body))
		r.RemoteAddr = "127.0.0.1:4711"
		h.ServeHTTP(rec, r)
		if rec.Code != http.StatusOK || rec.Body.String() != "OK\nn1" {
			b.Fatalf("%d %q", rec.Code, rec.Body.String())
		}
	}
}
