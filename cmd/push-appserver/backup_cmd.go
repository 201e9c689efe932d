package main

import (
	"context"
	"fmt"
	"io"
)

const backupSynopsis = `backup [-config file] FILE

Writes a consistent copy of the SQLite registry (registrations with their
secrets, push outcomes, the token block list, the device-key salt) to
FILE, which must not exist, readable by its owner alone, and checks it.
It works beside a running server, whose registrations go on meanwhile.

To restore: stop the server, remove data_dir/registry.db-wal and
registry.db-shm, put the copy in place of data_dir/registry.db, and start
the server. A PostgreSQL registry is backed up with pg_dump.`

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
