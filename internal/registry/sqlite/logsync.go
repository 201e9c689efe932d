package sqlite

import (
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"

	"modernc.org/libc"
	lib "modernc.org/sqlite/lib"

	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/groupcommit"
)

// A batch of registrations is answered once its commit is on disk, and a
// commit in SQLite syncs the log before COMMIT returns: the writer's
// connection, which serializes every write, waited for the disk at each
// batch. With 64 registrations in flight COMMIT was two thirds of the
// writer's time (0.9 ms of 1.4 ms a batch of 32, most of it the log's
// fsync), the writer was never idle, and it, not the processors (used
// about half), bounded registrations a second.
//
// So a batch's commit leaves the sync of the log to the log syncer, a
// goroutine of its own: COMMIT writes the batch's frames to the file and
// returns, the writer goes on with the next batch, and the syncer syncs
// the log, then answers the batch. A sync covers everything written to
// the file before it, so one sync answers every batch committed while
// the last one ran. Nothing is answered before the log holding it is on
// disk; readers may see a registration a little before that, as they
// could see it before its client heard the answer.
//
// Only the group commit's batches defer their sync (walFile.deferSync,
// set around their COMMIT); every other write, and every checkpoint,
// syncs as SQLite does. A checkpoint must: it copies the log into the
// database file, and the log must be on disk first. So during a
// deferred COMMIT the writer's wal hook (walCommitHook) runs no
// checkpoint; the writer runs the one it would have run after COMMIT,
// with the sync no longer deferred.

// logSyncer syncs the log of deferred commits and answers their batches.
type logSyncer struct {
	jobs      chan syncJob
	done      chan struct{}
	closeOnce sync.Once
	// syncFile syncs the log: syncLog, or a test's.
	syncFile func(*os.File) error
	// failed is set once a sync failed, and cleared by the writer once
	// the log is copied into the registry and emptied. Linux may drop
	// the pages a failed fsync did not write and report no error for
	// them at the next, so nothing written before it is known to be on
	// disk: every batch waiting then is answered the error. And the
	// frames of the failed batches stay in the log (their commits were
	// announced, unlike those of a commit whose own sync fails, which
	// the next commit writes over): were their pages never written, a
	// recovery would stop there, losing every commit after them. So
	// until the log is emptied each batch commits with its own sync and
	// is answered only once a checkpoint has copied the whole log,
	// read from the file's cache, into the registry and synced it
	// (commitAfterFailedSync).
	failed atomic.Bool
}

// syncJob is a committed batch waiting for its log, f, to reach the disk.
type syncJob struct {
	f     *os.File
	batch []*groupcommit.Request
}

// maxWaitingBatches bounds the committed batches waiting for a sync: past
// it the writer waits for the syncer, as it waited for the disk before.
const maxWaitingBatches = 8

func startLogSyncer() *logSyncer {
	l := &logSyncer{jobs: make(chan syncJob, maxWaitingBatches), done: make(chan struct{}), syncFile: syncLog}
	go l.run()
	return l
}

// answerWhenSynced hands the syncer a batch whose commit wrote its frames
// to f, to answer once f is synced.
func (l *logSyncer) answerWhenSynced(f *os.File, batch []*groupcommit.Request) {
	l.jobs <- syncJob{f: f, batch: slices.Clone(batch)}
}

// close answers what is waiting and stops the syncer; the writer must be
// done handing it batches. A second call does nothing.
func (l *logSyncer) close() {
	l.closeOnce.Do(func() { close(l.jobs) })
	<-l.done
}

func (l *logSyncer) run() {
	defer close(l.done)
	var jobs []syncJob
	var last *os.File
	for j := range l.jobs {
		jobs = append(jobs[:0], j)
	gather:
		for {
			select {
			case j, ok := <-l.jobs:
				if !ok {
					break gather
				}
				jobs = append(jobs, j)
			default:
				break gather
			}
		}
		// Jobs come in commit order; those on one file share its sync.
		// A new file is the writer's new connection's log: the old
		// one's descriptor is not handed again.
		for i := 0; i < len(jobs); {
			f := jobs[i].f
			n := i + 1
			for n < len(jobs) && jobs[n].f == f {
				n++
			}
			if last != nil && last != f {
				last.Close()
			}
			last = f
			l.sync(f, jobs[i:n])
			i = n
		}
		clear(jobs)
	}
	if last != nil {
		last.Close()
	}
}

// sync syncs f and answers the batches of jobs: with their outcomes if
// it succeeded, with its error otherwise.
func (l *logSyncer) sync(f *os.File, jobs []syncJob) {
	var err error
	if l.failed.Load() {
		err = fmt.Errorf("register: an earlier sync of the registry's log failed")
	} else if err = l.syncFile(f); err != nil {
		l.failed.Store(true)
		err = fmt.Errorf("register: syncing the registry's log: %w", err)
	}
	for _, j := range jobs {
		for _, req := range j.batch {
			if err != nil && req.Err == nil {
				req.R, req.Err = registry.Registration{}, err
			}
			req.Answer()
		}
	}
}

