package postgres_test

import (
	"context"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry/postgres"
)

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
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := *u
	refused.Host = closed.Addr().String()
	closed.Close()
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
	if err := open(dsn); err != nil {
		t.Fatal(err)
	}
	pg.Down(t)
	if err := open(dsn); err == nil || !postgres.Unreachable(err) {
		t.Errorf("PostgreSQL down: Open = %v, unreachable %v", err, postgres.Unreachable(err))
	}
}
