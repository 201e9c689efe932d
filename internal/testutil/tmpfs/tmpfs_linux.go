// Package tmpfs gives tests a small file system of their own, to fill:
// a disk that runs out while the code under test writes to it.
package tmpfs

import (
	"fmt"
	"syscall"
	"testing"
)

// Mount mounts a tmpfs of size bytes, mode 0700, at a new directory,
// unmounted when the test ends, and returns the directory. It needs
// root, as the tests that run it do (they run as CI does, as root).
func Mount(t testing.TB, size int) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		t.Fatalf("mounting a tmpfs of %d bytes: %v", size, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Error(err)
		}
	})
	return dir
}
