package httpapi_test

import (
	"net/http"
	"strings"
	"testing"
)

// A web app served from another origin (a browser XMPP client registering
// its WebPush subscription) calls the API as it called mod_push_appserver
// under Prosody 0.12, whose HTTP server answers every route of a module
// with CORS headers by default (http_default_cors_enabled): the
// browser's preflight is answered, and every answer to a request with an
// Origin says any origin may read it. Without them the browser sent the
// registration but kept its answer, the secret, from the app, and
// refused to send a push-batch (JSON: preflighted) at all. The debug
// pages, which show every secret, stay closed to other origins.
func TestCrossOriginWebApp(t *testing.T) {
	f := newFixture(t, true, 0)
	origin := http.Header{"Origin": {"https://chat.example.org"}}

	// The preflight a browser sends before a POST it may not send as a
	// plain form (push-batch's JSON, or a Content-Type of JSON).
	for _, endpoint := range []string{"register", "unregister", "push", "push-batch"} {
		code, _, hdr := f.doHeader(t, "OPTIONS", "/push_appserver/v1/"+endpoint, "", http.Header{
			"Origin":                         {"https://chat.example.org"},
			"Access-Control-Request-Method":  {"POST"},
			"Access-Control-Request-Headers": {"content-type"},
		})
		if code/100 != 2 || hdr.Get("Access-Control-Allow-Origin") != "*" ||
			!strings.Contains(hdr.Get("Access-Control-Allow-Methods"), "POST") ||
			!strings.Contains(strings.ToLower(hdr.Get("Access-Control-Allow-Headers")), "content-type") {
			t.Errorf("preflight of %s: %d, Allow-Origin %q, Allow-Methods %q, Allow-Headers %q", endpoint, code,
				hdr.Get("Access-Control-Allow-Origin"), hdr.Get("Access-Control-Allow-Methods"), hdr.Get("Access-Control-Allow-Headers"))
		}
	}

	code, body, hdr := f.doHeader(t, "POST", "/push_appserver/v1/register", "type=apns&node=n1&token="+token, origin)
	if code != 200 || !secretRE.MatchString(body) || hdr.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("cross-origin register: %d %q, Access-Control-Allow-Origin %q", code, body, hdr.Get("Access-Control-Allow-Origin"))
	}
	secret := strings.Split(body, "\n")[2]
	code, body, hdr = f.doHeader(t, "POST", "/push_appserver/v1/push", "node=n1&secret="+secret, origin)
	if code != 200 || body != "OK\nn1" || hdr.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("cross-origin push: %d %q, Access-Control-Allow-Origin %q", code, body, hdr.Get("Access-Control-Allow-Origin"))
	}
	code, body, hdr = f.doHeader(t, "POST", "/push_appserver/v1/push-batch", `{"pushes": [{"node": "n1", "secret": "`+secret+`"}]}`, origin)
	if code != 200 || !strings.Contains(body, `"status":"`) || hdr.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("cross-origin push-batch: %d %q, Access-Control-Allow-Origin %q", code, body, hdr.Get("Access-Control-Allow-Origin"))
	}
	// An error answer is read by the app too.
	code, body, hdr = f.doHeader(t, "POST", "/push_appserver/v1/unregister", "type=apns", origin)
	if code != 400 || hdr.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("cross-origin bad unregister: %d %q, Access-Control-Allow-Origin %q", code, body, hdr.Get("Access-Control-Allow-Origin"))
	}

	// Nothing for requests without an Origin (servers, apps), and never
	// for the debug pages.
	if _, _, hdr := f.do(t, "POST", "/push_appserver/v1/push", "node=n1&secret="+secret); hdr.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("answer to a request without Origin carries Access-Control-Allow-Origin %q", hdr.Get("Access-Control-Allow-Origin"))
	}
	for _, path := range []string{"/push_appserver/v1/settings", "/push_appserver/v1/settings/n1", "/push_appserver/v1/register"} {
		if _, _, hdr := f.doHeader(t, "GET", path, "", origin); hdr.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("debug page %s readable from other origins: Access-Control-Allow-Origin %q", path, hdr.Get("Access-Control-Allow-Origin"))
		}
	}
}
