package sqlite

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// A commit reaches the log in a few large writes rather than two per
// page: the process's write system calls, counted by the kernel, stay
// far below the pages the commit wrote.
func TestWALWritesGathered(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	bigTable(t, s)
	const pages = 500 // rows of a kilobyte, about four a page
	before, err := writeCalls()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.write.ExecContext(ctx, insertBig, 4*pages); err != nil {
		t.Fatal(err)
	}
	after, err := writeCalls()
	if err != nil {
		t.Fatal(err)
	}
	// Written a frame at a time it would be two calls a page; gathered,
	// about 2 MB in writes of 128 KiB, and the odd write of the runtime.
	if n := after - before; n > pages/5 {
		t.Fatalf("%d write calls for a commit of about %d pages", n, pages)
	} else {
		t.Logf("%d write calls for a commit of about %d pages", n, pages)
	}
	var n int
	if err := s.read.QueryRow(`SELECT COUNT(*) FROM big`).Scan(&n); err != nil || n != 4*pages {
		t.Fatalf("%d rows (%v), want %d", n, err, 4*pages)
	}
}

// writeCalls is how many write system calls the process made so far
// (Linux's /proc/self/io).
func writeCalls() (int, error) { return procIO("syscw") }

// procIO reads one of the process's I/O counters in /proc/self/io.
func procIO(key string) (int, error) {
	f, err := os.Open("/proc/self/io")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key+": "); ok {
			return strconv.Atoi(v)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("/proc/self/io has no %s", key)
}
