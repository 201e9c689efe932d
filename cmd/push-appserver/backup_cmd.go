package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
)

const backupSynopsis = `backup [-config file] FILE

Writes a consistent copy of the SQLite registry (registrations with their
secrets, push outcomes, the token block list, the device-key salt) to
FILE, which must not exist, readable by its owner alone, and checks it.
It works beside a running server, whose registrations go on meanwhile.

"push-appserver restore FILE" puts it back. A PostgreSQL registry is
backed up with pg_dump.`

const restoreSynopsis = `restore [-config file] FILE

Puts the backup FILE (from push-appserver backup) in place of the SQLite
registry. The server must be stopped: restore refuses while any process
has the registry open, and when FILE is not a registry this version can
use. The registry it replaces is kept beside it, with its write-ahead
log, as registry.db.replaced-<time>. Start the server afterwards.`

// backuper is a registry that can copy itself to a file.
type backuper interface {
	Backup(ctx context.Context, path string) (int, error)
}

func runBackup(args []string, stdout, stderr io.Writer) int {
	f := newFlags("backup", backupSynopsis, stdout, stderr)
	cfgPath := f.configFlag()
	rest, code, ok := f.parse(args)
	if !ok {
		return code
	}
	if len(rest) != 1 {
		f.usage(stderr)
		return 2
	}
	cfg, ok := loadConfig(*cfgPath, stderr)
	if !ok {
		return 1
	}
	if cfg.Database.Driver != "sqlite" {
		fmt.Fprintf(stderr, "push-appserver backup: the registry is on %s: back it up with its own tools (pg_dump)\n", cfg.Database.Driver)
		return 1
	}
	ctx, store, done, ok := openConfigured(cfg, "backup", stderr)
	if !ok {
		return 1
	}
	defer done()
	b, ok := store.(backuper)
	if !ok {
		fmt.Fprintf(stderr, "push-appserver backup: this registry cannot be backed up by push-appserver\n")
		return 1
	}
	n, err := b.Backup(ctx, rest[0])
	if err != nil {
		fmt.Fprintf(stderr, "push-appserver backup: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "wrote %s: %d registrations\n", rest[0], n)
	return 0
}

func runRestore(args []string, stdout, stderr io.Writer) int {
	f := newFlags("restore", restoreSynopsis, stdout, stderr)
	cfgPath := f.configFlag()
	rest, code, ok := f.parse(args)
	if !ok {
		return code
	}
	if len(rest) != 1 {
		f.usage(stderr)
		return 2
	}
	cfg, ok := loadConfig(*cfgPath, stderr)
	if !ok {
		return 1
	}
	if cfg.Database.Driver != "sqlite" {
		fmt.Fprintf(stderr, "push-appserver restore: the registry is on %s: restore it with its own tools (pg_restore)\n", cfg.Database.Driver)
		return 1
	}
	// A new machine's data directory may not be there yet.
	if err := os.MkdirAll(filepath.Dir(cfg.Database.Path), 0o700); err != nil {
		fmt.Fprintf(stderr, "push-appserver restore: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	n, aside, err := sqlite.Restore(ctx, rest[0], cfg.Database.Path)
	if err != nil {
		fmt.Fprintf(stderr, "push-appserver restore: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "restored %s: %d registrations\n", rest[0], n)
	if aside != "" {
		fmt.Fprintf(stdout, "the registry it replaced is at %s\n", aside)
	}
	return 0
}
