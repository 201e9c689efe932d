package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMovedDataDirIsNamed guards an operator who changed data_dir (a
// typo, a volume mounted elsewhere) and restarts: the server opens a new,
// empty registry there, and every device registered in the old one has
// its pushes answered as to an unknown node, on which ejabberd drops the
// user's push session. check-config, which the unit runs before every
// start, warns that there is no registry at that path, and the server's
// log names the registry it opened and says it is new and empty, where
// before neither said a word of it.
func TestMovedDataDirIsNamed(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	addr := freePort(t)
	config := filepath.Join(dir, "c.toml")
	write := func(dataDir string) {
		os.WriteFile(config, fmt.Appendf(nil, "data_dir = %q\n[http]\nlisten = %q\n", dataDir, addr), 0o600)
	}
	write(filepath.Join(dir, "data"))
	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)
	s.registerTo(t, "apns", "n1", strings.Repeat("ab", 32))
	s.stop(t)
	if !strings.Contains(s.log.String(), filepath.Join(dir, "data", "registry.db")) {
		t.Errorf("the log does not name the registry the server opened:\n%s", s.log.String())
	}

	moved := filepath.Join(dir, "dta")
	write(moved)
	var stdout, stderr bytes.Buffer
	if code := run([]string{"check-config", "-config", config}, &stdout, &stderr); code != 0 {
		t.Fatalf("check-config: %d\n%s%s", code, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "warning: no registry at "+filepath.Join(moved, "registry.db")) {
		t.Errorf("check-config does not warn that the registry is not there:\n%s", stdout.String())
	}
	s = startServer(t, bin, config)
	s.waitHealthy(t, addr)
	s.stop(t)
	if !strings.Contains(s.log.String(), "created a new, empty registry") {
		t.Errorf("the log does not say the registry is new:\n%s", s.log.String())
	}
}
