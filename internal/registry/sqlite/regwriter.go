package sqlite

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"time"
	"unsafe"

	"modernc.org/libc"
	lib "modernc.org/sqlite/lib"

	"github.com/push-appserver/push-appserver/internal/registry"
)

// regWriter runs the registration statements (the read, the device key's
// check, the write, the outcomes when they change, and the transaction
// around a batch) on the writer's connection through SQLite's C API, as
// lookups do for the push path's read (lookup.go), instead of through
// database/sql. The connection is still the pool's: a batch borrows it
// with (*sql.Conn).Raw, so every other write keeps going through
// database/sql and one connection still serializes them all.
//
// Around SQLite's own work, database/sql and the driver cost a
// registration about 65 allocations: the read's column names and
// declared types copied out of C at every execution (26 strings for its
// 13 columns, most of them for a node that is not there), the row's
// values scanned through interfaces, each argument boxed, converted and
// copied into C memory, and the statement, rows and result objects. Here
// the statements are prepared once, the values are copied into C memory
// the writer keeps, and only a row that is found is copied out: 211,000
// -> 160,000 instructions a registration in all (pushbench
// -instructions).
//
// It is used by one goroutine at a time: Open's, before the group-commit
// writer starts, then the writer's, then Close's once that has stopped.
// Its TLS and buffers are not shared.
type regWriter struct {
	tls *libc.TLS
	// db is the connection the statements were prepared on. The pool
	// may replace the writer's connection (one interrupted by a caller's
	// context is discarded): a batch on another one prepares them again.
	db    uintptr
	stmts [nRegStmts]uintptr
	// buf is C memory the values of a statement are copied into; SQLite
	// reads them in place (SQLITE_STATIC) until they are bound again.
	buf    uintptr
	bufCap int
	out    uintptr // receives the C API's output pointers

	// logFile is a descriptor of the connection's log for the log syncer
	// to sync it through; logFileHanded says a batch handed it to the
	// syncer, which then closes it (logsync.go).
	logFile       *os.File
	logFileHanded bool
}

// The registration statements, by their index in regWriter.stmts.
const (
	stmtBegin = iota
	stmtCommit
	stmtRollback
	stmtGet
	stmtHolder
	stmtInsert
	stmtUpdate
	stmtStatusDelete
	stmtStatusPut
	nRegStmts
)

var regSQL = [nRegStmts]string{
	stmtBegin:        `BEGIN IMMEDIATE`,
	stmtCommit:       `COMMIT`,
	stmtRollback:     `ROLLBACK`,
	stmtGet:          sqlGet,
	stmtHolder:       sqlHolder,
	stmtInsert:       sqlInsertReg,
	stmtUpdate:       sqlUpdateReg,
	stmtStatusDelete: sqlStatusDelete,
	stmtStatusPut:    sqlStatusPut,
}

// connHandle returns the sqlite3* of the driver connection dc, as
// (*sql.Conn).Raw hands it over. modernc.org/sqlite does not export it:
// it is read from the connection's field db, checked for its name and
// kind, so that a version of the driver that moved it fails (at Open,
// and in the tests) instead of handing SQLite a wrong pointer.
func connHandle(dc any) (uintptr, error) {
	v := reflect.ValueOf(dc)
	if v.Kind() == reflect.Pointer && v.Elem().Kind() == reflect.Struct {
		if f := v.Elem().FieldByName("db"); f.IsValid() && f.Kind() == reflect.Uintptr && f.Uint() != 0 {
			return uintptr(f.Uint()), nil
		}
	}
	return 0, fmt.Errorf("the SQLite driver's connection (%T) has no handle where this program reads it: built with another version of modernc.org/sqlite than it was written for", dc)
}

func newRegWriter() (*regWriter, error) {
	w := &regWriter{tls: libc.NewTLS()}
	if w.out = cMalloc(libc.Xmalloc, w.tls, int(unsafe.Sizeof(uintptr(0)))); w.out == 0 {
		w.close()
		return nil, errors.New("registration writer: out of memory")
	}
	return w, nil
}

