package httpapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A server that is starting answers its health page, and 503 elsewhere,
// until the Switch it listens through is set to the API proper.
func TestStartingSwitch(t *testing.T) {
	sw := NewSwitch(Starting(func() string { return "waiting for PostgreSQL" }))
	for _, tc := range []struct {
		method, path string
		status       int
		body         string
	}{
		{"GET", v1 + "health", 200, "RUNNING\nstarting: waiting for PostgreSQL\n"},
		{"GET", v1 + "ready", 503, "NOT READY\nstarting: waiting for PostgreSQL\n"},
		{"POST", v1 + "push", 503, "ERROR\nStarting, try again later!"},
		{"GET", "/metrics", 503, "ERROR\nStarting, try again later!"},
	} {
		w := httptest.NewRecorder()
		sw.ServeHTTP(w, httptest.NewRequest(tc.method, tc.path, strings.NewReader("node=n&secret=s")))
		if w.Code != tc.status || w.Body.String() != tc.body {
			t.Errorf("%s %s while starting: %d %q, want %d %q", tc.method, tc.path, w.Code, w.Body, tc.status, tc.body)
		}
	}
	sw.Set(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { text(w, "READY\n") }))
	w := httptest.NewRecorder()
	sw.ServeHTTP(w, httptest.NewRequest("GET", v1+"ready", nil))
	if w.Code != 200 || w.Body.String() != "READY\n" {
		t.Errorf("ready once set: %d %q", w.Code, w.Body)
	}
}
