package e2e_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/deploy"
	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry/postgres"
	"github.com/push-appserver/push-appserver/internal/testutil/daemon"
	"github.com/push-appserver/push-appserver/internal/testutil/ejabberd"
	"github.com/push-appserver/push-appserver/internal/testutil/pgtest"
	"github.com/push-appserver/push-appserver/internal/xmpp/adhoc"
	"github.com/push-appserver/push-appserver/internal/xmpp/component"
)

var pg = pgtest.New()

func TestMain(m *testing.M) { os.Exit(pg.Run(m)) }

// instance is one app server process's worth: a core on the shared
// PostgreSQL registry and a component connection with the default
// reconnect timing.
type instance struct {
	svc     *appserver.Service
	conn    *component.Conn
	backend *recorder
	stop    func()
}

func startInstance(t *testing.T, x *xmppServer, dsn string, configure ...func(*appserver.Options)) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	store, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	in := &instance{backend: &recorder{}}
	opts := appserver.Options{Changes: store}
	for _, c := range configure {
		c(&opts)
	}
	in.svc, err = appserver.New(store, []appserver.App{{Name: "apns", Priority: push.PriorityAuto, Backend: in.backend}}, opts, logger(t))
	if err != nil {
		t.Fatal(err)
	}
	in.conn = component.New(component.Options{Addr: x.ComponentAddr, JID: x.ComponentJID, Secret: x.ComponentSecret, Logger: logger(t)}, in.svc)
	done := make(chan struct{}, 2)
	go func() { in.svc.Run(ctx); done <- struct{}{} }()
	go func() { in.conn.Run(ctx); done <- struct{}{} }()
	stopped := false
	in.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		<-done
		<-done
		in.svc.Close()
		store.Close()
	}
	t.Cleanup(in.stop)
	return in
}

func (in *instance) pushes() int {
	in.backend.mu.Lock()
	defer in.backend.mu.Unlock()
	return len(in.backend.sent)
}

// alicePushEnabled registers a device for alice through in's core, has her
// enable push with it and go offline, and logs bob in.
func alicePushEnabled(t *testing.T, x *xmppServer, in *instance) *client {
	t.Helper()
	r, err := in.svc.Register(context.Background(), appserver.Caller{}, "apns", "alice-phone", "alice-token")
	if err != nil {
		t.Fatal(err)
	}
	alice := login(t, x.C2SAddr, "alice", x.Domain, "alice-pw")
	alice.enablePush(x.ComponentJID, r.Node, r.Secret)
	alice.close()
	return login(t, x.C2SAddr, "bob", x.Domain, "bob-pw")
}

// ejabberd balances one component domain over every connection with its
// JID and secret: two instances both serve it, and when one stops, the
// other serves everything, and ejabberd disables no push session.
func TestEjabberdBalancesInstances(t *testing.T) {
	x := startEjabberd(t)
	dsn := pg.DB(t)
	a, b := startInstance(t, x, dsn), startInstance(t, x, dsn)
	waitConnected(t, a.conn)
	waitConnected(t, b.conn)
	bob := alicePushEnabled(t, x, a)

	// With random balancing, 20 pushes all landing on one connection has
	// a chance of 2 in a million.
	const n = 20
	for i := range n {
		bob.sendChat("alice@"+x.Domain, fmt.Sprintf("message %d", i))
	}
	waitFor(t, func() bool { return a.pushes()+b.pushes() == n })
	if a.pushes() == 0 || b.pushes() == 0 {
		t.Fatalf("pushes per instance %d and %d: ejabberd did not balance", a.pushes(), b.pushes())
	}

	a.stop()
	before := b.pushes()
	for i := range 5 {
		bob.sendChat("alice@"+x.Domain, fmt.Sprintf("after the stop %d", i))
	}
	waitFor(t, func() bool { return b.pushes() == before+5 })
	if strings.Contains(x.Log(), "disabling push") {
		t.Fatalf("ejabberd disabled a push session:\n%s", x.Log())
	}
}

