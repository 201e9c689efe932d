package postgres

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
)

// Unreachable reports whether err, from Open, says PostgreSQL could not
// be reached: the connection refused or unanswered, its name not
// resolved, the attempt out of time, the server starting up, shutting
// down, out of connections or a standby where a primary is wanted (a
// failover), or PgBouncer unable to reach it. These
// pass, and a server starting beside a database that is not up yet should
// wait for it rather than exit (systemd gives up on a unit that fails to
// start five times in ten seconds).
//
// It names what passes rather than what does not: anything else, such as
// a refused login, a database that does not exist, a certificate that
// does not verify or a server that refuses TLS the DSN requires, needs the
// operator, and waiting for it would bury the cause in a retry loop.
func Unreachable(err error) bool {
	if err == nil {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "57P03", // cannot_connect_now: starting up, or in recovery
			"57P01", // admin_shutdown
			"53300": // too_many_connections
			return true
		case "08P01":
			// PgBouncer's protocol errors: these say it cannot reach
			// the server behind it; others (no such database) do not.
			for _, s := range []string{"server_login_retry", "cannot connect to server", "query_wait_timeout"} {
				if strings.Contains(pe.Message, s) {
					return true
				}
			}
		}
		return false
	}
	var (
		dns *net.DNSError
		op  *net.OpError
	)
	switch {
	case errors.Is(err, context.DeadlineExceeded),
		// target_session_attrs=read-write or primary while every host
		// is a standby: a failover under way.
		errors.Is(err, pgconn.ErrReadOnlyConnection), errors.Is(err, pgconn.ErrStandbyConnection),
		errors.As(err, &dns),
		errors.As(err, &op) && op.Op == "dial",
		// Closed before it answered, as a server going down does.
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return true
	}
	return false
}

// UnreachableCause says, in a few words, why err, one Unreachable takes,
// leaves PostgreSQL out of reach, naming no user, database, host or
// port: what pgx's errors name is for the log, and the health page that
// says why the server waits is open to anyone who can reach the API.
func UnreachableCause(err error) string {
	var (
		pe  *pgconn.PgError
		dns *net.DNSError
	)
	switch {
	case errors.As(err, &pe):
		switch pe.Code {
		case "57P03":
			return "the server is starting up or in recovery"
		case "57P01":
			return "the server is shutting down"
		case "53300":
			return "too many connections"
		case "08P01":
			return "the pooler cannot reach the server behind it"
		}
		return "the server answered SQLSTATE " + pe.Code
	case errors.Is(err, pgconn.ErrReadOnlyConnection), errors.Is(err, pgconn.ErrStandbyConnection):
		return "no server takes writes (a failover under way?)"
	case errors.As(err, &dns):
		return "its host name does not resolve"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "no answer in time"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "no route to it"
	}
	return "cannot connect"
}

// TimedOut reports whether err says a statement ran out of time on the
// server: its statement_timeout (the registry's statement_timeout) or
// its lock_timeout ended it, or it was canceled.
func TimedOut(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "57014" || pe.Code == "55P03") // query_canceled, lock_not_available
}
