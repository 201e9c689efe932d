package webpush

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

const (
	// RFC 8291's user agent key and auth secret.
	p256dh = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
	auth   = "BTBZMqHH6r4Tts7J_aSIgg"
)

func subJSON(endpoint, key, auth string) string {
	return `{"endpoint":"` + endpoint + `","expirationTime":null,"keys":{"p256dh":"` + key + `","auth":"` + auth + `"}}`
}

func TestParseSubscription(t *testing.T) {
	ep := "https://fcm.googleapis.com/fcm/send/dQw4w9WgXcQ:APA91bF"
	// A point that is not on the curve: the RFC key with its last byte changed.
	offCurve := p256dh[:len(p256dh)-1] + "8"
	cases := []struct {
		name, token, err string
	}{
		{"browser JSON", subJSON(ep, p256dh, auth), ""},
		{"padded base64url", subJSON(ep, p256dh+"=", auth+"=="), ""},
		{"no expirationTime", `{"endpoint":"` + ep + `","keys":{"p256dh":"` + p256dh + `","auth":"` + auth + `"}}`, ""},
		{"not JSON", "ab12", "not PushSubscription JSON"},
		{"trailing data", subJSON(ep, p256dh, auth) + "{}", "trailing"},
		{"http", subJSON("http://push.example/x", p256dh, auth), "https"},
		{"no host", subJSON("https:///x", p256dh, auth), "no host"},
		{"user info", subJSON("https://u:p@push.example/x", p256dh, auth), "user information"},
		{"fragment", subJSON("https://push.example/x#f", p256dh, auth), "fragment"},
		{"bad port", subJSON("https://push.example:99999/x", p256dh, auth), "port"},
		{"no endpoint", subJSON("", p256dh, auth), "missing"},
		{"long endpoint", subJSON("https://push.example/"+strings.Repeat("a", MaxEndpointLen), p256dh, auth), "longer"},
		{"too long", subJSON(ep, p256dh, auth) + strings.Repeat(" ", MaxSubscriptionLen), "longer"},
		{"no p256dh", subJSON(ep, "", auth), "p256dh"},
		{"compressed point", subJSON(ep, "A"+p256dh[1:44], auth), "p256dh"},
		{"64-byte key", subJSON(ep, p256dh[:85], auth), "p256dh"},
		{"off curve", subJSON(ep, offCurve, auth), "p256dh"},
		{"not base64url", subJSON(ep, strings.ReplaceAll(p256dh, "_", "/"), auth), "p256dh"},
		{"short auth", subJSON(ep, p256dh, "BTBZMqHH6r4Tts7J"), "auth"},
		{"long auth", subJSON(ep, p256dh, auth+"AAAA"), "auth"},
		{"no auth", subJSON(ep, p256dh, ""), "auth"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := ParseSubscription(c.token)
			if c.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				if s.Endpoint.String() != ep || len(s.Auth) != 16 || len(s.P256DH.Bytes()) != 65 {
					t.Fatalf("parsed %+v", s)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Fatalf("err = %v, want one about %q", err, c.err)
			}
		})
	}
}

func TestSubscriptionJSON(t *testing.T) {
	ep := "https://updates.push.services.mozilla.com/wpush/v2/gAAAA?x=1&y=<2>"
	js, err := SubscriptionJSON(ep, p256dh, auth)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ParseSubscription(js)
	if err != nil || s.Endpoint.String() != "https://updates.push.services.mozilla.com/wpush/v2/gAAAA?x=1&y=%3C2%3E" && s.Endpoint.String() != ep {
		t.Fatalf("%s: %v %v", js, s.Endpoint, err)
	}
	if strings.Contains(js, `\u0026`) {
		t.Fatalf("HTML-escaped: %s", js)
	}
	if _, err := SubscriptionJSON("http://x", p256dh, auth); err == nil {
		t.Fatal("an http endpoint was taken")
	}
}

var fuzzGuard = &Guard{Hosts: []string{"fcm.googleapis.com", "*.push.services.mozilla.com"}, Ports: []int{443, 8443}}

// FuzzSubscription: what ParseSubscription accepts is one JSON object, and
// the URL we later request (Endpoint.String(), parsed again by net/http)
// names the host and port the guard judged and the VAPID origin names.
func FuzzSubscription(f *testing.F) {
	for _, ep := range []string{
		"https://fcm.googleapis.com/fcm/send/x", "https://a.push.services.mozilla.com:8443/wpush/v2/x",
		"https://[::1]/x", "https://FCM.googleapis.com./x?y=1", "https://h/%2e%2e/x",
	} {
		f.Add(subJSON(ep, p256dh, auth))
	}
	f.Add(subJSON("https://fcm.googleapis.com/x", p256dh, auth) + "}")
	f.Add(`{"endpoint":"https://a/","ENDPOINT":"https://b/","keys":{"p256dh":"` + p256dh + `","auth":"` + auth + `"}}`)
	f.Fuzz(func(t *testing.T, token string) {
		s, err := ParseSubscription(token)
		if err != nil {
			return
		}
		var v map[string]any
		if err := json.Unmarshal([]byte(token), &v); err != nil {
			t.Errorf("accepted a subscription that is not one JSON object (%v): %q", err, token)
		}
		u := s.Endpoint
		req, err := http.NewRequest("POST", u.String(), nil)
		if err != nil {
			t.Fatalf("accepted endpoint %q, but no request can be made of %q: %v", token, u.String(), err)
		}
		r := req.URL
		if r.Hostname() != u.Hostname() || r.Port() != u.Port() || r.Scheme != u.Scheme {
			t.Fatalf("%q: guard saw host %q port %q, request goes to %q port %q", token, u.Hostname(), u.Port(), r.Hostname(), r.Port())
		}
		if e1, e2 := fuzzGuard.CheckURL(u), fuzzGuard.CheckURL(r); (e1 == nil) != (e2 == nil) {
			t.Fatalf("%q: guard %v on the parsed URL, %v on the request's", token, e1, e2)
		}
		if o1, o2 := originOf(u), originOf(r); o1 != o2 {
			t.Fatalf("%q: origin %q vs %q", token, o1, o2)
		}
		if _, err := url.Parse(originOf(u)); err != nil {
			t.Fatalf("%q: origin %q does not parse: %v", token, originOf(u), err)
		}
		// The three-field form round trips.
		var sj subscriptionJSON
		json.Unmarshal([]byte(token), &sj)
		tok, err := SubscriptionJSON(sj.Endpoint, sj.Keys.P256DH, sj.Keys.Auth)
		if err != nil {
			t.Fatalf("%q: SubscriptionJSON refuses its parts: %v", token, err)
		}
		s2, err := ParseSubscription(tok)
		if err != nil || s2.Endpoint.String() != u.String() || string(s2.Auth) != string(s.Auth) || !s2.P256DH.Equal(s.P256DH) {
			t.Fatalf("%q: round trip %q: %v", token, tok, err)
		}
	})
}

// A closing bracket after the object is trailing data too: json.Decoder's
// More reports false before '}' and ']', so the check let them through.
func TestParseSubscriptionTrailingBracket(t *testing.T) {
	ep := "https://fcm.googleapis.com/fcm/send/x"
	for _, tail := range []string{"}", "]", " ]]}"} {
		if _, err := ParseSubscription(subJSON(ep, p256dh, auth) + tail); err == nil {
			t.Errorf("subscription with %q after the object accepted", tail)
		}
	}
}
