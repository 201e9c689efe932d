package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/push-appserver/push-appserver/internal/testutil/pgtest"
)

// TestReplicationWarnings guards what check-config prints and serve
// logs and exports of the PostgreSQL server the registry is on, in
// three steps of one server: with no standby, nothing to warn of; with
// a streaming standby that commits do not wait for (a failover to it
// may lose the registrations answered OK just before), a warning in
// both that names the settings that remove the risk; with
// synchronous_standby_names set, nothing again. Neither refuses
// anything: check-config passes and serve serves.
func TestReplicationWarnings(t *testing.T) {
	bin := buildBinary(t)
	// synchronous_commit on, for the DSN's sessions: the test server's
	// own is off, which draws a warning of its own.
	t.Setenv("PUSH_APPSERVER_DSN", pgtest.DurableDSN(pg.DB(t)))
	const warning = "registry: 1 standby(s) stream from this PostgreSQL server, but commits do not wait for any (synchronous_standby_names is empty)"
	for _, step := range []struct {
		name       string
		setup      func()
		warned     bool
		replicated string // the gauge's value
	}{
		{"no standby", func() {}, false, "-1"},
		{"an asynchronous standby", func() { pg.Standby(t) }, true, "0"},
		{"a synchronous standby", func() { pg.SyncStandbys(t, "ANY 1 (*)", 1) }, false, "1"},
	} {
		step.setup()
		addr, config := postgresConfig(t)

		var out, errb bytes.Buffer
		if code := run([]string{"check-config", "-config", config}, &out, &errb); code != 0 {
			t.Fatalf("%s: check-config exit %d\n%s%s", step.name, code, out.String(), errb.String())
		}
		if got := strings.Contains(out.String(), "warning: "+warning); got != step.warned {
			t.Errorf("%s: check-config warned of the standby: %v, want %v\n%s", step.name, got, step.warned, out.String())
		}
		if strings.Contains(out.String(), "synchronous_commit is off") {
			t.Errorf("%s: check-config warned of synchronous_commit, which the DSN sets on:\n%s", step.name, out.String())
		}

		s := startServer(t, bin, config)
		s.waitHealthy(t, addr)
		// The check's last line: its warnings come before it.
		s.waitLog(t, "msg=\"registry replication\"")
		log := s.log.String()
		if got := strings.Contains(log, "level=WARN msg=\""+warning); got != step.warned {
			t.Errorf("%s: serve warned of the standby: %v, want %v\n%s", step.name, got, step.warned, log)
		}
		if m, want := scrape(t, addr), "push_appserver_registry_commits_replicated "+step.replicated+"\n"; !strings.Contains(m, want) {
			t.Errorf("%s: metrics lack %q", step.name, want)
		}
		s.stop(t)
	}
}