// Prosody takes one connection per component: the other instance stands
// by, retrying, and takes over when the active one goes.
func TestProsodyStandbyTakesOver(t *testing.T) {
	x := startProsody(t)
	dsn := pg.DB(t)
	a := startInstance(t, x, dsn)
	waitConnected(t, a.conn)
	b := startInstance(t, x, dsn)
	bob := alicePushEnabled(t, x, a)
	bob.sendChat("alice@"+x.Domain, "to the active instance")
	waitFor(t, func() bool { return a.pushes() == 1 })
	if b.conn.Connected() {
		t.Fatal("Prosody accepted a second connection for the component")
	}

	start := time.Now()
	a.stop()
	deadline := time.Now().Add(15 * time.Second)
	for !b.conn.Connected() {
		if time.Now().After(deadline) {
			t.Fatal("the standby did not take over")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("standby took over %v after the active instance stopped", time.Since(start).Round(time.Millisecond))
	bob.sendChat("alice@"+x.Domain, "to the standby")
	waitFor(t, func() bool { return b.pushes() == 1 })
}

// While PostgreSQL is down the user's server keeps its push sessions: a
// device the cache held still gets its pushes; once the cache holds it
// no more (its entry expired and the outage's grace passed) a push is
// answered wait, which neither server takes as a reason to disable the
// session, and is sent once the database is back; and the device gets its
// pushes again.
func TestPushSessionsSurvivePostgresDown(t *testing.T) {
	eachServer(t, testPushSessionsSurvivePostgresDown)
}

func testPushSessionsSurvivePostgresDown(t *testing.T, start startServer) {
	x := start(t)
	const ttl, grace = 4 * time.Second, 3 * time.Second
	// Durable: Down is a crash, which loses what was not.
	in := startInstance(t, x, pgtest.DurableDSN(pg.DB(t)), func(o *appserver.Options) { o.CacheTTL, o.OutageGrace = ttl, grace })
	waitConnected(t, in.conn)
	bob := alicePushEnabled(t, x, in)
	message := func(text string) { bob.sendChat("alice@"+x.Domain, text) }

	// Until the change feed has announced alice's registration, which it
	// drops from the cache, a push may read it again.
	var cached time.Time // by then the entry the pushes found was made
	for i := 0; in.svc.CacheStats().Hits == 0; i++ {
		if i == 10 {
			t.Fatal("alice's registration never found in the cache")
		}
		message(fmt.Sprintf("before %d", i))
		waitFor(t, func() bool { return in.pushes() == i+1 })
		cached = time.Now()
	}
	pushed := in.pushes()

	pg.Down(t)
	waitFor(t, func() bool { return in.svc.CacheStats().Bypassed })
	bypassed := time.Now() // by then the outage began
	message("while PostgreSQL is down")
	waitFor(t, func() bool { return in.pushes() == pushed+1 })

	time.Sleep(max(time.Until(cached.Add(ttl)), time.Until(bypassed.Add(grace))) + 100*time.Millisecond)
	misses := in.svc.CacheStats().Misses
	message("once the cache holds it no more")
	waitFor(t, func() bool { return in.svc.CacheStats().Misses > misses })
	time.Sleep(200 * time.Millisecond)
	if in.pushes() != pushed+1 {
		t.Fatalf("a push went out for a device not in the cache while PostgreSQL was down")
	}

	pg.Up(t)
	waitFor(t, func() bool { return !in.svc.CacheStats().Bypassed })
	waitFor(t, func() bool { return in.pushes() == pushed+2 })
	// At the priority the message's push had when it went out at once.
	if n := in.backend.forToken("alice-token"); n[len(n)-1].Priority != n[0].Priority {
		t.Errorf("the push kept while PostgreSQL was down went out as %+v; want %s, as the first", n[len(n)-1], n[0].Priority)
	}
	if s := in.svc.RedeliveryStats(); s.Kept != 1 || s.Delivered != 1 {
		t.Errorf("redelivery: %+v; want the push kept while PostgreSQL was down delivered", s)
	}
	message("after PostgreSQL is back")
	waitFor(t, func() bool { return in.pushes() == pushed+3 })
	// ejabberd logs the wait as a rejected notification, and keeps the
	// session; it would say when it disabled one.
	if strings.Contains(x.Log(), "disabling push") {
		t.Fatalf("%s disabled a push session:\n%s", x.Name, x.Log())
	}
}

// ejabberd with two component hosts in one ejabberd_service listener (the
// form README's example extends) routes every host over every connection
// to it: a stanza for push.localhost may reach push2.localhost's
// connection, which serves it as push.localhost would (component.Peers).
// Here push.localhost takes fpush-style tokenless pushes (Monal) and
// push2.localhost does not: served with push2's options, such a publish
// was answered modify/bad-request, and ejabberd deleted the push session.
func TestEjabberdTwoHostsOneListener(t *testing.T) {
	e := ejabberd.Start(t, ejabberd.Options{Component: func(addr string) (string, error) {
		s, err := deploy.Fill(deploy.EjabberdExample, deploy.Values{Domain: "localhost", Component: "push.localhost", Port: daemon.Port(addr), Secret: "component-secret"})
		// The listener's hosts end the example.
		s += "      push2.localhost:\n        password: \"second-secret\"\n"
		return s, err
	}})
	e.Register("alice", "alice-pw")
	e.Register("bob", "bob-pw")
	x := &xmppServer{Name: "ejabberd", Domain: e.Domain, ComponentJID: e.ComponentJID, ComponentSecret: "component-secret", C2SAddr: e.C2SAddr, ComponentAddr: e.ComponentAddr, Log: e.Log}
	rec := &recorder{}
	peers := &component.Peers{} // one process's components, as wire.go passes them
	s := startStackAppsOn(t, func(t *testing.T) *xmppServer { return x }, map[string]push.Backend{"apns": rec, "fcm": rec}, func(o *component.Options) {
		o.Dialects = component.Dialects{Tokenless: true, TokenlessApp: "apns"}
		o.Peers = peers
	})
	s.backend = rec
	c2 := component.New(component.Options{Addr: x.ComponentAddr, JID: "push2.localhost", Secret: "second-secret",
		Commands: adhoc.Options{V1: true}, Logger: logger(t), Peers: peers}, s.svc)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c2.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitConnected(t, c2)

	// The command answer names the connection's JID, not the one asked.
	alice := login(t, x.C2SAddr, "alice", x.Domain, "alice-pw")
	wrongJID := 0
	for range 8 {
		res, err := alice.command("push.localhost", adhoc.V1Register, map[string]string{"type": "apns", "node": "n1", "token": "t1"})
		if err != nil {
			t.Fatal(err)
		}
		if res["jid"] != "push.localhost" {
			wrongJID++
		}
	}
	t.Logf("%d of 8 v1-register-push answers to push.localhost named jid push2.localhost", wrongJID)

	const token = "5eed5eed5eed5eed5eed5eed5eed5eed"
	bob := login(t, x.C2SAddr, "bob", x.Domain, "bob-pw")
	lost := 0
	for i := range 8 {
		alice.enablePushWith("push.localhost", token, map[string]string{"pushModule": "apns"})
		alice.close()
		before := len(rec.forToken(token))
		bob.sendChat("alice@"+x.Domain, fmt.Sprint("message ", i))
		deadline := time.Now().Add(3 * time.Second)
		for len(rec.forToken(token)) == before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if len(rec.forToken(token)) == before {
			lost++
		}
		alice = login(t, x.C2SAddr, "alice", x.Domain, "alice-pw")
	}
	var lines []string
	for _, l := range strings.Split(x.Log(), "\n") {
		if (strings.Contains(l, "mod_push") && !strings.Contains(l, "Enabling")) || strings.Contains(l, "rejected") {
			lines = append(lines, l)
		}
	}
	t.Logf("ejabberd log:\n%s", strings.Join(lines[:min(6, len(lines))], "\n"))
	if wrongJID > 0 || lost > 0 {
		t.Fatalf("stanzas for push.localhost were handled by push2.localhost's connection: %d command answers named push2.localhost, %d of 8 tokenless pushes lost", wrongJID, lost)
	}
}
