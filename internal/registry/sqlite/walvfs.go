package sqlite

import (
	"errors"
	"fmt"
	"sync"
	"unsafe"

	"modernc.org/libc"
	lib "modernc.org/sqlite/lib"
)

// walVFS is the name of the SQLite VFS the writer opens the registry
// through: the platform's own VFS, except that a write-ahead log's writes
// are gathered in memory and reach the file in large writes, at the
// latest when SQLite syncs the log at the end of each commit.
//
// SQLite writes each frame of the log with two system calls, one for
// the frame's 24-byte header and one for its page, so a commit of 64
// scattered registrations, about 200 pages, made about 400 of them. On
// a virtual machine with the kernel's page-table isolation, such as the
// one the benchmarks run on, each costs several microseconds beyond its
// bytes: the log's writes were a fifth of a registration's CPU.
//
// It holds only while every commit syncs the log (synchronous FULL or
// EXTRA, which Open sets and checks): other connections read a frame from
// the file as soon as the commit that wrote it is announced in the
// log's index, which happens after that sync. With synchronous NORMAL a
// commit would be announced while its frames were still here. A commit
// of the registration writer whose sync is deferred (logsync.go) still
// calls the sync, which writes out what was gathered.
const walVFS = "push-appserver-wal"

// walBufferSize is how much of the log a connection gathers before it
// writes it out regardless: the most the unix VFS writes in one call (it
// keeps only the low 17 bits of a length, as it expects no more than a
// page), 31 frames of 4 KiB pages. A commit of 64 registrations, about
// 200 frames, takes 7 writes instead of 400.
const walBufferSize = 1<<17 - 1

// registerWALVFS registers walVFS with SQLite once per process; SQLite's
// list of VFSes is the process's, like the VFS it wraps.
var registerWALVFS = sync.OnceValue(func() error {
	tls := libc.NewTLS()
	defer tls.Close()
	root := lib.Xsqlite3_vfs_find(tls, 0)
	if root == 0 {
		return errors.New("SQLite has no default VFS")
	}
	p := cMalloc(libc.Xmalloc, tls, int(unsafe.Sizeof(lib.Tsqlite3_vfs{})))
	name, err := libc.CString(walVFS)
	if p == 0 || err != nil {
		return errors.New("registering the log's VFS: out of memory")
	}
	// Both stay allocated for as long as the process runs, as SQLite
	// expects of a registered VFS.
	v := cPointer[lib.Tsqlite3_vfs](p)
	*v = *cPointer[lib.Tsqlite3_vfs](root)
	v.FpNext = 0
	v.FzName = name
	v.FpAppData = root
	// A file opened through walVFS is the root VFS's file followed by a
	// walFile, which only the log uses.
	v.FszOsFile = walFileOffset(v.FszOsFile) + int32(unsafe.Sizeof(walFile{}))
	*(*func(*libc.TLS, uintptr, uintptr, uintptr, int32, uintptr) int32)(unsafe.Pointer(&v.FxOpen)) = walOpen
	if rc := lib.Xsqlite3_vfs_register(tls, p, 0); rc != lib.SQLITE_OK {
		return fmt.Errorf("registering the log's VFS: %s", libc.GoString(lib.Xsqlite3_errstr(tls, rc)))
	}
	return nil
})

// walFileOffset is where a walFile starts after a root VFS file of size
// n: the next multiple of 8.
func walFileOffset(n int32) int32 { return (n + 7) &^ 7 }

// walFile is what walVFS adds to an open log: its methods (the root's,
// with those that touch the file's bytes wrapped) and what it gathered.
// It lives in the C memory SQLite allocates for the file, and the file's
// method pointer points at it, which is how the methods find it.
type walFile struct {
	methods lib.Tsqlite3_io_methods // first: the file's pMethods points here
	root    uintptr                 // the root VFS's methods for the file
	buf     uintptr                 // walBufferSize bytes, allocated at the first write
	start   int64                   // the file offset of buf's first byte
	n       int64                   // bytes gathered in buf

	// fd is the root file's descriptor where the root VFS is unix's, -1
	// elsewhere: the registration writer syncs the log through a copy
	// of it (logsync.go).
	fd int32
	// deferSync is set by the registration writer around a commit whose
	// sync it leaves to the log syncer: a sync of the log then writes out
	// what was gathered, notes that it is owed, and returns. synced says
	// a sync reached the root VFS since the log's header was last written
	// (walWrite): the first one, which syncs the directory of a log just
	// created too, and the one SQLite makes right after the header of a
	// restarted log, are never deferred. frames is the log's frames after
	// the last deferred commit (walCommitHook).
	deferSync, owed, synced int32
	frames                  int32
}

