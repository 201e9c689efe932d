package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// The form client reuses a connection for answers with a length, drops it
// when the server says it closes, and refuses answers it cannot frame.
func TestFormClient(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil || r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		switch r.Form.Get("answer") {
		case "close":
			w.Header().Set("Connection", "close")
		case "chunked":
			w.(http.Flusher).Flush()
		}
		fmt.Fprintf(w, "OK\n%s", r.Form.Get("node"))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	c, err := newFormClient(srv.URL, "/push", 4)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		form     string
		status   int
		body     string
		err      bool
		connsNow int32
	}{
		{form: "node=a", status: 200, body: "OK\na", connsNow: 1},
		{form: "node=b", status: 200, body: "OK\nb", connsNow: 1},
		{form: "node=c&answer=close", status: 200, body: "OK\nc", connsNow: 1},
		{form: "node=d", status: 200, body: "OK\nd", connsNow: 2},
		{form: "node=e&answer=chunked", err: true, connsNow: 2},
		{form: "node=%zz", status: 400, body: "bad form\n", connsNow: 3},
	} {
		status, body, err := c.post([]byte(tc.form))
		if tc.err != (err != nil) || status != tc.status || string(body) != tc.body {
			t.Errorf("%s: status %d, body %q, error %v", tc.form, status, body, err)
		}
		if n := conns.Load(); n != tc.connsNow {
			t.Errorf("%s: %d connections so far, want %d", tc.form, n, tc.connsNow)
		}
	}
}
