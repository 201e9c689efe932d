package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Backup writes a consistent copy of the whole registry (registrations
// with their secrets, push outcomes, the block list, the device-key salt)
// to path, which must not exist, and returns how many registrations the
// copy holds. It runs beside a running server: SQLite's VACUUM INTO reads
// the registry in one read transaction, so registrations go on meanwhile,
// and the copy is what the registry held when that transaction began.
//
// The copy is readable by its owner alone, as the registry is, and is on
// disk (synced) before Backup returns; a copy that is not whole is
// removed. It is checked before it counts: integrity_check on a fresh
// connection to it.
func (s *Store) Backup(ctx context.Context, path string) (int, error) {
	// An absolute path never starts with "file:", which SQLite would take
	// as a URI.
	abs, err := filepath.Abs(path)
	if err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	f, err := os.OpenFile(abs, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	f.Close()
	done := false
	defer func() {
		if !done {
			os.Remove(abs)
		}
	}()
	// VACUUM INTO writes into an empty file it finds, keeping its mode.
	if _, err := s.read.ExecContext(ctx, `VACUUM INTO ?`, abs); err != nil {
		return 0, fmt.Errorf("backup to %s: %w%s", path, err, diskHint(err))
	}
	if err := syncFile(abs); err != nil {
		return 0, fmt.Errorf("backup to %s: %w", path, err)
	}
	n, err := checkCopy(ctx, abs)
	if err != nil {
		return 0, fmt.Errorf("backup to %s: checking the copy: %w", path, err)
	}
	done = true
	return n, nil
}

// syncFile flushes path and its directory's entry for it to disk.
func syncFile(path string) error {
	for _, p := range []string{path, filepath.Dir(path)} {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		err = f.Sync()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// checkCopy opens the copy at path read-only, checks its integrity and
// counts its registrations.
func checkCopy(ctx context.Context, path string) (int, error) {
	file := "file:" + strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	db, err := sql.Open("sqlite", file+"?mode=ro")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var result string
	if err := db.QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&result); err != nil {
		return 0, err
	}
	if result != "ok" {
		return 0, errors.New("integrity_check: " + result)
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM registrations`).Scan(&n); err != nil {
		return 0, err
	}
	return n, nil
}
