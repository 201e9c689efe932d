package sqlite

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"unsafe"

	"modernc.org/libc"
	lib "modernc.org/sqlite/lib"
)

// lookups reads the push path's one statement, selectTarget, on
// connections of its own, opened through SQLite's C API (modernc's lib,
// the same library the driver wraps) rather than through database/sql.
//
// A push whose registration is not in the cache reads it here, and
// around that one row database/sql and the driver cost more than SQLite
// itself: a connection taken from the pool, the statement looked up on
// it, the argument converted and copied into C memory, and the column's
// name, declared type, value and box allocated anew for every row; 21
// allocations a lookup. Here the statement is prepared once per
// connection, the node is copied into memory the connection keeps, and
// the row's text is copied once, into the string the push target then
// shares. BenchmarkGet, two goroutines: 6.5 -> 3.9 µs and 21 -> 1
// allocations a lookup.
//
// Each connection is used by one goroutine at a time, so it is opened
// without SQLite's per-connection mutex.
type lookups struct {
	dsn string // a "file:" URI opening the registry read-only

	// idle holds the connections not in use. Its capacity bounds how
	// many are ever open; slots holds a token for each open one.
	idle  chan *lookupConn
	slots chan struct{}

	mu     sync.Mutex // guards closed against put
	closed bool
}

// lookupConn is one read-only connection with selectTarget prepared.
type lookupConn struct {
	tls  *libc.TLS
	db   uintptr // sqlite3*
	stmt uintptr // sqlite3_stmt*
	// node is C memory the node is copied into for binding; SQLite reads
	// it in place (SQLITE_STATIC) until the statement is reset.
	node    uintptr
	nodeCap int
	// out is C memory that receives the C API's output pointers: the
	// library may only be handed C memory (the race detector's pointer
	// checks refuse Go memory reached through a uintptr).
	out uintptr
}

// lookupCacheKiB is each lookup connection's page cache, in KiB.
//
// The SQLite we use shares one page cache among all connections of the
// process (SQLITE_ENABLE_MEMORY_MANAGEMENT), each with its quota (its
// cache_size); the shared cache's total is the sum of the open
// connections' quotas. A connection at its quota reads its next page
// into the least recently used one of the whole cache, so the total does
// not grow. One below its quota allocates a new page instead; once the
// writer has outgrown its own quota (the outcomes it writes touch a page
// per device), that puts the shared cache over its total, and while it
// is over, every page a connection lets go of is freed at once, however
// hot: the table's root and inner pages are read from the file again on
// every lookup. With SQLite's default of 2 MB the lookup connections
// stay below their quota. At 512 KiB they reach it, and take the least
// recently used pages, which the hot ones never are. With 100,000
// devices (the standard scenario), against 2 MB: 2.5-2.9 system calls a
// push instead of 3.8-3.9, 45-54 µs of CPU instead of 57-60, and about
// 10 MB less peak RSS; 256 KiB did as well, 1 MiB worse.
const lookupCacheKiB = 512

func newLookups(dsn string, n int) *lookups {
	return &lookups{dsn: dsn, idle: make(chan *lookupConn, n), slots: make(chan struct{}, n)}
}

var errStoreClosed = errors.New("registry closed")

// take returns an idle connection, opens one while fewer than the
// bound are open, or waits for one to be put back.
func (l *lookups) take(ctx context.Context) (*lookupConn, error) {
	select {
	case c := <-l.idle:
		return c, nil
	default:
	}
	select {
	case c := <-l.idle:
		return c, nil
	case l.slots <- struct{}{}:
		l.mu.Lock()
		closed := l.closed
		l.mu.Unlock()
		if closed {
			<-l.slots
			return nil, errStoreClosed
		}
		c, err := openLookupConn(l.dsn)
		if err != nil {
			<-l.slots
			return nil, err
		}
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// put gives c back for the next lookup, or closes it once the store
// is closed.
func (l *lookups) put(c *lookupConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		c.close()
		<-l.slots
		return
	}
	// Never blocks: there are never more connections than idle holds.
	l.idle <- c
}

// close closes the idle connections; those in use close when put back.
func (l *lookups) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for {
		select {
		case c := <-l.idle:
			c.close()
			<-l.slots
		default:
			return
		}
	}
}

// get reads node's push target text (selectTarget's column), or
// reports found false.
func (l *lookups) get(ctx context.Context, node string) (v string, found bool, err error) {
	c, err := l.take(ctx)
	if err != nil {
		return "", false, err
	}
	defer l.put(c)
	return c.get(node)
}

