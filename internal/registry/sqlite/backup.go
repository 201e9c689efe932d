package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	modernc "modernc.org/sqlite"
	lib "modernc.org/sqlite/lib"
)

// Backup writes a consistent copy of the whole registry (registrations
// with their secrets, push outcomes, the block list, the device-key salt)
// to path, which must not exist, and returns how many registrations the
// copy holds. It runs beside a running server: SQLite's VACUUM INTO reads
// the registry in one read transaction, so registrations go on meanwhile,
// and the copy is what the registry held when that transaction began.
//
// The copy is readable by its owner alone, as the registry is, and is on
// disk (synced) before Backup returns. It is checked before it counts:
// integrity_check on a fresh connection to it. Until then it is written
// under a name of its own beside path (".<name>.partial-<random>"), so a
// backup killed midway (kill -9, the OOM killer, a power cut), which no
// deferred removal survives, leaves no copy that is not whole under a
// name a retention such as push-appserver-backup.service's counts as a
// backup.
func (s *Store) Backup(ctx context.Context, path string) (int, error) {
	// An absolute path never starts with "file:", which SQLite would take
	// as a URI.
	abs, err := filepath.Abs(path)
	if err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	// Refused at once rather than after the copy; linking it in below
	// refuses again if the name was taken meanwhile.
	if _, err := os.Lstat(abs); err == nil {
		return 0, fmt.Errorf("backup: %w", &fs.PathError{Op: "create", Path: abs, Err: syscall.EEXIST})
	}
	f, err := os.CreateTemp(filepath.Dir(abs), "."+filepath.Base(abs)+".partial-*")
	if err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	tmp := f.Name()
	f.Close()
	defer func() {
		os.Remove(tmp)
		os.Remove(tmp + "-journal")
	}()
	// VACUUM INTO writes into an empty file it finds, keeping its mode
	// (CreateTemp's 0600).
	if _, err := s.read.ExecContext(ctx, `VACUUM INTO ?`, tmp); err != nil {
		return 0, fmt.Errorf("backup to %s: %w%s", path, err, diskHint(err))
	}
	if err := syncFile(tmp); err != nil {
		return 0, fmt.Errorf("backup to %s: %w", path, err)
	}
	n, err := checkCopy(ctx, tmp)
	if err != nil {
		return 0, fmt.Errorf("backup to %s: checking the copy: %w", path, err)
	}
	if err := linkNew(tmp, abs); err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	if err := syncFile(abs); err != nil {
		return 0, fmt.Errorf("backup to %s: %w", path, err)
	}
	return n, nil
}

