package main

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/push-appserver/push-appserver/internal/config"
	"github.com/push-appserver/push-appserver/internal/registry/postgres"
)

// TestREADMERegistryCopiesArePrivate guards the README's advice on
// copying the registry by other means than the backup command: the
// sqlite3 shell creates the file its .backup (or .output of a .dump)
// writes with the umask's mode, 0644 under the usual 0022, so a copy
// made as the README said was readable by every user of the machine,
// with every device's token and secret in it. Each such command the
// README gives must run under umask 077.
func TestREADMERegistryCopiesArePrivate(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := regexp.MustCompile(`\s+`).ReplaceAllString(string(b), " ")
	for _, span := range regexp.MustCompile("`[^`]*sqlite3[^`]*`").FindAllString(text, -1) {
		if !strings.Contains(span, ".backup") && !strings.Contains(span, ".dump") && !strings.Contains(span, "VACUUM INTO") {
			continue
		}
		if !strings.Contains(span, "umask 077") {
			t.Errorf("README copies the registry with the umask's mode (0644 under 0022): %s", span)
		}
	}
}

// TestREADMEMetricsAreExported guards the metric names the README gives
// operators to watch, alert on and graph: each push_appserver_ name it
// shows must be one the server declares (in internal/metrics), unless it
// is one of mod_push_appserver's option names or the PostgreSQL channel
// the instances tell each other about components on. A query or alert
// written on a name the server never exports stays empty, and the outage
// it was meant to show goes unnoticed.
func TestREADMEMetricsAreExported(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	declared := map[string]bool{}
	sources, err := filepath.Glob("../../internal/metrics/*.go")
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`Name:\s*"(push_appserver_\w+)"`)
	for _, f := range sources {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range name.FindAllSubmatch(src, -1) {
			declared[string(m[1])] = true
		}
	}
	if len(declared) < 10 {
		t.Fatalf("found %d metric names in internal/metrics; has the way they are declared changed?", len(declared))
	}
	notMetrics := map[string]bool{postgres.ComponentChannel: true}
	for _, m := range config.SeedMapping {
		notMetrics[m[0]] = true
	}
	for _, m := range regexp.MustCompile(`push_appserver_\w+`).FindAllString(string(b), -1) {
		base := m
		for _, s := range []string{"_bucket", "_count", "_sum"} {
			base = strings.TrimSuffix(base, s)
		}
		if !declared[m] && !declared[base] && !notMetrics[m] {
			t.Errorf("README names the metric %s, which the server does not export", m)
		}
	}
}

// TestREADMEInitBeforeInstallNamesTheBuiltBinary guards the first step
// of connecting to an XMPP server: the README has init run before `make
// install`, when no push-appserver is on the PATH yet, so the command it
// gives there must be the binary `make build` (or `make run`) leaves in
// the checkout; `push-appserver init` as written fails with "command not
// found" at that point.
func TestREADMEInitBeforeInstallNamesTheBuiltBinary(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	makefile, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^BIN\s*:?=\s*(\S+)`).FindSubmatch(makefile)
	if m == nil {
		t.Fatal("Makefile: no BIN")
	}
	text := regexp.MustCompile(`\s+`).ReplaceAllString(string(readme), " ")
	before := regexp.MustCompile("run it before `make install`[^.]*").FindString(text)
	if before == "" {
		t.Fatal("README no longer says to run init before make install; update this test")
	}
	if !strings.Contains(before, "`"+string(m[1])+" init") {
		t.Errorf("README has init run before make install, when push-appserver is not on the PATH yet, but does not say to run it as %s init: %q", m[1], before)
	}
}

// TestREADMEWarnsOfTheXMPPServersHTTPPort guards the setup the README
// walks through, push-appserver beside the XMPP server on one machine
// (the component on loopback): Debian's ejabberd.yml has ejabberd's own
// HTTP listener (web admin, ACME) on port 5280 of every address, and
// Prosody's HTTP modules (file sharing, BOSH, websockets) take the same
// port on every address by default. While the default HTTP API address
// is on that port, `make run` and the service fail there at start with
// "bind: address already in use", so the README must say so where it
// has the XMPP servers set up.
func TestREADMEWarnsOfTheXMPPServersHTTPPort(t *testing.T) {
	const xmppHTTPPort = "5280" // Debian's ejabberd.yml; Prosody's http_ports
	_, port, err := net.SplitHostPort(config.Default().HTTP.Listen)
	if err != nil {
		t.Fatal(err)
	}
	if port != xmppHTTPPort {
		return // nothing to warn of
	}
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	start := strings.Index(text, "\n## Connect to your XMPP server")
	end := strings.Index(text, "\n### What the user's server hears")
	if start < 0 || end < start {
		t.Fatal("README: the section that sets the XMPP servers up moved; update this test")
	}
	section := regexp.MustCompile(`\s+`).ReplaceAllString(text[start:end], " ")
	if !strings.Contains(section, "address already in use") || !strings.Contains(section, "port "+xmppHTTPPort) {
		t.Errorf("the default HTTP API address %s shares port %s with ejabberd's and Prosody's HTTP listeners on the same machine, and the README's XMPP server setup does not say so", config.Default().HTTP.Listen, xmppHTTPPort)
	}
}
