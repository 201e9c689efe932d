package postgres_test

import (
	"context"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry/postgres"
	"github.com/push-appserver/push-appserver/internal/testutil/netfreeze"
)

// unanswered returns u with its address changed to one where nothing
// listens (refused) and to one that takes the connection and never
// answers (mute).
func unanswered(t *testing.T, u *url.URL) (refused, mute url.URL) {
	t.Helper()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused, mute = *u, *u
	refused.Host = closed.Addr().String()
	closed.Close()
	mute.Host = net.JoinHostPort("127.0.0.1", strconv.Itoa(netfreeze.Silent(t)))
	return refused, mute
}

// What Open says when the database cannot be had: unreachable while
// nothing listens or the server is down, which passes; not for a
// database that does not exist or a DSN that is no DSN, which need the
// operator.
func TestUnreachable(t *testing.T) {
	dsn := pg.DB(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	refused, mute := unanswered(t, u)
	missing := *u
	missing.Path = "/no_such_database"

	open := func(dsn string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		s, err := postgres.Open(ctx, dsn, postgres.Options{})
		if err == nil {
			s.Close()
		}
		return err
	}
	for _, tc := range []struct {
		name, dsn   string
		unreachable bool
	}{
		{"nothing listens", refused.String(), true},
		{"no such database", missing.String(), false},
		{"not a DSN", "postgres://[::1", false},
	} {
		err := open(tc.dsn)
		if err == nil || postgres.Unreachable(err) != tc.unreachable {
			t.Errorf("%s: Open = %v, unreachable %v; want unreachable %v", tc.name, err, postgres.Unreachable(err), tc.unreachable)
		}
	}
	// Needs the operator too: TLS the server does not speak, an
	// authentication method it does not use.
	for _, opt := range []string{"sslmode=require", "require_auth=scram-sha-256"} {
		if err := open(dsn + "&" + opt); err == nil || postgres.Unreachable(err) {
			t.Errorf("%s: Open = %v, unreachable %v; want an error that is not", opt, err, postgres.Unreachable(err))
		}
	}
	// A standby where a primary is wanted passes: a failover under way.
	if err := open(dsn + "&target_session_attrs=read-write&default_transaction_read_only=on"); err == nil || !postgres.Unreachable(err) {
		t.Errorf("a read-only server where read-write is wanted: Open = %v, unreachable %v", err, postgres.Unreachable(err))
	}
	// A server that takes the connection and never answers: the
	// attempt's own deadline ends it.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := postgres.Open(ctx, mute.String(), postgres.Options{}); err == nil || !postgres.Unreachable(err) {
		t.Errorf("a server that never answers: Open = %v, unreachable %v", err, postgres.Unreachable(err))
	}

	if err := open(dsn); err != nil {
		t.Fatal(err)
	}
	bouncer := pg.Bouncer(t, dsn, "session")
	pg.Down(t)
	if err := open(dsn); err == nil || !postgres.Unreachable(err) {
		t.Errorf("PostgreSQL down: Open = %v, unreachable %v", err, postgres.Unreachable(err))
	}
	// PgBouncer holds the first connection until its server answers
	// (Open's own bound on connecting ends it), then refuses the next
	// ones at once.
	for i := range 2 {
		_, err := postgres.Open(context.Background(), bouncer, postgres.Options{ConnectTimeout: 2 * time.Second})
		if err == nil || !postgres.Unreachable(err) {
			t.Errorf("PostgreSQL down behind PgBouncer, attempt %d: Open = %v, unreachable %v", i+1, err, postgres.Unreachable(err))
		}
	}
}

// UnreachableCause is what the health page, which anyone who can reach
// the API reads, says of a PostgreSQL the server waits for: why, in a
// few words, naming none of the DSN's user, database, host or port,
// which pgx's errors name.
func TestUnreachableCauseNamesNoAddress(t *testing.T) {
	dsn := pg.DB(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	refused, mute := unanswered(t, u)
	unnamed := *u
	unnamed.Host = "no-such-host.invalid:5432"

	for _, tc := range []struct {
		name, dsn, want string
	}{
		{"nothing listens", refused.String(), "connection refused"},
		{"no answer", mute.String(), "no answer in time"},
		{"no such host", unnamed.String(), "its host name does not resolve"},
		{"a standby", dsn + "&target_session_attrs=read-write&default_transaction_read_only=on", "no server takes writes"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := postgres.Open(ctx, tc.dsn, postgres.Options{})
		cancel()
		if err == nil || !postgres.Unreachable(err) {
			t.Fatalf("%s: Open = %v, want an error Unreachable takes", tc.name, err)
		}
		cause := postgres.UnreachableCause(err)
		if !strings.Contains(cause, tc.want) {
			t.Errorf("%s: cause %q, want %q (the error: %v)", tc.name, cause, tc.want, err)
		}
		target, _ := url.Parse(tc.dsn)
		for _, secret := range []string{target.User.Username(), strings.TrimPrefix(target.Path, "/"), target.Hostname(), target.Port()} {
			if secret != "" && strings.Contains(cause, secret) {
				t.Errorf("%s: cause %q names %q of the DSN", tc.name, cause, secret)
			}
		}
	}
}
