// Package h2client builds the HTTP/2 client each push service backend
// keeps: one connection pool per service, TLS 1.2 or later, optional
// client certificates and a CA directory, and pings that notice a dead
// connection. It uses x/net/http2's transport rather than net/http's: its
// pool shares one dial among all requests waiting for a connection, so a
// burst at start opens one connection, not one per request.
package h2client

//lint:file-ignore SA1019 x/net/http2's Transport is deprecated; the move to net/http's HTTP/2 is tracked separately.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/net/http2"
)

// Options configure the client.
type Options struct {
	// CAPath is a directory of PEM CA certificates to trust instead of the
	// system pool (mod_push_appserver's capath options).
	CAPath string
	// Certificates are TLS client certificates (APNS certificate auth).
	Certificates []tls.Certificate
}

// New returns an HTTP/2-only client.
func New(o Options) (*http.Client, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}, Certificates: o.Certificates}
	if o.CAPath != "" {
		pool, err := LoadCAs(o.CAPath)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	dialer := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}, Config: cfg}
	return &http.Client{Transport: &http2.Transport{
		TLSClientConfig: cfg,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return dialer.DialContext(ctx, network, addr)
		},
		ReadIdleTimeout: 30 * time.Second, // ping an idle connection ...
		PingTimeout:     10 * time.Second, // ... and drop it when the ping goes unanswered
		IdleConnTimeout: 10 * time.Minute,
	}}, nil
}

// LoadCAs reads every PEM certificate in dir into a pool, for a CA path
// option.
func LoadCAs(dir string) (*x509.CertPool, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("CA path: %w", err)
	}
	pool := x509.NewCertPool()
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		if data, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil {
			pool.AppendCertsFromPEM(data)
		}
	}
	return pool, nil
}