// on makes the statements ready on the connection dc.
func (w *regWriter) on(dc any) error {
	db, err := connHandle(dc)
	if err != nil {
		return err
	}
	if db == w.db {
		return nil
	}
	// Statements of a connection the pool closed keep it open (as a
	// zombie, sqlite3_close_v2) until they are finalized, and its
	// handle cannot be reused until then: a new handle is a new
	// connection.
	w.finalize()
	// Its log, too, may be another file: the old connection, closed
	// when its statements are finalized, deletes its log if it was the
	// last one open.
	w.dropLogFile()
	if err := prepareAll(w.tls, db, regSQL[:], w.stmts[:], w.out); err != nil {
		w.finalize()
		return fmt.Errorf("registration statements: %w", err)
	}
	w.db = db
	return nil
}

// finalize finalizes the statements, if any are prepared.
func (w *regWriter) finalize() {
	finalizeAll(w.tls, w.stmts[:])
	w.db = 0
}

// prepareAll prepares each of sqls on the connection db into the same
// place of stmts, to be kept and run many times (PERSISTENT); out is C
// memory for the C API's output pointer. On an error, the statements
// prepared so far are in stmts, for the caller to finalize.
func prepareAll(tls *libc.TLS, db uintptr, sqls []string, stmts []uintptr, out uintptr) error {
	for i, q := range sqls {
		cq, err := libc.CString(q)
		if err != nil {
			return err
		}
		rc := lib.Xsqlite3_prepare_v3(tls, db, cq, -1, lib.SQLITE_PREPARE_PERSISTENT, out, 0)
		libc.Xfree(tls, cq)
		if rc != lib.SQLITE_OK {
			return cError(tls, db, "preparing", rc)
		}
		stmts[i] = readPointer(out)
	}
	return nil
}

// finalizeAll finalizes the statements of stmts that are prepared.
func finalizeAll(tls *libc.TLS, stmts []uintptr) {
	for i, st := range stmts {
		if st != 0 {
			lib.Xsqlite3_finalize(tls, st)
			stmts[i] = 0
		}
	}
}

// close finalizes the statements and frees what the writer holds; a
// second call does nothing.
func (w *regWriter) close() {
	if w.tls == nil {
		return
	}
	w.finalize()
	w.dropLogFile()
	for _, p := range []*uintptr{&w.buf, &w.out} {
		if *p != 0 {
			libc.Xfree(w.tls, *p)
			*p = 0
		}
	}
	w.tls.Close()
	w.tls = nil
}

// sqliteError is a failed call of the C API: what was done, SQLite's
// result code and its message, which names no value.
type sqliteError struct {
	what string
	code int32
	msg  string
}

func (e *sqliteError) Error() string { return fmt.Sprintf("%s: %s (%d)", e.what, e.msg, e.code) }

func (w *regWriter) errorf(db uintptr, what string, rc int32) error {
	return cError(w.tls, db, what, rc)
}

// cError is the failure rc of a call of the C API on the connection db
// (0 for none): SQLite's message for the connection, which is more
// precise than the code's, or for the code.
func cError(tls *libc.TLS, db uintptr, what string, rc int32) error {
	msg := libc.GoString(lib.Xsqlite3_errstr(tls, rc))
	if db != 0 {
		msg = libc.GoString(lib.Xsqlite3_errmsg(tls, db))
	}
	return &sqliteError{what: what, code: rc, msg: strings.TrimSpace(msg)}
}

// exec runs statement i, which returns no row, with the values bound
// already, and resets it.
func (w *regWriter) exec(i int, what string) error {
	st := w.stmts[i]
	rc := lib.Xsqlite3_step(w.tls, st)
	lib.Xsqlite3_reset(w.tls, st)
	if rc != lib.SQLITE_DONE {
		return w.errorf(w.db, what, rc)
	}
	return nil
}

// begin starts the batch's transaction (IMMEDIATE: it takes the write
// lock now, as the driver's _txlock=immediate does).
func (w *regWriter) begin() error { return w.exec(stmtBegin, "begin") }

