package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
	"github.com/push-appserver/push-appserver/internal/testutil/tmpfs"
)

// import registry reads a copy of its SQLite source, made in the
// temporary directory. Where that directory has no room for the copy (a
// /tmp on a small tmpfs, a registry of millions of devices), the copy
// goes in the data directory instead, as where there is no temporary
// directory at all, rather than the import failing with a full disk
// that is not the registry's.
func TestImportRegistryTempDirFull(t *testing.T) {
	cfg := writeConfig(t, "[apps.ios]\nkind = \"log\"\n")
	if err := os.MkdirAll(filepath.Join(filepath.Dir(cfg), "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "other.db")
	s, err := sqlite.Open(t.Context(), src)
	if err != nil {
		t.Fatal(err)
	}
	const n = 2000
	var rs []registry.Registration
	for i := range n {
		rs = append(rs, registry.Registration{Node: fmt.Sprintf("node-%04d", i), Type: "ios", Token: strings.Repeat("ab", 32), Secret: fmt.Sprintf("secret-%d", i), Registered: time.Now()})
	}
	if _, err := s.Put(t.Context(), rs); err != nil {
		t.Fatal(err)
	}
	s.Close()

	tmp := tmpfs.Mount(t, 65536)
	t.Setenv("TMPDIR", tmp)
	var out, errb bytes.Buffer
	if code := run([]string{"import", "registry", "-config", cfg, src}, &out, &errb); code != 0 {
		t.Fatalf("import with a full temporary directory: exit %d\n%s%s", code, out.String(), errb.String())
	}
	t.Log(out.String())
	dst, err := sqlite.Open(t.Context(), filepath.Join(filepath.Dir(cfg), "data", "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if c, err := dst.Count(t.Context()); err != nil || c != n {
		t.Fatalf("%d registrations imported (%v), want %d", c, err, n)
	}
}
