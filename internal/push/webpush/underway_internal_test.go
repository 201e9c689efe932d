package webpush

import (
	"net/url"
	"testing"
	"time"
)

// TestSiteOf: a wildcard name's hosts are one site, so that they share
// one site's bound; hosts under a public suffix of the list's private
// section (a dynamic DNS provider's users) and other ports are not.
func TestSiteOf(t *testing.T) {
	for endpoint, want := range map[string]string{
		"https://a.evil.example/push/1":                     "https://evil.example",
		"https://B.Evil.Example.:443/push/1":                "https://evil.example",
		"https://fcm.googleapis.com/fcm/send/x":             "https://fcm.googleapis.com", // googleapis.com's hosts are the list's
		"https://updates.push.services.mozilla.com/wpush/x": "https://mozilla.com",
		"https://alice.duckdns.org/up/x":                    "https://alice.duckdns.org",
		"https://ntfy.example.co.uk:8443/up/x":              "https://example.co.uk:8443",
		"https://127.0.0.1:8443/p":                          "https://127.0.0.1:8443",
		"https://[2001:db8::1]/p":                           "https://[2001:db8::1]",
		"https://localhost/p":                               "https://localhost",
	} {
		u, err := url.Parse(endpoint)
		if err != nil {
			t.Fatal(err)
		}
		if got := siteOf(u); got != want {
			t.Errorf("siteOf(%s) = %s, want %s", endpoint, got, want)
		}
	}
}

// TestQuietOrigin: an origin is quiet, its pushes in the quiet share,
// until it answers; it is quiet again once its pushes have waited
// quietAfter without an answer, whether they are still under way or
// ended unanswered, until its next answer.
func TestQuietOrigin(t *testing.T) {
	const o, site = "https://push.example", "https://push.example"
	l := limits{all: 100, perSite: 100, quiet: 25, quietPerSite: 6}
	now := time.Unix(1e9, 0)
	var f flights
	take := func() ticket {
		t.Helper()
		tk, refused := f.take(o, site, now, l)
		if refused != "" {
			t.Fatalf("refused: %s", refused)
		}
		return tk
	}
	if tk := take(); !tk.quiet {
		t.Fatal("an origin never heard from is not quiet")
	} else {
		f.answered(o, now)
		f.done(tk, now)
	}
	hung := take()
	if hung.quiet {
		t.Fatal("an origin that answered is quiet")
	}
	now = now.Add(quietAfter - time.Millisecond)
	if tk := take(); tk.quiet {
		t.Fatal("quiet before its push waited quietAfter")
	} else {
		f.done(tk, now)
	}
	now = now.Add(time.Millisecond)
	if tk := take(); !tk.quiet {
		t.Fatal("not quiet with a push under way quietAfter unanswered")
	} else {
		f.answered(o, now)
		f.done(tk, now)
	}
	if tk := take(); tk.quiet {
		t.Fatal("quiet after an answer")
	} else {
		f.done(tk, now)
	}
	// A push answered by none for quietAfter ends.
	f.answered(o, now)
	f.done(hung, now)
	unanswered := take()
	now = now.Add(quietAfter)
	f.done(unanswered, now)
	if tk := take(); !tk.quiet {
		t.Fatal("not quiet after a push that waited quietAfter ended unanswered")
	} else {
		f.done(tk, now)
	}
	if f.total != 0 || f.quiet != 0 || len(f.sites) != 0 {
		t.Fatalf("counts left: %d in all, %d quiet, %d sites", f.total, f.quiet, len(f.sites))
	}
}