func (w *regWriter) commit() error { return w.exec(stmtCommit, "commit") }

// rollbackOpen rolls back the transaction the connection has open, if
// any: a batch that failed must not leave one to the pool's next user.
func (w *regWriter) rollbackOpen() {
	if w.db != 0 && lib.Xsqlite3_get_autocommit(w.tls, w.db) == 0 {
		w.exec(stmtRollback, "rollback")
	}
}

// textArgs binds one statement's parameters, its text copied into the
// writer's C memory; err is the first failure.
type textArgs struct {
	w   *regWriter
	st  uintptr
	off int
	err error
}

// args starts binding statement i's parameters; total is at least the
// bytes of all the text it will bind.
func (w *regWriter) args(i int, total int) textArgs {
	a := textArgs{w: w, st: w.stmts[i]}
	if total > w.bufCap {
		if w.buf != 0 {
			libc.Xfree(w.tls, w.buf)
		}
		w.bufCap = max(1024, total)
		if w.buf = cMalloc(libc.Xmalloc, w.tls, w.bufCap); w.buf == 0 {
			w.bufCap = 0
			a.err = errors.New("registration writer: out of memory")
		}
	}
	return a
}

// text binds s to parameter n (from 1); null binds NULL instead when s
// is empty.
func (a *textArgs) text(n int32, s string, null bool) {
	if a.err != nil {
		return
	}
	var rc int32
	if null && s == "" {
		rc = lib.Xsqlite3_bind_null(a.w.tls, a.st, n)
	} else {
		// Never a NULL pointer, which would bind NULL for "".
		p := a.w.buf + uintptr(a.off)
		copy(libc.GoBytes(p, len(s)), s)
		a.off += len(s)
		rc = lib.Xsqlite3_bind_text(a.w.tls, a.st, n, p, int32(len(s)), 0)
	}
	if rc != lib.SQLITE_OK {
		a.err = a.w.errorf(a.w.db, "binding a value", rc)
	}
}

// time binds t's Unix nanoseconds to parameter n, or NULL for the zero
// time when null is set.
func (a *textArgs) time(n int32, t time.Time, null bool) {
	if a.err != nil {
		return
	}
	var rc int32
	if null && t.IsZero() {
		rc = lib.Xsqlite3_bind_null(a.w.tls, a.st, n)
	} else {
		rc = lib.Xsqlite3_bind_int64(a.w.tls, a.st, n, t.UnixNano())
	}
	if rc != lib.SQLITE_OK {
		a.err = a.w.errorf(a.w.db, "binding a value", rc)
	}
}

// get reads node's registration (sqlGet), or registry.ErrNotFound.
func (w *regWriter) get(node string) (registry.Registration, error) {
	a := w.args(stmtGet, len(node))
	a.text(1, node, false)
	if a.err != nil {
		return registry.Registration{}, a.err
	}
	st := w.stmts[stmtGet]
	defer lib.Xsqlite3_reset(w.tls, st)
	switch rc := lib.Xsqlite3_step(w.tls, st); rc {
	case lib.SQLITE_ROW:
	case lib.SQLITE_DONE:
		return registry.Registration{}, registry.ErrNotFound
	default:
		return registry.Registration{}, w.errorf(w.db, "reading registration", rc)
	}
	// The columns of scan, in its order.
	r := registry.Registration{
		Node: w.columnText(st, 0), Type: w.columnText(st, 1), Token: w.columnText(st, 2), Secret: w.columnText(st, 3),
		Registered: w.columnTime(st, 4), Renewed: w.columnTime(st, 5),
		LastSuccessfulPush: w.columnTime(st, 6), LastPushError: w.columnTime(st, 7), LastErrorReason: w.columnText(st, 8),
		Domain: w.columnText(st, 9), DeviceKey: w.columnText(st, 10), Owner: w.columnText(st, 11), Account: w.columnText(st, 12),
	}
	return r, nil
}

