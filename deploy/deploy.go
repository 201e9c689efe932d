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
		example = strings.ReplaceAll(example, r.old, r.new)
	}
	return example, nil
}
