package sqlite

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// A window of DeleteIdle reads limit registrations of the registry, not
// the registry: one statement reading on until it found 500 idle ones
// held the write lock 0.55 s on 1,000,000 registrations with none idle,
// and a registration beside it waited as long. Here 100,000
// registrations of real size, none idle, about 50 MB: the process's
// reads, counted by the kernel, while one window of 2,000 is read stay a
// small part of that.
func TestDeleteIdleReadsBoundedWindow(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 100000
	inUse(t, s, n)
	var size int
	if err := s.read.QueryRowContext(ctx, `SELECT page_count * page_size FROM pragma_page_count, pragma_page_size`).Scan(&size); err != nil {
		t.Fatal(err)
	}
	before, err := procIO("rchar")
	if err != nil {
		t.Fatal(err)
	}
	removed, next, err := s.DeleteIdle(ctx, time.Now().Add(-180*24*time.Hour), "", "", 2000)
	if err != nil || len(removed) != 0 || next == "" {
		t.Fatalf("DeleteIdle = %d removed, next %q, %v; want none removed and a next window", len(removed), next, err)
	}
	after, err := procIO("rchar")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a window of 2,000 of %d registrations (%d bytes) read %d bytes", n, size, after-before)
	if read := after - before; read > size/10 {
		t.Errorf("a window of 2,000 read %d bytes of a registry of %d bytes: it read on past the window", read, size)
	}
}
