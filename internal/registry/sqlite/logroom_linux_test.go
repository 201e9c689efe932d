package sqlite_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
	"github.com/push-appserver/push-appserver/internal/testutil/tmpfs"
)

// On a disk with less room than the write-ahead log may grow to before
// it is copied into the registry (walCheckpoint pages, about 120 MB), the
// log is copied sooner, and registrations that fit on the disk many
// times over are stored. Otherwise the log took all the room: every
// registration after it was refused, and the log could not even be
// copied into the registry, whose file would have had to grow, so
// nothing came back until an operator freed room elsewhere.
func TestLogFitsTheDisk(t *testing.T) {
	ctx := context.Background()
	dir := tmpfs.Mount(t, 4<<20)
	path := filepath.Join(dir, "registry.db")
	s, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Each about 1 KB of the registry's file, 1 MB in all; a commit of
	// one registration writes about 20 KB of log.
	const n = 1000
	for i := range n {
		node := fmt.Sprintf("node-%04d", i)
		r := registry.Registration{Node: node, Type: "apns", Token: strings.Repeat("ab", 32), Secret: fmt.Sprintf("secret-%d", i), Registered: time.Now()}
		if _, err := register(s, r); err != nil {
			sizes := ""
			for _, suffix := range []string{"", "-wal"} {
				if st, serr := os.Stat(path + suffix); serr == nil {
					sizes += fmt.Sprintf(" registry.db%s: %d bytes;", suffix, st.Size())
				}
			}
			t.Fatalf("registration %d of %d on a disk of 4 MiB:%s %v", i+1, n, sizes, err)
		}
	}
	if c, err := s.Count(ctx); err != nil || c != n {
		t.Fatalf("Count = %d, %v; want %d", c, err, n)
	}
}
