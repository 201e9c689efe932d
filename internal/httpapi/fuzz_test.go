package httpapi_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/httpapi"
	"github.com/push-appserver/push-appserver/internal/testutil/logcore"
)

var (
	registered   = regexp.MustCompile(`^OK\n[^\n]+\n[0-9a-f]{64}$`)
	unregistered = regexp.MustCompile(`^OK\n[^\n]+\n$`)
	pushed       = regexp.MustCompile(`^OK\n[^\n]+$`)
)

// FuzzForms posts arbitrary bodies to the three endpoints through the real
// core: nothing panics, no request is a server error, and every answer has
// the line shape clients parse (a node can never push the secret to
// another line).
func FuzzForms(f *testing.F) {
	logger := slog.New(slog.DiscardHandler)
	svc := logcore.New(f, appserver.Options{})
	h := httpapi.New(httpapi.Options{Service: svc, Registrations: nil, Logger: logger})
	for _, s := range []struct {
		endpoint uint8
		body     string
	}{
		{0, "type=apns&node=n1&token=ab12"},
		{0, "type=fcm&node=a%0Ab&token=t"},
		{0, "type=fcm&node=n1&token=t2&secret=00"},
		{1, "type=apns&node=n1"},
		{1, "type=apns&node=n1&secret=x"},
		{2, "node=n1&secret=" + strings.Repeat("a", 64)},
		{2, "node=%zz&secret=s"},
		{0, "type=fcm&type=apns&node=n&node=m&token=t"},
	} {
		f.Add(s.endpoint, s.body)
	}
	endpoints := []string{"register", "unregister", "push"}
	f.Fuzz(func(t *testing.T, endpoint uint8, body string) {
		name := endpoints[int(endpoint)%len(endpoints)]
		req := httptest.NewRequest("POST", "/push_appserver/v1/"+name, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		got := rec.Body.String()
		switch rec.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusForbidden:
		default:
			t.Fatalf("%s %q: status %d %q", name, body, rec.Code, got)
		}
		if strings.HasPrefix(got, "ERROR\n") {
			if strings.Count(got, "\n") != 1 {
				t.Fatalf("%s %q: error answer of several lines %q", name, body, got)
			}
			return
		}
		want := map[string]*regexp.Regexp{"register": registered, "unregister": unregistered, "push": pushed}[name]
		if rec.Code != http.StatusOK || !want.MatchString(got) {
			t.Fatalf("%s %q: %d %q", name, body, rec.Code, got)
		}
	})
}