// cPointer is p, C memory, as a *T.
func cPointer[T any](p uintptr) *T {
	return (*T)(unsafe.Pointer(unsafe.SliceData(libc.GoBytes(p, int(unsafe.Sizeof(*new(T)))))))
}

func fileOf(pFile uintptr) *walFile {
	return cPointer[walFile](cPointer[lib.Tsqlite3_file](pFile).FpMethods)
}

// walOpen opens a file through the root VFS and wraps the methods of a
// write-ahead log.
func walOpen(tls *libc.TLS, pVfs, zName, pFile uintptr, flags int32, pOutFlags uintptr) int32 {
	v := cPointer[lib.Tsqlite3_vfs](pVfs)
	root := cPointer[lib.Tsqlite3_vfs](v.FpAppData)
	rc := (*(*func(*libc.TLS, uintptr, uintptr, uintptr, int32, uintptr) int32)(unsafe.Pointer(&root.FxOpen)))(tls, v.FpAppData, zName, pFile, flags, pOutFlags)
	f := cPointer[lib.Tsqlite3_file](pFile)
	if rc != lib.SQLITE_OK || flags&lib.SQLITE_OPEN_WAL == 0 || f.FpMethods == 0 {
		return rc
	}
	wp := pFile + uintptr(walFileOffset(root.FszOsFile))
	w := cPointer[walFile](wp)
	*w = walFile{methods: *cPointer[lib.Tsqlite3_io_methods](f.FpMethods), root: f.FpMethods, fd: rootFD(root, pFile)}
	m := &w.methods
	*(*func(*libc.TLS, uintptr) int32)(unsafe.Pointer(&m.FxClose)) = walClose
	*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(unsafe.Pointer(&m.FxRead)) = walRead
	*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(unsafe.Pointer(&m.FxWrite)) = walWrite
	*(*func(*libc.TLS, uintptr, int64) int32)(unsafe.Pointer(&m.FxTruncate)) = walTruncate
	*(*func(*libc.TLS, uintptr, int32) int32)(unsafe.Pointer(&m.FxSync)) = walSync
	*(*func(*libc.TLS, uintptr, uintptr) int32)(unsafe.Pointer(&m.FxFileSize)) = walFileSize
	*(*func(*libc.TLS, uintptr, int32, uintptr) int32)(unsafe.Pointer(&m.FxFileControl)) = walFileControl
	f.FpMethods = wp
	return rc
}

// rootMethods are the root VFS's methods for w's file.
func (w *walFile) rootMethods() *lib.Tsqlite3_io_methods {
	return cPointer[lib.Tsqlite3_io_methods](w.root)
}

func (w *walFile) rootWrite(tls *libc.TLS, pFile, p uintptr, n int32, off int64) int32 {
	return (*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(unsafe.Pointer(&w.rootMethods().FxWrite)))(tls, pFile, p, n, off)
}

// flush writes what w gathered. What it held is dropped even when the
// write fails: SQLite then fails the transaction those frames belong
// to, and a later commit writes its frames again.
func (w *walFile) flush(tls *libc.TLS, pFile uintptr) int32 {
	if w.n == 0 {
		return lib.SQLITE_OK
	}
	n := w.n
	w.n = 0
	return w.rootWrite(tls, pFile, w.buf, int32(n), w.start)
}

// overlaps says whether n bytes at off touch what w gathered.
func (w *walFile) overlaps(n int32, off int64) bool {
	return w.n > 0 && off < w.start+w.n && off+int64(n) > w.start
}

// walWrite gathers a write that continues what is gathered. Any other
// write first writes out what was gathered, then starts anew: SQLite's
// log is written front to back, except when a transaction too large for
// the page cache rewrites a frame it wrote before, which is rare enough
// to cost a write.
func walWrite(tls *libc.TLS, pFile, zBuf uintptr, iAmt int32, iOfst int64) int32 {
	w := fileOf(pFile)
	if iOfst == 0 {
		// The log's header: SQLite writes it when the log starts or
		// restarts from its beginning, and syncs it before it writes a
		// frame after it. That sync must reach the disk: the frames of
		// the log before the restart are still in the file, and were the
		// new frames on disk and the new header not (a power cut in the
		// syncer's sync, which orders nothing), the old header would
		// vouch for the old frames before them, and the next open would
		// copy those over the newer pages the last checkpoint wrote.
		w.synced = 0
	}
	n := int64(iAmt)
	if w.n == 0 || iOfst != w.start+w.n || w.n+n > walBufferSize {
		if rc := w.flush(tls, pFile); rc != lib.SQLITE_OK {
			return rc
		}
		if n > walBufferSize {
			return w.rootWrite(tls, pFile, zBuf, iAmt, iOfst)
		}
		if w.buf == 0 {
			if w.buf = cMalloc(libc.Xmalloc, tls, walBufferSize); w.buf == 0 {
				return w.rootWrite(tls, pFile, zBuf, iAmt, iOfst)
			}
		}
		w.start = iOfst
	}
	copy(libc.GoBytes(w.buf+uintptr(w.n), int(n)), libc.GoBytes(zBuf, int(n)))
	w.n += n
	return lib.SQLITE_OK
}

