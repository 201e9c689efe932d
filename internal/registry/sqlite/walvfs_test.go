package sqlite

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"modernc.org/libc"
	lib "modernc.org/sqlite/lib"
)

// bigTable gives s's registry a table of its own for these tests, with
// rows of about a kilobyte.
func bigTable(t *testing.T, s *Store) {
	t.Helper()
	if _, err := s.write.Exec(`CREATE TABLE big (id INTEGER PRIMARY KEY, v INTEGER NOT NULL, pad BLOB NOT NULL)`); err != nil {
		t.Fatal(err)
	}
}

// insertBig adds rows 1 to ? to bigTable's table, each with v = 1.
const insertBig = `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
	INSERT INTO big (id, v, pad) SELECT i, 1, zeroblob(1000) FROM n`

// A transaction that writes far more of the log than walVFS gathers at a
// time, and than the unix VFS writes in one call, commits; other
// connections then read what it wrote, and so does the next process. A
// small page cache makes SQLite write pages of the transaction in hand
// to the log before its commit (spilling) and read them back, as a large
// import does. TestWALFileWrites checks each method's own rule.
func TestWALLargeTransaction(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	bigTable(t, s)
	if _, err := s.write.Exec(`PRAGMA cache_size = 16`); err != nil {
		t.Fatal(err)
	}
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	const rows = 3000
	if _, err := tx.Exec(insertBig, rows); err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		if _, err := tx.Exec(`UPDATE big SET v = v + 1, pad = zeroblob(990 + (id + ?) % 20) WHERE id % 3 = ?`, round, round); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	const sum = 2 * rows // each row updated once
	check := func(what string) {
		t.Helper()
		for _, c := range []struct {
			q    string
			want int
		}{{`SELECT COUNT(*) FROM big`, rows}, {`SELECT SUM(v) FROM big`, sum}} {
			var n int
			if err := s.read.QueryRow(c.q).Scan(&n); err != nil || n != c.want {
				t.Fatalf("%s: %s = %d (%v), want %d", what, c.q, n, err, c.want)
			}
		}
		var ok string
		if err := s.read.QueryRow(`PRAGMA integrity_check`).Scan(&ok); err != nil || ok != "ok" {
			t.Fatalf("%s: integrity_check %q (%v)", what, ok, err)
		}
	}
	check("another connection")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(ctx, path); err != nil {
		t.Fatal(err)
	}
	check("after a reopen")
}

// walTestFile is a log opened through walVFS as SQLite opens one, with
// its methods called as SQLite calls them.
type walTestFile struct {
	t     *testing.T
	tls   *libc.TLS
	path  string
	pFile uintptr
}

