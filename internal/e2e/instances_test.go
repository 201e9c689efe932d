package e2e_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry/postgres"
	"github.com/push-appserver/push-appserver/internal/testutil/pgtest"
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

func startInstance(t *testing.T, x *xmppServer, dsn string) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	store, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	in := &instance{backend: &recorder{}}
	in.svc, err = appserver.New(store, []appserver.App{{Name: "apns", Priority: push.PriorityAuto, Backend: in.backend}},
		appserver.Options{Changes: store}, logger(t))
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