func openLookupConn(dsn string) (_ *lookupConn, err error) {
	c := &lookupConn{tls: libc.NewTLS()}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	// SQLite writes the pointers it hands back even when it fails.
	if c.out = cMalloc(libc.Xmalloc, c.tls, int(unsafe.Sizeof(uintptr(0)))); c.out == 0 {
		return nil, errors.New("opening a lookup connection: out of memory")
	}
	name, err := libc.CString(dsn)
	if err != nil {
		return nil, fmt.Errorf("opening a lookup connection: %w", err)
	}
	defer libc.Xfree(c.tls, name)
	rc := lib.Xsqlite3_open_v2(c.tls, name, c.out,
		lib.SQLITE_OPEN_READONLY|lib.SQLITE_OPEN_URI|lib.SQLITE_OPEN_NOMUTEX, 0)
	// A handle comes back even when opening fails, to tell why and to
	// be closed.
	c.db = readPointer(c.out)
	if rc != lib.SQLITE_OK {
		return nil, c.errorf("opening a lookup connection", rc)
	}
	// Readers of a WAL database wait only while the log is recovered,
	// which the writer's busy timeout covers too.
	lib.Xsqlite3_busy_timeout(c.tls, c.db, 10000)
	if err := c.exec(fmt.Sprintf("PRAGMA cache_size = -%d", lookupCacheKiB)); err != nil {
		return nil, err
	}
	q, err := libc.CString(selectTarget)
	if err != nil {
		return nil, fmt.Errorf("preparing the lookup: %w", err)
	}
	defer libc.Xfree(c.tls, q)
	rc = lib.Xsqlite3_prepare_v3(c.tls, c.db, q, -1, lib.SQLITE_PREPARE_PERSISTENT, c.out, 0)
	if rc != lib.SQLITE_OK {
		return nil, c.errorf("preparing the lookup", rc)
	}
	c.stmt = readPointer(c.out)
	return c, nil
}

// get runs selectTarget for node. The statement is reset before it
// returns, which ends its read transaction: a transaction left open
// would keep checkpoints from copying the log past it.
func (c *lookupConn) get(node string) (v string, found bool, err error) {
	if len(node) > c.nodeCap {
		if c.node != 0 {
			libc.Xfree(c.tls, c.node)
		}
		c.nodeCap = max(64, len(node))
		if c.node = cMalloc(libc.Xmalloc, c.tls, c.nodeCap); c.node == 0 {
			c.nodeCap = 0
			return "", false, errors.New("reading registration: out of memory")
		}
	}
	copy(libc.GoBytes(c.node, len(node)), node)
	defer lib.Xsqlite3_reset(c.tls, c.stmt)
	if rc := lib.Xsqlite3_bind_text(c.tls, c.stmt, 1, c.node, int32(len(node)), 0); rc != lib.SQLITE_OK {
		return "", false, c.errorf("reading registration", rc)
	}
	switch rc := lib.Xsqlite3_step(c.tls, c.stmt); rc {
	case lib.SQLITE_ROW:
	case lib.SQLITE_DONE:
		return "", false, nil
	default:
		return "", false, c.errorf("reading registration", rc)
	}
	p := lib.Xsqlite3_column_text(c.tls, c.stmt, 0)
	n := lib.Xsqlite3_column_bytes(c.tls, c.stmt, 0)
	if p == 0 {
		// A NULL: the column's values are NOT NULL, so this is SQLite
		// out of memory.
		return "", false, errors.New("reading registration: no text")
	}
	return string(libc.GoBytes(p, int(n))), true, nil
}

// exec runs a statement that returns no rows.
func (c *lookupConn) exec(stmt string) error {
	q, err := libc.CString(stmt)
	if err != nil {
		return fmt.Errorf("%s: %w", stmt, err)
	}
	defer libc.Xfree(c.tls, q)
	if rc := lib.Xsqlite3_exec(c.tls, c.db, q, 0, 0, 0); rc != lib.SQLITE_OK {
		return c.errorf(stmt, rc)
	}
	return nil
}

// errorf is SQLite's message for rc on c, which names no value.
func (c *lookupConn) errorf(what string, rc int32) error {
	msg := libc.GoString(lib.Xsqlite3_errstr(c.tls, rc))
	if c.db != 0 {
		msg = libc.GoString(lib.Xsqlite3_errmsg(c.tls, c.db))
	}
	return fmt.Errorf("%s: %s (%d)", what, strings.TrimSpace(msg), rc)
}

func (c *lookupConn) close() {
	if c.stmt != 0 {
		lib.Xsqlite3_finalize(c.tls, c.stmt)
		c.stmt = 0
	}
	if c.db != 0 {
		lib.Xsqlite3_close_v2(c.tls, c.db)
		c.db = 0
	}
	for _, p := range []*uintptr{&c.node, &c.out} {
		if *p != 0 {
			libc.Xfree(c.tls, *p)
			*p = 0
		}
	}
	c.tls.Close()
}

// cMalloc allocates n bytes of C memory with malloc, whose size_t is a
// Go type that differs from platform to platform.
func cMalloc[T ~uint32 | ~uint64](malloc func(*libc.TLS, T) uintptr, tls *libc.TLS, n int) uintptr {
	return malloc(tls, T(n))
}

// readPointer reads the pointer the C API wrote at p.
func readPointer(p uintptr) uintptr {
	return *(*uintptr)(unsafe.Pointer(unsafe.SliceData(libc.GoBytes(p, int(unsafe.Sizeof(uintptr(0)))))))
}