// FuzzErrorChangesNothing registers a victim node, posts an arbitrary body
// to one of the three endpoints and, when the answer is not OK, checks that
// the victim's registration (type, token, secret) is what it was: it still
// pushes with its secret, and re-registering it unchanged keeps that secret.
func FuzzErrorChangesNothing(f *testing.F) {
	svc := logcore.New(f, appserver.Options{})
	h := httpapi.New(httpapi.Options{Service: svc, Logger: slog.New(slog.DiscardHandler)})
	post := func(name, body string) (int, string) {
		req := httptest.NewRequest("POST", "/push_appserver/v1/"+name, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	const victim = "type=apns&node=victim&token=ab12"
	for _, s := range []struct {
		endpoint uint8
		body     string
	}{
		{0, "type=fcm&node=victim&token=t"},
		{0, "type=apns&node=victim&token=cd34&secret=00"},
		{0, "type=apns&node=victim&token=cd34&token=ef"},
		{0, "type=apns&node=victim&token=zz"},
		{0, "type=apns&node=victim%0A&token=cd"},
		{1, "type=apns&node=victim"},
		{1, "type=fcm&node=victim"},
		{1, "type=apns&node=victim&node=x"},
		{2, "node=victim&secret=x"},
		{0, "type=apns;node=victim&token=cd"},
	} {
		f.Add(s.endpoint, s.body)
	}
	endpoints := []string{"register", "unregister", "push"}
	f.Fuzz(func(t *testing.T, endpoint uint8, body string) {
		code, got := post("register", victim)
		if code != 200 || !registered.MatchString(got) {
			t.Fatalf("victim: %d %q", code, got)
		}
		secret := strings.Split(got, "\n")[2]
		name := endpoints[int(endpoint)%len(endpoints)]
		code, got = post(name, body)
		if code == http.StatusOK && strings.HasPrefix(got, "OK\n") {
			return
		}
		if c, g := post("push", "node=victim&secret="+secret); c != 200 || g != "OK\nvictim" {
			t.Fatalf("%s %q answered %d %q, yet the victim no longer pushes: %d %q", name, body, code, got, c, g)
		}
		if c, g := post("register", victim); c != 200 || g != "OK\nvictim\n"+secret {
			t.Fatalf("%s %q answered %d %q, yet the victim's registration changed: %d %q", name, body, code, got, c, g)
		}
	})
}

// tokenBatch reads a push-batch body with json.Decoder's tokens, exact
// case, every key kept: the pushes' nodes, or ok false when the body is
// not exactly {"pushes": [{"node": ..., "secret": ...}, ...]}.
func tokenBatch(body string) (nodes []string, ok bool) {
	dec := json.NewDecoder(strings.NewReader(body))
	next := func() any {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		return tok
	}
	if next() != json.Delim('{') || next() != "pushes" || next() != json.Delim('[') {
		return nil, false
	}
	for {
		switch next() {
		case json.Delim(']'):
			if next() != json.Delim('}') {
				return nil, false
			}
			if _, err := dec.Token(); err != io.EOF {
				return nil, false
			}
			return nodes, len(nodes) > 0 && len(nodes) <= httpapi.MaxBatchPushes
		case json.Delim('{'):
		default:
			return nil, false
		}
		seen := map[string]string{}
		for {
			k := next()
			if k == json.Delim('}') {
				break
			}
			key, isKey := k.(string)
			v, isStr := next().(string)
			if !isKey || !isStr || (key != "node" && key != "secret") {
				return nil, false
			}
			if _, dup := seen[key]; dup {
				return nil, false
			}
			seen[key] = v
		}
		if seen["node"] == "" || seen["secret"] == "" {
			return nil, false
		}
		nodes = append(nodes, seen["node"])
	}
}

// FuzzPushBatchStrict: push-batch accepts a body exactly when a strict
// token reading does, and pushes the nodes that reading finds.
func FuzzPushBatchStrict(f *testing.F) {
	h := httpapi.New(httpapi.Options{Service: logcore.New(f, appserver.Options{}), Logger: slog.New(slog.DiscardHandler)})
	for _, s := range []string{
		`{"pushes": [{"node": "n1", "secret": "s"}]}`,
		`{"pushes": [{"node": "n1", "secret": "s", "Node": "x"}]}`,
		`{"pushes": [{"node": "n1", "secret": "s"}]}]`,
		`{"pushes": [{"node": "n1", "secret": "s", "node": "n2"}]}`,
		`{"pushes": [{"n\u006fde": "n1", "secret": "s"}]}`,
		`{"pushes": [], "pushes": [{"node": "n1", "secret": "s"}]}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		if len(body) > httpapi.MaxBatchBodySize {
			return
		}
		req := httptest.NewRequest("POST", batchPath, strings.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		nodes, ok := tokenBatch(body)
		if ok && strings.Contains(rec.Body.String(), "escaped field name") {
			return // refused on purpose; the token reading cannot tell
		}
		if (rec.Code == http.StatusOK) != ok {
			t.Fatalf("%q: answered %d %q, strict reading ok=%t %q", body, rec.Code, rec.Body.String(), ok, nodes)
		}
		if !ok {
			return
		}
		var out struct{ Results []batchResult }
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || len(out.Results) != len(nodes) {
			t.Fatalf("%q: answer %q", body, rec.Body.String())
		}
		for i, r := range out.Results {
			if r.Node != nodes[i] {
				t.Fatalf("%q: push %d to %q, strict reading %q", body, i, r.Node, nodes[i])
			}
		}
	})
}
