package httpapi_test

import (
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
