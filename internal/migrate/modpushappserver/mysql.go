package modpushappserver

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql" // Prosody's SQL store in MySQL or MariaDB
)

// openMySQL opens Prosody's SQL store in MySQL or MariaDB; raw is a URL
// as mysqlConfig reads it.
func openMySQL(ctx context.Context, raw string) (Source, io.Closer, error) {
	cfg, err := mysqlConfig(raw)
	if err != nil {
		return nil, nil, err
	}
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("MySQL connection URL: %w", err)
	}
	db := sql.OpenDB(connector)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("connecting to MySQL at %s: %w", cfg.Addr, err)
	}
	// Prosody writes its queries with "quoted" names and turns the quotes
	// into backticks for MySQL, as we do.
	return SQLStore{DB: db, Name: "in MySQL", Placeholder: "?", Quote: "`"}, db, nil
}

// mysqlConfig reads mysql://user:password@host[:port]/database (port 3306
// by default), or mysql://user:password@/database?socket=/run/mysqld/mysqld.sock
// for a unix socket; ?tls=true (or skip-verify, preferred) encrypts the
// connection. mariadb:// is the same. Errors never quote the URL: it holds
// the password.
func mysqlConfig(raw string) (*mysql.Config, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "mysql" && u.Scheme != "mariadb") || u.Opaque != "" {
		return nil, errors.New("not a valid MySQL connection URL: want mysql://user:password@host[:port]/database")
	}
	cfg := mysql.NewConfig()
	cfg.Timeout = 10 * time.Second
	if u.User != nil {
		cfg.User = u.User.Username()
		cfg.Passwd, _ = u.User.Password()
	}
	cfg.DBName = strings.TrimPrefix(u.Path, "/")
	if cfg.DBName == "" || strings.Contains(cfg.DBName, "/") {
		return nil, errors.New("the MySQL connection URL names no database: want mysql://user:password@host[:port]/database")
	}
	q := u.Query()
	if socket := q.Get("socket"); socket != "" {
		if u.Host != "" && u.Host != "localhost" {
			return nil, errors.New("the MySQL connection URL names both a host and a socket")
		}
		cfg.Net, cfg.Addr = "unix", socket
	} else {
		host := u.Host
		if host == "" {
			return nil, errors.New("the MySQL connection URL names no host (or ?socket=PATH)")
		}
		if u.Port() == "" {
			host = net.JoinHostPort(strings.Trim(host, "[]"), "3306")
		}
		cfg.Net, cfg.Addr = "tcp", host
	}
	switch t := q.Get("tls"); t {
	case "", "false":
	case "true":
		cfg.TLS = &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12}
	case "skip-verify", "preferred":
		cfg.TLSConfig = t
	default:
		return nil, fmt.Errorf("MySQL connection URL: tls=%q: want true, false, skip-verify or preferred", t)
	}
	for k := range q {
		if k != "socket" && k != "tls" {
			return nil, fmt.Errorf("MySQL connection URL: unknown parameter %q (known: socket, tls)", k)
		}
	}
	return cfg, nil
}