// linkNew gives the file at tmp the name path, which must not exist: a
// hard link, which never replaces a file, or, on a file system without
// them (FAT, some network shares), a rename once path is found free.
func linkNew(tmp, path string) error {
	err := os.Link(tmp, path)
	if err == nil || errors.Is(err, fs.ErrExist) {
		return err
	}
	if _, serr := os.Lstat(path); serr == nil {
		return &fs.PathError{Op: "create", Path: path, Err: syscall.EEXIST}
	}
	return os.Rename(tmp, path)
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

// checkCopy opens the copy at path read-only, checks that this program
// knows its schema and its integrity, and counts its registrations.
func checkCopy(ctx context.Context, path string) (int, error) {
	db, err := sql.Open("sqlite", fileURI(path)+"?mode=ro")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var version int
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		return 0, err
	}
	if err := knownSchema(version); err != nil {
		return 0, err
	}
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

// Restore puts the backup at backup in place of the registry at path,
// which no process may have open: it refuses while one does (a running
// server), checks the backup first, and keeps the registry it replaces,
// with its write-ahead log if it has one, beside it as
// path.replaced-<time>, whose name it returns. The copy is opened under
// a temporary name beside path before the registry is touched, which
// brings a backup of an older version's schema up to date and refuses,
// changing nothing, one this version cannot open; n is how many
// registrations it holds.
func Restore(ctx context.Context, backup, path string) (n int, aside string, err error) {
	if _, err := checkCopy(ctx, backup); err != nil {
		return 0, "", fmt.Errorf("restore: the backup %s: %w%s", backup, err, logHint(err, backup))
	}
	if err := notInUse(ctx, path); err != nil {
		return 0, "", fmt.Errorf("restore: %w", err)
	}
	if bs, err := os.Stat(backup); err == nil {
		if ps, err := os.Stat(path); err == nil && os.SameFile(bs, ps) {
			return 0, "", fmt.Errorf("restore: %s is the registry itself; nothing was restored", backup)
		}
	}
	tmp, err := copyToTemp(ctx, backup, path)
	if err != nil {
		return 0, "", fmt.Errorf("restore: %w; nothing was restored", err)
	}
	defer func() {
		for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
			os.Remove(tmp + suffix)
		}
	}()
	// Opened here, not once in place: a file the checks above pass may
	// still be one this version cannot open (a copy rebuilt from
	// sqlite3's .dump has every table but no schema version, so the
	// first migration fails), and found out after the registry was
	// moved aside it left a server nothing it could start on.
	if n, err = openCopy(ctx, tmp); err != nil {
		return 0, "", fmt.Errorf("restore: the backup %s is not a registry this version can open: %w; nothing was restored", backup, err)
	}
	// A server started while the copy was made (seconds for a million
	// registrations) would go on writing to the registry moved aside
	// from under it.
	if err := notInUse(ctx, path); err != nil {
		return 0, "", fmt.Errorf("restore: %w; nothing was restored", err)
	}
	if _, err := os.Stat(path); err == nil {
		stamp := path + ".replaced-" + time.Now().UTC().Format("20060102T150405Z")
		aside = stamp
		// Never over an earlier one (two restores within a second):
		// Rename would replace it.
		for i := 1; ; i++ {
			if _, err := os.Lstat(aside); errors.Is(err, fs.ErrNotExist) {
				break
			}
			aside = fmt.Sprintf("%s-%d", stamp, i)
		}
		// The log and its index go with the file: a log is applied to
		// whatever file carries its name, and this one holds commits
		// the file may not have yet.
		for _, suffix := range []string{"-wal", "-shm", ""} {
			if err := os.Rename(path+suffix, aside+suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return 0, "", fmt.Errorf("restore: moving the registry aside: %w", err)
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return 0, "", fmt.Errorf("restore: %w", err)
	}
	// A log left under the registry's name would be applied to the copy.
	for _, suffix := range []string{"-wal", "-shm"} {
		if _, err := os.Stat(path + suffix); !errors.Is(err, fs.ErrNotExist) {
			return 0, aside, fmt.Errorf("restore: %s%s is still there (%v); nothing was restored", path, suffix, err)
		}
	}
	if err := placeNew(tmp, path); err != nil {
		// Nothing is in the registry's place: put the one moved aside
		// back, or a server started next would make an empty one.
		if aside != "" {
			for _, suffix := range []string{"", "-wal", "-shm"} {
				if rerr := os.Rename(aside+suffix, path+suffix); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
					return 0, aside, fmt.Errorf("restore: %w; the registry it replaced is at %s: %v", err, aside, rerr)
				}
			}
		}
		return 0, "", fmt.Errorf("restore: %w; nothing was restored", err)
	}
	return n, aside, nil
}

// openCopy opens the registry at path as a server would, which brings
// its schema up to date, counts its registrations and closes it again,
// leaving no write-ahead log beside it: the file alone is then whole.
func openCopy(ctx context.Context, path string) (int, error) {
	s, err := Open(ctx, path)
	if err != nil {
		return 0, err
	}
	n, err := s.Count(ctx)
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, err
	}
	// The last connection's close copies the log into the file and
	// removes it; one left would hold commits the file lacks.
	if st, err := os.Stat(path + "-wal"); err == nil && st.Size() > 0 {
		return 0, fmt.Errorf("its write-ahead log %s-wal was left after closing it", path)
	}
	return n, syncFile(path)
}

