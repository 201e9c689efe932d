package e2e_test

import (
	"testing"

	"github.com/push-appserver/push-appserver/internal/testutil/ejabberd"
	"github.com/push-appserver/push-appserver/internal/testutil/prosody"
)

// xmppServer is the real XMPP server a test runs against, Prosody or
// ejabberd: what the scenarios need of either, accounts alice and bob
// included.
type xmppServer struct {
	Name            string
	Domain          string
	ComponentJID    string
	ComponentSecret string
	C2SAddr         string
	ComponentAddr   string
	Restart         func()
	Log             func() string
	// Rejected is what the server logs when the app server answers a
	// publish with an error.
	Rejected string
}

type startServer func(t *testing.T) *xmppServer

func startProsody(t *testing.T) *xmppServer { return startProsodyWith(t, prosody.Options{}) }

// startProsodyWith is startProsody with the given options.
func startProsodyWith(t *testing.T, opts prosody.Options) *xmppServer {
	p := prosody.Start(t, opts)
	p.Register("alice", "alice-pw")
	p.Register("bob", "bob-pw")
	return &xmppServer{Name: "Prosody", Domain: p.Domain, ComponentJID: p.ComponentJID, ComponentSecret: p.ComponentSecret,
		C2SAddr: p.C2SAddr, ComponentAddr: p.ComponentAddr, Restart: p.Restart, Log: p.Log, Rejected: "item-not-found"}
}

func startEjabberd(t *testing.T) *xmppServer {
	e := ejabberd.Start(t, ejabberd.Options{})
	e.Register("alice", "alice-pw")
	e.Register("bob", "bob-pw")
	return &xmppServer{Name: "ejabberd", Domain: e.Domain, ComponentJID: e.ComponentJID, ComponentSecret: e.ComponentSecret,
		C2SAddr: e.C2SAddr, ComponentAddr: e.ComponentAddr, Restart: e.Restart, Log: e.Log, Rejected: "rejected notification"}
}

// eachServer runs a scenario against Prosody and against ejabberd.
func eachServer(t *testing.T, scenario func(t *testing.T, start startServer)) {
	for _, s := range []struct {
		name  string
		start startServer
	}{{"Prosody", startProsody}, {"ejabberd", startEjabberd}} {
		t.Run(s.name, func(t *testing.T) { scenario(t, s.start) })
	}
}
