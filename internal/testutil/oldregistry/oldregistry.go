// Package oldregistry writes SQLite registries as earlier releases left
// them, for the tests of what opens them: upgrades, imports, restores.
package oldregistry

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	_ "modernc.org/sqlite" // the driver the registry uses
)

// Write makes a registry at path with the schema of version: the first
// version migrations found in dir (the SQLite store's migrations
// directory, relative to the test), then the statements of rows with
// args, then the version recorded.
func Write(t testing.TB, path, dir string, version int, rows string, args ...any) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for n := 1; n <= version; n++ {
		files, _ := filepath.Glob(filepath.Join(dir, fmt.Sprintf("%03d_*.sql", n)))
		if len(files) != 1 {
			t.Fatalf("migration %d in %s: %v", n, dir, files)
		}
		body, err := os.ReadFile(files[0])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(string(body)); err != nil {
			t.Fatalf("%s: %v", files[0], err)
		}
	}
	if rows != "" {
		if _, err := db.Exec(rows, args...); err != nil {
			t.Fatal(err)
		}
	}
	// In WAL mode, as every release left its registry: two processes
	// switching a file to it at once fail at once (SQLITE_BUSY).
	if _, err := db.Exec(fmt.Sprintf("PRAGMA user_version = %d; PRAGMA journal_mode = WAL", version)); err != nil {
		t.Fatal(err)
	}
}