// logHint explains why a backup with a write-ahead log beside it (a
// registry copied off a machine whose server died) could not be opened:
// SQLite reads a log through its index, FILE-shm, which it makes where
// there is none, so it cannot read one in a directory this user cannot
// write to. The file without its log would be less than the backup.
func logHint(err error, backup string) string {
	var se *modernc.Error
	if !errors.As(err, &se) || se.Code()&0xff != lib.SQLITE_CANTOPEN {
		return ""
	}
	if _, err := os.Stat(backup + "-wal"); err != nil {
		return ""
	}
	return fmt.Sprintf(" (its write-ahead log %[1]s-wal holds commits the file may not have, and SQLite reads it only where it can make %[1]s-shm: copy both files into a directory this user can write to and restore from there)", backup)
}

// notInUse fails when another connection has the registry at path open:
// an exclusive lock is what no other connection lets SQLite take.
func notInUse(ctx context.Context, path string) error {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	db, err := sql.Open("sqlite", fileURI(path)+"?_pragma=locking_mode(EXCLUSIVE)&_pragma=busy_timeout(200)")
	if err != nil {
		return err
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `BEGIN EXCLUSIVE`); err != nil {
		return fmt.Errorf("the registry %s is in use (is the server running? stop it first): %w", path, err)
	}
	_, err = conn.ExecContext(ctx, `ROLLBACK`)
	return err
}

// copyToTemp copies the registry at src, with the commits its
// write-ahead log holds, to a new file of its own name beside dst,
// readable by its owner alone and synced, and returns that name: one
// left by an interrupted restore is no obstacle to the next.
func copyToTemp(ctx context.Context, src, dst string) (tmp string, err error) {
	out, err := os.CreateTemp(filepath.Dir(dst), filepath.Base(dst)+".restoring-*")
	if err != nil {
		return "", err
	}
	tmp = out.Name()
	out.Close()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
		os.Remove(tmp + "-journal")
	}()
	// Read through SQLite, not as bytes: a registry with its write-ahead
	// log beside it (a copy of a data directory whose server died) holds
	// commits the file alone does not. VACUUM INTO writes into the empty
	// file, keeping its mode (0600).
	abs, err := filepath.Abs(src)
	if err != nil {
		return "", err
	}
	db, err := sql.Open("sqlite", fileURI(abs)+"?mode=ro")
	if err != nil {
		return "", err
	}
	_, err = db.ExecContext(ctx, `VACUUM INTO ?`, tmp)
	db.Close()
	if err != nil {
		return "", err
	}
	if err = syncFile(tmp); err != nil {
		return "", err
	}
	return tmp, nil
}

// placeNew gives the file at tmp the name dst, which must not exist, and
// syncs it: dst is either missing or whole.
func placeNew(tmp, dst string) error {
	if err := os.Link(tmp, dst); err != nil {
		return err
	}
	if err := os.Remove(tmp); err != nil {
		return err
	}
	return syncFile(dst)
}

// OpenCopy opens a copy of the registry at path, read in one read-only
// transaction and written into a directory of its own under the system's
// temporary one, for a command that only reads that registry (import's
// source, a dry run's target): opening it would migrate it to this
// program's schema and make it the opener's alone. Where there is no
// temporary directory to write in (a container's root: scratch has no
// /tmp, and Kubernetes mounts it read-only), or it has no room for the
// copy (a /tmp on a small tmpfs), the copy's directory goes under
// fallback instead (the data directory), if not "". Closing the store
// removes the copy.
func OpenCopy(ctx context.Context, path, fallback string) (*Store, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, err // SQLite would make an empty registry of it
	}
	db, err := sql.Open("sqlite", fileURI(abs)+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	parents := []string{""} // os.TempDir()
	if fallback != "" {
		parents = append(parents, fallback)
	}
	var errs []error
	for _, parent := range parents {
		dir, err := os.MkdirTemp(parent, "push-appserver-copy-")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		copyPath := filepath.Join(dir, "registry.db")
		if _, err := db.ExecContext(ctx, `VACUUM INTO ?`, copyPath); err != nil {
			os.RemoveAll(dir)
			// The directory the copy ran out of room in is named: it
			// is not where the registries are.
			hint := diskHint(err)
			errs = append(errs, fmt.Errorf("copying %s into %s: %w%s", path, dir, err, hint))
			if hint == "" {
				break
			}
			continue
		}
		s, err := Open(ctx, copyPath)
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		s.removeOnClose = dir
		return s, nil
	}
	return nil, errors.Join(errs...)
}
