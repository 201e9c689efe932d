package webpush

import (
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/publicsuffix"
)

// The bounds on pushes under way, and what a subscription can make of
// them. A push holds a goroutine and, at a service that has not answered
// yet, a connection, until its service answers or its deadline passes;
// the bounds keep those few. But subscriptions choose their push
// service, and a stranger who registers endpoints at hosts that take the
// connection and never answer, and pushes to them, holds every push he
// gets in for its whole deadline. With one bound for all, four such
// hosts at 256 each held an app's 1,024, and every other push of the app
// (to FCM, Mozilla's service, a healthy distributor) was refused. So:
//
//   - A push service is counted by its site: the registrable domain
//     (eTLD+1, the public suffix list's, which has a.evil.example and
//     b.evil.example one site and alice.duckdns.org and bob.duckdns.org
//     two) or the IP address of its host, with the port. A wildcard
//     name's hosts share one site's bound.
//   - An origin that has answered no push since the backend started, or
//     had pushes under way for quietAfter without an answer to any of
//     them (until its next answer), is quiet. Pushes to quiet origins
//     together take at most a quarter of the bound of all, and those of
//     one site a quarter of that: the rest is for the services that
//     answer, and a stranger's one wildcard domain leaves room for a
//     service heard of for the first time (every service, after a
//     restart) to prove itself.
//
// A push past a bound fails at once as a temporary failure: the user's
// server hears wait, and the push is sent again by redelivery.

// quietAfter is how long an origin may have pushes under way without
// answering any before it is taken for quiet: far beyond the second or so
// a push service takes, and short of the default push deadline, so that
// one that stops answering holds the main bound for half its pushes'
// time at most.
const quietAfter = 5 * time.Second

// maxOrigins bounds the origins remembered as answering: subscriptions
// choose them, any number. One forgotten proves itself again with its
// next answer, its pushes meanwhile among the quiet ones.
const maxOrigins = 10_000

// forgetAfter is how long an origin's last answer is kept in mind first
// when there are more than maxOrigins.
const forgetAfter = 10 * time.Minute

// Why a push was refused, as the metric names it.
const (
	BusyApp     = "app"     // the app's bound of all (MaxPushes)
	BusySite    = "site"    // one site's (MaxPushesPerService)
	BusyQuiet   = "quiet"   // the quiet origins' share
	BusyProcess = "process" // the WebPush apps' together (SharedBound)
)

// busyReasons are the values of the metric's label, in a fixed order.
var busyReasons = [...]string{BusyApp, BusySite, BusyQuiet, BusyProcess}

// SharedBound is a bound on pushes under way that several apps share, and
// the count of the pushes the bounds refused, kept for the process's life.
type SharedBound struct {
	max, maxQuiet int64
	n, quiet      atomic.Int64
	refused       [len(busyReasons)]atomic.Uint64
}

// NewSharedBound returns a bound of max pushes under way, a quarter of
// them to quiet origins.
func NewSharedBound(max int) *SharedBound {
	return &SharedBound{max: int64(max), maxQuiet: int64(quietShare(max))}
}

// quietShare is the part of a bound of n that quiet origins may take.
func quietShare(n int) int { return max(n/4, 1) }

// take counts a push in, or returns the bound it would pass: BusyQuiet
// for the quiet origins' share, BusyProcess for the bound of all. The
// two are told apart: a full quiet share says push services that do not
// answer hold it, the bound of all that the apps' pushes fill it.
func (s *SharedBound) take(quiet bool) (refused string) {
	if quiet {
		if s.quiet.Add(1) > s.maxQuiet {
			s.quiet.Add(-1)
			return BusyQuiet
		}
	}
	if s.n.Add(1) > s.max {
		s.n.Add(-1)
		if quiet {
			s.quiet.Add(-1)
		}
		return BusyProcess
	}
	return ""
}

func (s *SharedBound) done(quiet bool) {
	s.n.Add(-1)
	if quiet {
		s.quiet.Add(-1)
	}
}

// count records a push refused for reason; s may be nil.
func (s *SharedBound) count(reason string) {
	if s == nil {
		return
	}
	for i, r := range busyReasons {
		if r == reason {
			s.refused[i].Add(1)
		}
	}
}

// Refused returns how many pushes the bounds on pushes under way refused,
// by reason (BusyApp, BusySite, BusyQuiet, BusyProcess), every reason
// present.
func (s *SharedBound) Refused() map[string]uint64 {
	out := make(map[string]uint64, len(busyReasons))
	for i, r := range busyReasons {
		out[r] = s.refused[i].Load()
	}
	return out
}

// limits are one app's bounds on pushes under way.
type limits struct {
	all, perSite, quiet, quietPerSite int
}

func newLimits(all, perSite int, shared *SharedBound) limits {
	l := limits{all: all, perSite: perSite, quiet: quietShare(all)}
	if shared != nil {
		// The quiet share of one app must leave the process's
		// share room for other sites too.
		l.quiet = min(l.quiet, int(shared.maxQuiet))
	}
	l.quietPerSite = quietShare(l.quiet)
	return l
}