func openWALTestFile(t *testing.T) *walTestFile {
	t.Helper()
	if err := registerWALVFS(); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(t.TempDir(), "registry.db")
	// The unix VFS gives a log its database file's mode.
	if err := os.WriteFile(db, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f := &walTestFile{t: t, tls: libc.NewTLS(), path: db + "-wal"}
	t.Cleanup(f.tls.Close)
	name, err := libc.CString(walVFS)
	if err != nil {
		t.Fatal(err)
	}
	defer libc.Xfree(f.tls, name)
	vp := lib.Xsqlite3_vfs_find(f.tls, name)
	if vp == 0 {
		t.Fatal("walVFS is not registered")
	}
	v := cPointer[lib.Tsqlite3_vfs](vp)
	f.pFile = f.cBytes(make([]byte, v.FszOsFile))
	// A file name as SQLite passes it: followed by its (no) URI
	// parameters, so by several zero bytes.
	zName := f.cBytes(append([]byte(f.path), 0, 0, 0, 0))
	out := f.cBytes(make([]byte, 4))
	if rc := (*(*func(*libc.TLS, uintptr, uintptr, uintptr, int32, uintptr) int32)(unsafe.Pointer(&v.FxOpen)))(f.tls, vp, zName, f.pFile,
		lib.SQLITE_OPEN_WAL|lib.SQLITE_OPEN_READWRITE|lib.SQLITE_OPEN_CREATE, out); rc != lib.SQLITE_OK {
		t.Fatalf("opening the log: %d", rc)
	}
	return f
}

// cBytes copies b into C memory, freed when the test ends.
func (f *walTestFile) cBytes(b []byte) uintptr {
	p := cMalloc(libc.Xmalloc, f.tls, max(len(b), 1))
	if p == 0 {
		f.t.Fatal("out of memory")
	}
	copy(libc.GoBytes(p, len(b)), b)
	f.t.Cleanup(func() { libc.Xfree(f.tls, p) })
	return p
}

func (f *walTestFile) methods() *lib.Tsqlite3_io_methods {
	return cPointer[lib.Tsqlite3_io_methods](cPointer[lib.Tsqlite3_file](f.pFile).FpMethods)
}

func (f *walTestFile) check(what string, rc int32) {
	f.t.Helper()
	if rc != lib.SQLITE_OK {
		f.t.Fatalf("%s: %d", what, rc)
	}
}

func (f *walTestFile) write(b []byte, off int64) {
	f.t.Helper()
	f.check("write", (*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(unsafe.Pointer(&f.methods().FxWrite)))(f.tls, f.pFile, f.cBytes(b), int32(len(b)), off))
}

func (f *walTestFile) read(n int, off int64) []byte {
	f.t.Helper()
	p := f.cBytes(make([]byte, n))
	f.check("read", (*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(unsafe.Pointer(&f.methods().FxRead)))(f.tls, f.pFile, p, int32(n), off))
	return bytes.Clone(libc.GoBytes(p, n))
}

func (f *walTestFile) sync() {
	f.t.Helper()
	f.check("sync", (*(*func(*libc.TLS, uintptr, int32) int32)(unsafe.Pointer(&f.methods().FxSync)))(f.tls, f.pFile, lib.SQLITE_SYNC_NORMAL))
}

func (f *walTestFile) size() int64 {
	f.t.Helper()
	p := f.cBytes(make([]byte, 8))
	f.check("size", (*(*func(*libc.TLS, uintptr, uintptr) int32)(unsafe.Pointer(&f.methods().FxFileSize)))(f.tls, f.pFile, p))
	return *cPointer[int64](p)
}

func (f *walTestFile) truncate(n int64) {
	f.t.Helper()
	f.check("truncate", (*(*func(*libc.TLS, uintptr, int64) int32)(unsafe.Pointer(&f.methods().FxTruncate)))(f.tls, f.pFile, n))
}

func (f *walTestFile) close() {
	f.t.Helper()
	f.check("close", (*(*func(*libc.TLS, uintptr) int32)(unsafe.Pointer(&f.methods().FxClose)))(f.tls, f.pFile))
}

// onDisk is what the log's file holds now.
func (f *walTestFile) onDisk() []byte {
	f.t.Helper()
	b, err := os.ReadFile(f.path)
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

// The log's writes: what continues the gathered bytes waits in memory;
// a write elsewhere, a read of gathered bytes, a sync, the file's size,
// a truncation and closing write them out first, so that the file
// always reads as if every write had gone straight to it.
func TestWALFileWrites(t *testing.T) {
	f := openWALTestFile(t)
	var want []byte // the file as written
	write := func(c byte, n int, off int64) {
		t.Helper()
		b := bytes.Repeat([]byte{c}, n)
		f.write(b, off)
		if end := int(off) + n; end > len(want) {
			want = append(want, make([]byte, end-len(want))...)
		}
		copy(want[off:], b)
	}
	disk := func(what string, n int) {
		t.Helper()
		if got := f.onDisk(); !bytes.Equal(got, want[:n]) {
			t.Fatalf("%s: the file holds %d bytes %q..., want the first %d written", what, len(got), got[:min(len(got), 16)], n)
		}
	}

	write('a', 100, 0)
	write('b', 100, 100)
	disk("two writes in a row", 0)
	if got := f.read(50, 80); !bytes.Equal(got, want[80:130]) {
		t.Fatalf("read %q", got)
	}
	disk("after reading gathered bytes", 200)

	write('c', 10, 200)
	write('d', 10, 50) // elsewhere: c goes out, d waits
	if got := f.onDisk(); len(got) != 210 || got[50] != 'a' || got[200] != 'c' {
		t.Fatalf("after a write elsewhere the file holds %q", got)
	}
	f.sync()
	disk("after a sync", 210)

	write('e', 10, 210)
	if n := f.size(); n != 220 {
		t.Fatalf("size %d, want 220", n)
	}
	disk("after asking the size", 220)

	write('f', 10, 220)
	f.truncate(225)
	want = want[:225]
	disk("after a truncation", 225)

	// Enough in a row to fill what is gathered several times over.
	for i := range 100 {
		write(byte('A'+i%26), 4120, int64(len(want)))
	}
	if n := len(f.onDisk()); n <= 225 || n >= len(want) {
		t.Fatalf("the file holds %d bytes of %d written: the writes were not gathered up to the buffer's size", n, len(want))
	}
	f.close()
	disk("after closing", len(want))
}
