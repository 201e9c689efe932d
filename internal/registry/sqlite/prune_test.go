package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

// inUse fills s with n registrations of real size, all renewed lately,
// so none is idle.
func inUse(t *testing.T, s *Store, n int) {
	t.Helper()
	if _, err := s.write.ExecContext(context.Background(), `WITH RECURSIVE i(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM i WHERE i < ?1)
		INSERT INTO registrations (node, type, token, secret, registered)
		SELECT printf('%016x', i * 2654435761 % 4294967291), 'fcm', printf('token-%0150d', i), printf('%064x', i), ?2 FROM i`,
		n, time.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
}

// A window with none idle is only read: a prune reading through a
// registry with few idle registrations takes no write lock from the
// registrations of a running server. Here another connection holds the
// lock throughout, and the window is read all the same.
func TestDeleteIdleWithoutIdleTakesNoWriteLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	inUse(t, s, 3000)
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	writer, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	if _, err := writer.ExecContext(context.Background(), `BEGIN IMMEDIATE`); err != nil {
		t.Fatal(err)
	}
	defer writer.ExecContext(context.Background(), `ROLLBACK`)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	removed, next, err := s.DeleteIdle(ctx, time.Now().Add(-180*24*time.Hour), "", "", 2000)
	if err != nil || len(removed) != 0 || next == "" {
		t.Fatalf("DeleteIdle beside a writer = %d removed, next %q, %v; want none removed, without waiting", len(removed), next, err)
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("DeleteIdle waited for the write lock")
	}
}