// flights counts one app's pushes under way, in all, by site and at quiet
// origins, and remembers which origins answer.
type flights struct {
	mu      sync.Mutex
	total   int
	quiet   int
	sites   map[string]*siteFlights
	origins map[string]*originState
}

type siteFlights struct{ all, quiet int }

// originState is what a push service (origin) did lately.
type originState struct {
	underWay int
	// lastAnswer is when it last answered a request (any status); zero
	// when it has answered none since it is remembered.
	lastAnswer time.Time
	// waiting is since when its pushes under way have had no answer:
	// the later of lastAnswer and when they started, one after none.
	waiting time.Time
	// silent is set once it let pushes wait quietAfter without an
	// answer, until its next answer.
	silent bool
}

// ticket is one push counted in, to be counted out with done.
type ticket struct {
	origin, site string
	quiet        bool
	start        time.Time
}

// take counts a push to origin at site in, unless that would pass a
// bound; refused says which.
func (f *flights) take(origin, site string, now time.Time, l limits) (t ticket, refused string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o := f.origins[origin]
	if o != nil && o.underWay > 0 && now.Sub(o.waiting) >= quietAfter {
		o.silent = true
	}
	quiet := o == nil || o.lastAnswer.IsZero() || o.silent
	s := f.sites[site]
	if s == nil {
		s = &siteFlights{}
	}
	switch {
	case f.total >= l.all:
		return ticket{}, BusyApp
	case s.all >= l.perSite:
		return ticket{}, BusySite
	case quiet && (f.quiet >= l.quiet || s.quiet >= l.quietPerSite):
		return ticket{}, BusyQuiet
	}
	if o == nil {
		o = f.remember(origin, now)
	}
	if o.underWay == 0 {
		o.waiting = now
	}
	o.underWay++
	if f.sites == nil {
		f.sites = make(map[string]*siteFlights)
	}
	f.sites[site] = s
	f.total++
	s.all++
	if quiet {
		f.quiet++
		s.quiet++
	}
	return ticket{origin: origin, site: site, quiet: quiet, start: now}, ""
}

// answered records an answer of origin to a request.
func (f *flights) answered(origin string, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if o := f.origins[origin]; o != nil {
		o.lastAnswer, o.waiting, o.silent = now, now, false
	}
}

// done counts t's push out. A push that waited quietAfter for an origin
// that answered nothing meanwhile leaves it silent.
func (f *flights) done(t ticket, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.total--
	s := f.sites[t.site]
	s.all--
	if t.quiet {
		f.quiet--
		s.quiet--
	}
	if s.all == 0 {
		delete(f.sites, t.site)
	}
	o := f.origins[t.origin]
	o.underWay--
	if now.Sub(t.start) >= quietAfter && !o.lastAnswer.After(t.start) {
		o.silent = true
	}
	if o.underWay == 0 && o.lastAnswer.IsZero() {
		// Nothing to remember: one never heard from is quiet anyway.
		delete(f.origins, t.origin)
	}
}

// remember makes origin's record; f.mu is held. Past maxOrigins the
// idle ones that have not answered for forgetAfter are forgotten, and if
// that is not enough, every idle one: a stranger's many origins cost a
// scan now and then, not one a push, and the services forgotten prove
// themselves again with one answer each.
func (f *flights) remember(origin string, now time.Time) *originState {
	if len(f.origins) >= maxOrigins {
		for k, o := range f.origins {
			if o.underWay == 0 && now.Sub(o.lastAnswer) >= forgetAfter {
				delete(f.origins, k)
			}
		}
		if len(f.origins) >= maxOrigins {
			for k, o := range f.origins {
				if o.underWay == 0 {
					delete(f.origins, k)
				}
			}
		}
	}
	if f.origins == nil {
		f.origins = make(map[string]*originState)
	}
	o := &originState{}
	f.origins[origin] = o
	return o
}

// siteOf is the site u's push service is counted by: its host's
// registrable domain (eTLD+1), or its IP address, with the port as in
// originOf. A host that is itself a public suffix, or not a domain name
// the list knows the shape of, is its own site.
func siteOf(u *url.URL) string {
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	site := host
	if _, err := netip.ParseAddr(host); err != nil {
		if d, err := publicsuffix.EffectiveTLDPlusOne(host); err == nil {
			site = d
		}
	} else if strings.Contains(host, ":") {
		site = "[" + host + "]"
	}
	if p := u.Port(); p != "" && p != "443" {
		return "https://" + net.JoinHostPort(strings.Trim(site, "[]"), p)
	}
	return "https://" + site
}

// busyReason says why a push to origin was refused for reason.
func busyReason(reason, origin string) string {
	switch reason {
	case BusySite:
		return "too many pushes under way at " + origin + "'s site"
	case BusyQuiet:
		return "too many pushes under way at push services that have not answered lately, " + origin + " among them"
	}
	return "too many pushes under way"
}
