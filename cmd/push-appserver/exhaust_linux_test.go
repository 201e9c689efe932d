package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// startServerNOFILE starts the binary on config with a descriptor limit
// of nofile, soft and hard, from its first instruction on.
func startServerNOFILE(t *testing.T, bin, config string, nofile int) *server {
	t.Helper()
	return startCommand(t, exec.Command("prlimit", fmt.Sprintf("--nofile=%d:%d", nofile, nofile), bin, "serve", "-config", config))
}

// holdIdle opens a connection to addr, has one request answered on it
// and keeps it open, idle, as a keep-alive client does, until the test
// ends.
func holdIdle(t *testing.T, addr, path string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	c.SetDeadline(time.Time{})
	return nil
}

// While the API's clients hold every connection slot the descriptor
// limit leaves the HTTP listeners, the monitoring still scrapes
// /metrics on metrics_listen: that is where the refusals are counted and
// the alert on them is computed.
func TestMetricsScrapedWhileAPISlotsFull(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	addrs := freePorts(t, 2)
	api, mon := addrs[0], addrs[1]
	config := filepath.Join(dir, "c.toml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf("data_dir = %q\nmetrics_listen = %q\n[http]\nlisten = %q\n", filepath.Join(dir, "data"), mon, api)), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServerNOFILE(t, bin, config, 64)
	s.waitHealthy(t, api)
	held := 0
	for held < 200 {
		if err := holdIdle(t, api, "/push_appserver/v1/health"); err != nil {
			break
		}
		held++
	}
	t.Logf("%d API connections held", held)
	if held == 200 {
		t.Fatal("200 connections held under a limit of 64 descriptors")
	}
	if err := holdIdle(t, mon, "/metrics"); err != nil {
		t.Fatalf("scraping /metrics while the API's clients hold %d connections: %v", held, err)
	}
	// What the scrape is for: the refusal that stopped the loop above.
	if v := metric(t, mon, `push_appserver_http_connections_refused_total{limit="descriptors"}`); v < 1 {
		t.Errorf("connections refused for the descriptors, as scraped: %v, want at least 1", v)
	}
}
