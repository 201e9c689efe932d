package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/httpapi"
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
