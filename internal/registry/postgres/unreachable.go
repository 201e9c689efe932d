package postgres

import (
	"crypto/tls"
	"crypto/x509"
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
)

// Unreachable reports whether err, from Open, says PostgreSQL could not
// be reached: the connection refused or unanswered, its name not
// resolved, the server starting up, shutting down or out of connections.
// These pass, and a server starting beside a database that is not up yet
// should wait for it rather than exit (systemd gives up on a unit that
// fails to start five times in ten seconds). A refused login, a database
// that does not exist or a certificate that does not verify need the
// operator, and are not unreachable.
func Unreachable(err error) bool {
	var ce *pgconn.ConnectError
	if !errors.As(err, &ce) {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "57P03", // cannot_connect_now: starting up, or in recovery
			"57P01", // admin_shutdown
			"53300": // too_many_connections
			return true
		}
		return false
	}
	var (
		verify    *tls.CertificateVerificationError
		authority x509.UnknownAuthorityError
		host      x509.HostnameError
		invalid   x509.CertificateInvalidError
	)
	if errors.As(err, &verify) || errors.As(err, &authority) || errors.As(err, &host) || errors.As(err, &invalid) {
		return false
	}
	return true
}
