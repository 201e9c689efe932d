package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/push-appserver/push-appserver/internal/config"
	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
)

const backupSynopsis = `backup [-config file] FILE

Writes a consistent copy of the SQLite registry (registrations with their
secrets, push outcomes, the token block list, the device-key salt) to
FILE, which must not exist, readable by its owner alone, and checks it.
It works beside a running server, whose registrations go on meanwhile.

"push-appserver restore -config file FILE", run as the server's user
with the server stopped, puts it back. A PostgreSQL registry is
backed up with pg_dump.`

const restoreSynopsis = `restore [-config file] FILE

Puts the backup FILE (from push-appserver backup) in place of the SQLite
registry. The server must be stopped: restore refuses while any process
has the registry open, and when FILE is not a registry this version can
use. The registry it replaces is kept beside it, with its write-ahead
log, as registry.db.replaced-<time>. Start the server afterwards.`

// sqliteFileCommand parses the flags of a command that takes one FILE
// and works on the SQLite registry itself, and loads the configuration,
// refusing a PostgreSQL registry with the name of its own tool. ok false:
// exit with code, the problem printed.
func sqliteFileCommand(name, synopsis, pgTool string, args []string, stdout, stderr io.Writer) (cfg *config.Config, file string, code int, ok bool) {
	f := newFlags(name, synopsis, stdout, stderr)
	cfgPath := f.configFlag()
	rest, code, ok := f.parse(args)
	if !ok {
		return nil, "", code, false
	}
	if len(rest) != 1 {
		f.usage(stderr)
		return nil, "", 2, false
	}
	if cfg, ok = loadRegistryConfig(*cfgPath, stderr); !ok {
		return nil, "", 1, false
	}
	if cfg.Database.Driver != "sqlite" {
		fmt.Fprintf(stderr, "push-appserver %s: the registry is on %s: use its own tools (%s)\n", name, cfg.Database.Driver, pgTool)
		return nil, "", 1, false
	}
	return cfg, rest[0], 0, true
}

func runBackup(args []string, stdout, stderr io.Writer) int {
	cfg, file, code, ok := sqliteFileCommand("backup", backupSynopsis, "pg_dump", args, stdout, stderr)
	if !ok {
		return code
	}
	ctx, store, done, ok := openExisting(cfg, "backup", stderr)
	if !ok {
		return 1
	}
	defer done()
	n, err := store.(*sqlite.Store).Backup(ctx, file)
	if err != nil {
		fmt.Fprintf(stderr, "push-appserver backup: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "wrote %s: %d registrations of %s\n", file, n, cfg.Database.Path)
	return 0
}

func runRestore(args []string, stdout, stderr io.Writer) int {
	cfg, file, code, ok := sqliteFileCommand("restore", restoreSynopsis, "pg_restore", args, stdout, stderr)
	if !ok {
		return code
	}
	// A new machine's data directory may not be there yet.
	if err := os.MkdirAll(filepath.Dir(cfg.Database.Path), 0o700); err != nil {
		fmt.Fprintf(stderr, "push-appserver restore: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	n, aside, err := sqlite.Restore(ctx, file, cfg.Database.Path)
	if err != nil {
		fmt.Fprintf(stderr, "push-appserver restore: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "restored %s: %d registrations, into %s\n", file, n, cfg.Database.Path)
	if aside != "" {
		fmt.Fprintf(stdout, "the registry it replaced is at %s\n", aside)
	}
	return 0
}
