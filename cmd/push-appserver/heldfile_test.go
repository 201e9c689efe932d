package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
)

// setReadOnly turns dsn's database read-only or back (value "on" or
// "off") for its sessions, as a DBA's default_transaction_read_only
// does, or as a stale address that now leads to a standby looks, and
// ends the server's sessions so that its new ones see it.
func setReadOnly(t *testing.T, dsn, value string) {
	t.Helper()
	ctx := context.Background()
	// The session's own setting, or a read-only database refuses the
	// ALTER that turns it back.
	c, err := pgx.Connect(ctx, dsn+"&default_transaction_read_only=off")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, `ALTER DATABASE `+c.Config().Database+` SET default_transaction_read_only = `+value); err != nil {
		t.Fatal(err)
	}
	pg.Terminate(t, dsn, "push-appserver")
}

// TestHeldPushesSurviveStopOnReadOnlyRegistry: pushes waiting for
// redelivery (APNS answering 503) when the server stops while PostgreSQL
// refuses writes are kept in the data directory's file, not dropped, and
// the next start, the registry writable again and APNS back, delivers
// each once and removes the file.
func TestHeldPushesSurviveStopOnReadOnlyRegistry(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	am, _, keyFile, _ := startMocks(t, dir)
	dsn := pg.DB(t)
	t.Setenv("PUSH_APPSERVER_DSN", dsn)
	addr, config := postgresAPNSConfig(t, am, keyFile)
	file := filepath.Join(filepath.Dir(config), "data", heldFileName)
	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)

	const devices = 3
	tokens, secrets := make([]string, devices), make([]string, devices)
	for i := range devices {
		tokens[i] = fmt.Sprintf("%064x", i+1)
		secrets[i] = s.registerTo(t, "ios", fmt.Sprintf("n%d", i), tokens[i])
		down := make([]apnsmock.Fault, 1000)
		for j := range down {
			down[j] = apnsmock.Fault{Status: 503, Reason: "ServiceUnavailable"}
		}
		am.FailToken(tokens[i], down...)
	}
	setReadOnly(t, dsn, "on")
	t.Cleanup(func() { setReadOnly(t, dsn, "off") })
	for deadline := time.Now().Add(15 * time.Second); !strings.HasPrefix(s.post(t, "register", url.Values{"type": {"ios"}, "node": {"probe"}, "token": {"ab"}}), "ERROR\n"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the registry still takes registrations 15 s after it turned read-only")
		}
	}
	for i := range devices {
		if got := s.post(t, "push", url.Values{"node": {fmt.Sprintf("n%d", i)}, "secret": {secrets[i]}}); !strings.HasPrefix(got, "ERROR") {
			t.Fatalf("push while APNS answers 503: %q", got)
		}
	}
	stopping := time.Now()
	s.stop(t)
	t.Logf("stopped in %v", time.Since(stopping).Round(time.Millisecond))
	if log := s.log.String(); !strings.Contains(log, "written to the data directory's file of held pushes") || strings.Contains(log, "lost at shutdown") {
		t.Fatalf("the waiting pushes were not kept in the file at the stop:\n%s", log)
	}
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("held file: %v, %v", fi, err)
	}

	setReadOnly(t, dsn, "off")
	am.Reset() // APNS is back
	started := time.Now()
	s = startServer(t, bin, config)
	s.waitHealthy(t, addr)
	deadline := time.Now().Add(20 * time.Second)
	for am.Accepted() < devices || exists(file) {
		if time.Now().After(deadline) {
			t.Fatalf("APNS took %d of %d held pushes, held file there: %v\n%s", am.Accepted(), devices, exists(file), s.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("held pushes delivered and file removed %v after the start", time.Since(started).Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond)
	sent := map[string]int{}
	for _, r := range am.Requests() {
		sent[r.Token]++
	}
	for _, tok := range tokens {
		if sent[tok] != 1 {
			t.Errorf("token %s…: %d pushes after APNS was back, want 1 (%v)", tok[:8], sent[tok], sent)
		}
	}
	s.stop(t)
}

// TestCorruptHeldFileDoesNotStopTheStart: a held file the server cannot
// read (a disk's fault, an operator's edit) is named in an error in the
// log and set aside, as it was, and the server serves.
func TestCorruptHeldFileDoesNotStopTheStart(t *testing.T) {
	bin := buildBinary(t)
	dir, addr, config := minimalConfig(t)
	file := filepath.Join(dir, "data", heldFileName)
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		t.Fatal(err)
	}
	const junk = `{"version":1,"pushes":[{"failed":`
	if err := os.WriteFile(file, []byte(junk), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)
	s.waitLog(t, "cannot be read: set aside")
	aside, _ := filepath.Glob(file + ".unreadable-*")
	if len(aside) != 1 || exists(file) {
		t.Fatalf("set aside as %v; the file still there: %v", aside, exists(file))
	}
	if b, err := os.ReadFile(aside[0]); err != nil || string(b) != junk {
		t.Fatalf("the file set aside holds %q (%v)", b, err)
	}
	s.stop(t)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