// columnText is column i's text, "" for NULL.
func (w *regWriter) columnText(st uintptr, i int32) string {
	p := lib.Xsqlite3_column_text(w.tls, st, i)
	n := lib.Xsqlite3_column_bytes(w.tls, st, i)
	if p == 0 || n == 0 {
		return ""
	}
	return string(libc.GoBytes(p, int(n)))
}

// columnTime is column i's Unix nanoseconds as a time in UTC, the zero
// time for NULL.
func (w *regWriter) columnTime(st uintptr, i int32) time.Time {
	if lib.Xsqlite3_column_type(w.tls, st, i) == lib.SQLITE_NULL {
		return time.Time{}
	}
	return time.Unix(0, lib.Xsqlite3_column_int64(w.tls, st, i)).UTC()
}

// held says whether another node than node holds the device key.
func (w *regWriter) held(deviceKey, node string) (bool, error) {
	a := w.args(stmtHolder, len(deviceKey)+len(node))
	a.text(1, deviceKey, false)
	a.text(2, node, false)
	if a.err != nil {
		return false, a.err
	}
	st := w.stmts[stmtHolder]
	defer lib.Xsqlite3_reset(w.tls, st)
	switch rc := lib.Xsqlite3_step(w.tls, st); rc {
	case lib.SQLITE_ROW:
		return true, nil
	case lib.SQLITE_DONE:
		return false, nil
	default:
		return false, w.errorf(w.db, "reading the device key's holder", rc)
	}
}

// The registration's write, which its read under the write lock says
// is a new row or a change of one: an upsert in two statements, which
// lets SQLite do without a statement journal. A statement that may fail
// half done (a constraint it checks after writing the row and its
// change-log row, ABORT) copies every page it changes into that journal
// first, to undo its own changes alone; OR ROLLBACK undoes the whole
// transaction instead, as the batch's failure does anyway (its rows are
// then stored one transaction each). An upsert's DO UPDATE has ABORT
// whatever the INSERT says. Parameters are regValues's, in its order.
const (
	sqlInsertReg = `INSERT OR ROLLBACK INTO registrations (` + regColumns + `) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)`
	sqlUpdateReg = `UPDATE OR ROLLBACK registrations SET type = ?2, token = ?3, secret = ?4, registered = ?5, renewed = ?6,
		domain = ?7, device_key = ?8, owner = ?9, account = ?10 WHERE node = ?1`
)

// write writes r, a new row unless found (regValues's values).
func (w *regWriter) write(r registry.Registration, found bool) error {
	i := stmtInsert
	if found {
		i = stmtUpdate
	}
	a := w.args(i, len(r.Node)+len(r.Type)+len(r.Token)+len(r.Secret)+len(r.Domain)+len(r.DeviceKey)+len(r.Owner)+len(r.Account))
	a.text(1, r.Node, false)
	a.text(2, r.Type, false)
	a.text(3, r.Token, false)
	a.text(4, r.Secret, false)
	a.time(5, r.Registered, false)
	a.time(6, r.Renewed, true)
	a.text(7, r.Domain, false)
	a.text(8, r.DeviceKey, true)
	a.text(9, r.Owner, false)
	a.text(10, r.Account, false)
	if a.err != nil {
		return a.err
	}
	return w.exec(i, "writing registration")
}

// setStatus makes r's push outcomes the stored ones, as setStatus does.
func (w *regWriter) setStatus(r registry.Registration) error {
	if sameStatus(r, registry.Registration{}) {
		a := w.args(stmtStatusDelete, len(r.Node))
		a.text(1, r.Node, false)
		if a.err != nil {
			return a.err
		}
		return w.exec(stmtStatusDelete, "push status")
	}
	a := w.args(stmtStatusPut, len(r.Node)+len(r.LastErrorReason))
	a.text(1, r.Node, false)
	a.time(2, r.LastSuccessfulPush, true)
	a.time(3, r.LastPushError, true)
	a.text(4, r.LastErrorReason, false)
	if a.err != nil {
		return a.err
	}
	return w.exec(stmtStatusPut, "push status")
}
