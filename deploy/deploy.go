// Package deploy holds the files an installation uses (systemd unit,
// example configurations for push-appserver and the XMPP servers, the
// container image definition, Prometheus alerting rules); its tests check
// that each of them is what the software expects.
//
// The Prosody and ejabberd examples are also what the end-to-end tests run:
// the launchers in internal/testutil take them from here and put the test's
// own values in place of the example ones below, so an example that stops
// working fails the tests.
package deploy

import (
	_ "embed"
	"fmt"
	"net"
	"strings"
)

// The example values the XMPP server examples use, the same as
// push-appserver.toml's [[component]].
const (
	ExampleDomain    = "example.org"
	ExampleComponent = "push.example.org"
	ExamplePort      = "5347"
	ExampleSecret    = "change-me: the secret from push-appserver.toml"
)

// ProsodyExample is prosody/push-appserver.cfg.lua.
//
//go:embed prosody/push-appserver.cfg.lua
var ProsodyExample string

// EjabberdExample is ejabberd/push-appserver.yml.
//
//go:embed ejabberd/push-appserver.yml
var EjabberdExample string

// ConfigExample is push-appserver.toml, the commented configuration
// make install puts in /etc/push-appserver.
//
//go:embed push-appserver.toml
var ConfigExample string

// The example configuration's component address and secret, which
// NewSetup replaces.
const (
	exampleAddress = `"127.0.0.1:` + ExamplePort + `"`
	exampleSecret  = `"env:PUSH_APPSERVER_COMPONENT_SECRET"   # or file:/etc/push-appserver/component-secret`
)

// Setup is the configuration of a new installation: push-appserver's and
// the XMPP servers' sides of one component, with one secret.
type Setup struct {
	Config, Prosody, Ejabberd string
}

// NewSetup fills the examples for the component v.Component on the XMPP
// server of v.Domain, which takes components at address (host:port;
// v.Port is taken from it) with the secret v.Secret. push-appserver's
// configuration reads the secret from secretFile, so that the file can be
// kept from whoever reads the configuration.
func NewSetup(v Values, address, secretFile string) (Setup, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return Setup{}, fmt.Errorf("component address: %w", err)
	}
	v.Port = port
	var s Setup
	if s.Prosody, err = Fill(ProsodyExample, v); err != nil {
		return Setup{}, fmt.Errorf("prosody example: %w", err)
	}
	if s.Ejabberd, err = Fill(EjabberdExample, v); err != nil {
		return Setup{}, fmt.Errorf("ejabberd example: %w", err)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		// A loopback address but the examples' (::1, 127.0.0.2): the
		// servers must listen where we connect.
		listen := ip.String()
		if v4 := ip.To4(); v4 != nil {
			listen = v4.String()
		}
		if listen != "127.0.0.1" {
			s.Prosody = strings.ReplaceAll(s.Prosody, `"127.0.0.1"`, fmt.Sprintf("%q", listen))
			s.Ejabberd = strings.ReplaceAll(s.Ejabberd, `"127.0.0.1"`, fmt.Sprintf("%q", listen))
		}
	}
	s.Config = ConfigExample
	for _, r := range [][2]string{
		{exampleAddress, fmt.Sprintf("%q", address)},
		{exampleSecret, fmt.Sprintf("%q", "file:"+secretFile)},
		{`"` + ExampleComponent + `"`, fmt.Sprintf("%q", v.Component)},
	} {
		if !strings.Contains(s.Config, r[0]) {
			return Setup{}, fmt.Errorf("the example configuration does not contain %s", r[0])
		}
		s.Config = strings.ReplaceAll(s.Config, r[0], r[1])
	}
	return s, nil
}

// Values are what a running setup has in place of the example values.
type Values struct {
	Domain, Component, Port, Secret string
}

// Fill returns example with v in place of the example values. The
// component, its port and its secret must occur in it (an example that no
// longer names one is an error, not a config that silently keeps the
// example's); the users' domain is replaced where it is named (ejabberd's
// example leaves hosts to the main file).
func Fill(example string, v Values) (string, error) {
	var pairs []string
	for _, r := range []struct {
		old, new string
		required bool
	}{
		{`"` + ExampleSecret + `"`, fmt.Sprintf("%q", v.Secret), true},
		// The component before the domain it ends with.
		{ExampleComponent, v.Component, true},
		{`"` + ExampleDomain + `"`, fmt.Sprintf("%q", v.Domain), false},
		{ExamplePort, v.Port, true},
	} {
		if r.required && !strings.Contains(example, r.old) {
			return "", fmt.Errorf("the example does not contain %s", r.old)
		}
		pairs = append(pairs, r.old, r.new)
	}
	// In one pass, so that nothing put in is replaced again: a random
	// secret holding "5347" had the port put in its middle, and the XMPP
	// server then refused the component's handshake.
	return strings.NewReplacer(pairs...).Replace(example), nil
}