// walRead writes out what was gathered first when the read touches it:
// SQLite reads back frames of its own transaction, and checkpoints read
// the log.
func walRead(tls *libc.TLS, pFile, zBuf uintptr, iAmt int32, iOfst int64) int32 {
	w := fileOf(pFile)
	if w.overlaps(iAmt, iOfst) {
		if rc := w.flush(tls, pFile); rc != lib.SQLITE_OK {
			return rc
		}
	}
	return (*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(unsafe.Pointer(&w.rootMethods().FxRead)))(tls, pFile, zBuf, iAmt, iOfst)
}

// walSync writes out what was gathered, then syncs: a commit is on disk
// once it returns. During a deferred commit (deferSync) it only notes
// the sync as owed: the registration writer syncs the file before it
// answers anyone (logsync.go).
func walSync(tls *libc.TLS, pFile uintptr, flags int32) int32 {
	w := fileOf(pFile)
	if rc := w.flush(tls, pFile); rc != lib.SQLITE_OK {
		return rc
	}
	if w.deferSync != 0 && w.synced != 0 {
		w.owed = 1
		return lib.SQLITE_OK
	}
	rc := (*(*func(*libc.TLS, uintptr, int32) int32)(unsafe.Pointer(&w.rootMethods().FxSync)))(tls, pFile, flags)
	if rc == lib.SQLITE_OK {
		// Everything written before is on disk, a deferred commit's too.
		w.synced, w.owed = 1, 0
	}
	return rc
}

func walTruncate(tls *libc.TLS, pFile uintptr, size int64) int32 {
	w := fileOf(pFile)
	if rc := w.flush(tls, pFile); rc != lib.SQLITE_OK {
		return rc
	}
	return (*(*func(*libc.TLS, uintptr, int64) int32)(unsafe.Pointer(&w.rootMethods().FxTruncate)))(tls, pFile, size)
}

func walFileSize(tls *libc.TLS, pFile, pSize uintptr) int32 {
	w := fileOf(pFile)
	if rc := w.flush(tls, pFile); rc != lib.SQLITE_OK {
		return rc
	}
	return (*(*func(*libc.TLS, uintptr, uintptr) int32)(unsafe.Pointer(&w.rootMethods().FxFileSize)))(tls, pFile, pSize)
}

// walFileControl writes out what was gathered first, whatever the
// operation: none of them is frequent, and some (a size hint, a sync's
// announcement) assume the file holds what was written.
func walFileControl(tls *libc.TLS, pFile uintptr, op int32, pArg uintptr) int32 {
	w := fileOf(pFile)
	if rc := w.flush(tls, pFile); rc != lib.SQLITE_OK {
		return rc
	}
	return (*(*func(*libc.TLS, uintptr, int32, uintptr) int32)(unsafe.Pointer(&w.rootMethods().FxFileControl)))(tls, pFile, op, pArg)
}

// walClose writes out what was gathered (SQLite closes a log without a
// sync only when it is done with it: what is here belongs to no commit,
// but the file should hold what SQLite wrote), frees the buffer and closes
// the file.
func walClose(tls *libc.TLS, pFile uintptr) int32 {
	w := fileOf(pFile)
	rc := w.flush(tls, pFile)
	if w.buf != 0 {
		libc.Xfree(tls, w.buf)
		w.buf = 0
	}
	root := w.rootMethods()
	// The root's close may look at the method pointer; give it back its
	// own before it runs.
	cPointer[lib.Tsqlite3_file](pFile).FpMethods = w.root
	if crc := (*(*func(*libc.TLS, uintptr) int32)(unsafe.Pointer(&root.FxClose)))(tls, pFile); rc == lib.SQLITE_OK {
		rc = crc
	}
	return rc
}
