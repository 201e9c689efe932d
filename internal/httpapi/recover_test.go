package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/httpapi"
)

// buggy is the core with a bug that a push to node "bug" sets off.
type buggy struct{ httpapi.Service }

func (b buggy) Push(ctx context.Context, req appserver.PushRequest) error {
	if req.Node == "bug" {
		var found []string
		_ = found[len(req.Node)] // index out of range
	}
	return b.Service.Push(ctx, req)
}

// TestPanicAnswered500: a request whose handling panics is answered as
// any internal error is, the panic counted; in a batch, which pushes off
// the request's goroutine, it fails its own push only; and the server
// goes on.
func TestPanicAnswered500(t *testing.T) {
	var panics atomic.Int32
	f := newFixtureOpts(t, false, appserver.Options{}, func(o *httpapi.Options) {
		o.Service = buggy{o.Service}
		o.Panicked = func() { panics.Add(1) }
	})
	bug, ok := f.register(t, "bug"), f.register(t, "ok")

	code, body, _ := f.do(t, "POST", "/push_appserver/v1/push", "node=bug&secret="+bug)
	if code != http.StatusInternalServerError || body != "ERROR\nInternal server error!\n" {
		t.Fatalf("push that panicked: %d %q", code, body)
	}
	if n := panics.Load(); n != 1 {
		t.Fatalf("%d panics counted", n)
	}

	got := f.batch(t, fmt.Sprintf(`{"pushes": [{"node": "bug", "secret": %q}, {"node": "ok", "secret": %q}]}`, bug, ok))
	if len(got) != 2 || got[0].Status != "failed" || got[1].Status != "ok" {
		t.Fatalf("batch with a push that panicked: %+v", got)
	}
	if n := panics.Load(); n != 2 {
		t.Fatalf("%d panics counted", n)
	}

	if code, body, _ := f.do(t, "POST", "/push_appserver/v1/push", "node=ok&secret="+ok); code != http.StatusOK {
		t.Fatalf("next push: %d %q", code, body)
	}
}
