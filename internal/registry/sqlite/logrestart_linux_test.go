package sqlite

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"modernc.org/libc"
	lib "modernc.org/sqlite/lib"

	"github.com/push-appserver/push-appserver/internal/registry"
)

// A log that restarts (its pages all copied into the registry, the next
// commit writes it again from its start, under a new header) has its new
// header on disk before any frame of the commit that restarted it. A
// power cut may leave any of the writes made since the last sync on disk
// and not others; were the header among those lost, the old header would
// still vouch for the old frames left after it, and the next open would
// copy the oldest of them over the newer pages the checkpoint wrote:
// registrations answered long before would be gone, the registry
// corrupt (SQLite syncs that header for this reason, ticket ff5be73dee).
// The deferred commit must not defer that sync.
//
// The test keeps, as the disk, what the log held at each sync, and cuts
// the power as the syncer is about to sync a commit that restarted the
// log: the first blocks of the log as last synced, the rest as written.
func TestRestartedLogHeaderSyncedBeforeItsFrames(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		durable []byte // the log as of its last sync
		crash   func() // set: cuts the power at the syncer's next sync
	)
	snapshot := func() {
		b, err := os.ReadFile(path + "-wal")
		if err != nil {
			panic(err)
		}
		durable = b
	}
	// Every sync of the writer's log: SQLite's, through the root VFS, and
	// the syncer's.
	onRootLogSync(t, s, &mu, snapshot)
	s.logs.syncFile = func(f *os.File) error {
		mu.Lock()
		defer mu.Unlock()
		if crash != nil {
			crash()
			crash = nil
		}
		snapshot()
		return f.Sync()
	}

	reg := func(node, secret string) {
		t.Helper()
		r := registry.Registration{Node: node, Type: "apns", Token: "t-" + node, Secret: secret, Registered: time.Now()}
		if _, err := s.Register(ctx, node, registry.Renew(r)); err != nil {
			t.Fatalf("register %s: %v", node, err)
		}
	}
	checkpoint := func(mode string) {
		t.Helper()
		var busy, log, done int
		if err := s.write.QueryRowContext(ctx, "PRAGMA wal_checkpoint("+mode+")").Scan(&busy, &log, &done); err != nil || busy != 0 || log != done {
			t.Fatalf("checkpoint %s: busy %d, %d of %d frames (%v)", mode, busy, done, log, err)
		}
	}
	// A log of registrations alone, one commit each, all copied into the
	// registry: the next commit restarts it.
	checkpoint("TRUNCATE")
	const n = 10
	for i := range n {
		reg(fmt.Sprintf("node-%d", i), "s")
	}
	checkpoint("PASSIVE")

	crashDir := t.TempDir()
	crash = func() {
		now, err := os.ReadFile(path + "-wal")
		if err != nil {
			panic(err)
		}
		db, err := os.ReadFile(path)
		if err != nil {
			panic(err)
		}
		// The blocks up to the end of the old log's first commit as
		// last synced, the rest as written since.
		cut := len(durable)
		pageSize := int(binary.BigEndian.Uint32(durable[8:12]))
		for off := 32; off+24+pageSize <= len(durable); off += 24 + pageSize {
			if binary.BigEndian.Uint32(durable[off+4:off+8]) != 0 {
				cut = (off + 24 + pageSize + 4095) &^ 4095
				break
			}
		}
		wal := bytes.Clone(durable[:min(cut, len(durable))])
		if len(now) > len(wal) {
			wal = append(wal, now[len(wal):]...)
		}
		if err := os.WriteFile(filepath.Join(crashDir, "registry.db"), db, 0o600); err != nil {
			panic(err)
		}
		if err := os.WriteFile(filepath.Join(crashDir, "registry.db-wal"), wal, 0o600); err != nil {
			panic(err)
		}
	}
	// Its pages more than the old log's first commit had.
	reg("restart", strings.Repeat("x", 64<<10))
	mu.Lock()
	cut := crash == nil
	mu.Unlock()
	if !cut {
		t.Fatal("the commit that restarted the log was not handed to the syncer")
	}

	after, err := Open(ctx, filepath.Join(crashDir, "registry.db"))
	if err != nil {
		t.Fatalf("registry after a power cut while the restarted log was syncing: %v", err)
	}
	defer after.Close()
	for i := range n {
		node := fmt.Sprintf("node-%d", i)
		if _, err := after.Get(ctx, node); err != nil {
			t.Errorf("%s, answered and copied into the registry before the log restarted, after a power cut: %v", node, err)
		}
	}
	var ok string
	if err := after.read.QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&ok); err != nil || ok != "ok" {
		t.Errorf("integrity_check after the power cut: %q (%v)", ok, err)
	}
}

// onRootLogSync makes every sync of the writer's log that reaches the
// root VFS (SQLite's own syncs, not the log syncer's) call before first,
// holding mu: the tests keep, as the disk, what the log held then. It
// registers s's Close as a cleanup, to run before the hook is freed.
func onRootLogSync(t *testing.T, s *Store, mu *sync.Mutex, before func()) {
	t.Helper()
	hookRootLogSync(t, s, func(sync func() int32) int32 {
		mu.Lock()
		before()
		mu.Unlock()
		return sync()
	})
}

// hookRootLogSync makes every sync of the writer's log that reaches the
// root VFS (SQLite's own syncs, not the log syncer's) call hook, which
// decides its outcome, syncing the file with sync or not. It registers
// s's Close as a cleanup, to run before the hook is freed.
func hookRootLogSync(t *testing.T, s *Store, hook func(sync func() int32) int32) {
	t.Helper()
	var wf *walFile
	if err := s.withRegWriter(context.Background(), func(w *regWriter) error { wf, _ = w.log(); return nil }); err != nil || wf == nil {
		t.Fatalf("the writer's log (%v)", err)
	}
	rootSync := cPointer[lib.Tsqlite3_io_methods](wf.root).FxSync
	hooked := func(tls *libc.TLS, pFile uintptr, flags int32) int32 {
		return hook(func() int32 {
			return (*(*func(*libc.TLS, uintptr, int32) int32)(unsafe.Pointer(&rootSync)))(tls, pFile, flags)
		})
	}
	tls := libc.NewTLS()
	m := cMalloc(libc.Xmalloc, tls, int(unsafe.Sizeof(lib.Tsqlite3_io_methods{})))
	if m == 0 {
		t.Fatal("out of memory")
	}
	*cPointer[lib.Tsqlite3_io_methods](m) = *cPointer[lib.Tsqlite3_io_methods](wf.root)
	*(*func(*libc.TLS, uintptr, int32) int32)(unsafe.Pointer(&cPointer[lib.Tsqlite3_io_methods](m).FxSync)) = hooked
	wf.root = m
	// Cleanups run last first: the store closes (its last sync hooked)
	// before the methods are freed.
	t.Cleanup(func() {
		runtime.KeepAlive(hooked)
		libc.Xfree(tls, m)
		tls.Close()
	})
	t.Cleanup(func() { s.Close() })
}
