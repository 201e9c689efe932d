package httpapi_test

import (
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/push-appserver/push-appserver/internal/httpapi"
)

// TestReadyRequire guards what the ready page requires: the components
// by default and with require=components (as before the parameter
// existed), the HTTP API alone with require=http, so an XMPP server that
// is down does not take the API out of a load balancer that only sends
// it HTTP; and nothing while the server drains for a stop, whatever is
// required. No answer may be cached: a proxy or client that kept one
// would report a state that has passed.
func TestReadyRequire(t *testing.T) {
	var up, draining atomic.Bool
	h := httpapi.New(httpapi.Options{
		Checks: func() []httpapi.Check {
			return []httpapi.Check{{Name: "component push.example.org", OK: up.Load}, {Name: "registry", OK: func() bool { return false }, HealthOnly: true}}
		},
		Draining: draining.Load,
	})
	for _, tt := range []struct {
		name         string
		query        string
		up, draining bool
		code         int
		body         string
	}{
		{"default, component down", "", false, false, 503, "NOT READY\ncomponent push.example.org: down\n"},
		{"default, component up", "", true, false, 200, "READY\n"},
		{"components, component down", "?require=components", false, false, 503, "NOT READY\ncomponent push.example.org: down\n"},
		{"components, component up", "?require=components", true, false, 200, "READY\n"},
		{"http, component down", "?require=http", false, false, 200, "READY\n"},
		{"http, component up", "?require=http", true, false, 200, "READY\n"},
		{"default, draining", "", true, true, 503, "NOT READY\nshutting down\n"},
		{"http, draining", "?require=http", false, true, 503, "NOT READY\nshutting down\n"},
		{"unknown requirement", "?require=xmpp", true, false, 400, "ERROR\nrequire must be components or http"},
		{"requirement twice", "?require=http&require=components", true, false, 400, "ERROR\nrequire must be components or http"},
		{"other parameter", "?x=1", false, false, 503, "NOT READY\ncomponent push.example.org: down\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up.Store(tt.up)
			draining.Store(tt.draining)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/push_appserver/v1/ready"+tt.query, nil))
			if rec.Code != tt.code || rec.Body.String() != tt.body {
				t.Fatalf("%d %q, want %d %q", rec.Code, rec.Body.String(), tt.code, tt.body)
			}
			if cc := rec.Header().Get("Cache-Control"); tt.code != 400 && cc != "no-store" {
				t.Fatalf("Cache-Control %q, want no-store", cc)
			}
		})
	}
}