// commitDeferred commits the transaction w has open without waiting for
// the log to reach the disk, and returns the log to sync before the
// batch is answered: nil when nothing is owed (the commit, or the
// checkpoint after it, synced the log itself). pages is the writer's
// wal_autocheckpoint, which it restores.
func (w *regWriter) commitDeferred(pages int64) (*os.File, error) {
	wf, addr := w.log()
	if wf == nil || wf.synced == 0 || wf.fd < 0 {
		return nil, w.commit()
	}
	if w.logFile == nil {
		// Dropped with the connection (on): a new connection's log may
		// be another file.
		f, err := openLog(wf.fd)
		if err != nil {
			return nil, w.commit()
		}
		w.logFile = f
	}
	hook := walCommitHook
	lib.Xsqlite3_wal_hook(w.tls, w.db, *(*uintptr)(unsafe.Pointer(&hook)), addr)
	wf.deferSync, wf.owed, wf.frames = 1, 0, 0
	err := w.commit()
	wf.deferSync = 0
	// Gives the connection back SQLite's own hook, which checkpoints.
	lib.Xsqlite3_wal_autocheckpoint(w.tls, w.db, int32(pages))
	if err != nil {
		return nil, err
	}
	if pages > 0 && int64(wf.frames) >= pages {
		// The checkpoint SQLite's hook would have run in COMMIT. Its
		// failure fails no commit there either: the next one tries.
		lib.Xsqlite3_wal_checkpoint(w.tls, w.db, 0)
	}
	if wf.owed == 0 {
		return nil, nil
	}
	w.logFileHanded = true
	return w.logFile, nil
}

// dropLogFile forgets the log's descriptor, closing it if the syncer
// never had it.
func (w *regWriter) dropLogFile() {
	if w.logFile != nil && !w.logFileHanded {
		w.logFile.Close()
	}
	w.logFile, w.logFileHanded = nil, false
}

// log returns the connection's write-ahead log as walVFS opened it, and
// its address; nil when the log is not open or not walVFS's.
func (w *regWriter) log() (*walFile, uintptr) {
	pFile := w.logPointer()
	if pFile == 0 {
		return nil, 0
	}
	m := cPointer[lib.Tsqlite3_file](pFile).FpMethods
	sync := walSync
	if m == 0 || cPointer[lib.Tsqlite3_io_methods](m).FxSync != *(*uintptr)(unsafe.Pointer(&sync)) {
		return nil, 0
	}
	return cPointer[walFile](m), m
}

// logPointer is the sqlite3_file of the connection's write-ahead log, 0
// when it is not open.
func (w *regWriter) logPointer() uintptr {
	if lib.Xsqlite3_file_control(w.tls, w.db, 0, lib.SQLITE_FCNTL_JOURNAL_POINTER, w.out) != lib.SQLITE_OK {
		return 0
	}
	return readPointer(w.out)
}

// walCommitHook is the writer's wal hook during a deferred commit: it
// notes the log's frames for the checkpoint that SQLite's own hook would
// run here, while the log's sync is still deferred, and runs none.
func walCommitHook(tls *libc.TLS, pArg, db, zDb uintptr, nFrame int32) int32 {
	cPointer[walFile](pArg).frames = nFrame
	return lib.SQLITE_OK
}

// commitAfterFailedSync commits the transaction w has open, after a
// sync of the log failed (logSyncer.failed), and copies the whole log
// into the registry's file and syncs it, then empties the log and syncs
// that: the batch is on disk only then. unsynced is the batch's error
// when that copy failed or was left partial, or the log could not be
// emptied (the commit stands). The log's next frames start a new one,
// which ends the state.
//
// Copying the log is not enough: the frames of the failed sync may be
// missing from the disk, and a recovery of the log on disk would stop
// there and serve the pages of the commits before them from the log,
// over the newer ones the checkpoint copied into the registry. Until
// the log is gone from the disk, a power cut reverts the registry to
// the commit before the failed sync. So a checkpoint that copied the
// whole log but could not empty it, a reader holding on to it, answers
// the batch its error too, and the emptied log is synced: its
// truncation, a change of its size, is on disk only then.
func (s *Store) commitAfterFailedSync(w *regWriter) (unsynced, err error) {
	if err := w.commit(); err != nil {
		return nil, err
	}
	rc := lib.Xsqlite3_wal_checkpoint_v2(w.tls, w.db, 0, lib.SQLITE_CHECKPOINT_TRUNCATE, 0, 0)
	if rc != lib.SQLITE_OK {
		return fmt.Errorf("register: after a failed sync of the registry's log, copying the log into the registry and emptying it: %w",
			cError(w.tls, w.db, "checkpoint", rc)), nil
	}
	if err := w.syncLogVFS(); err != nil {
		return fmt.Errorf("register: after a failed sync of the registry's log, syncing the emptied log: %w", err), nil
	}
	s.logs.failed.Store(false)
	return nil, nil
}

// syncLogVFS syncs the connection's log through SQLite's VFS.
func (w *regWriter) syncLogVFS() error {
	pFile := w.logPointer()
	if pFile == 0 {
		return fmt.Errorf("the registry's log is not open")
	}
	xSync := cPointer[lib.Tsqlite3_io_methods](cPointer[lib.Tsqlite3_file](pFile).FpMethods).FxSync
	if rc := (*(*func(*libc.TLS, uintptr, int32) int32)(unsafe.Pointer(&xSync)))(w.tls, pFile, lib.SQLITE_SYNC_NORMAL); rc != lib.SQLITE_OK {
		return fmt.Errorf("syncing the registry's log: %s", libc.GoString(lib.Xsqlite3_errstr(w.tls, rc)))
	}
	return nil
}
