package sqlite

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
	"modernc.org/libc"
	lib "modernc.org/sqlite/lib"
)

// rootFD is the descriptor of pFile, a file the root VFS root opened,
// where that VFS is SQLite's unix one (whose files start with a
// unixFile), and -1 otherwise.
func rootFD(root *lib.Tsqlite3_vfs, pFile uintptr) int32 {
	if libc.GoString(root.FzName) != "unix" {
		return -1
	}
	return cPointer[lib.TunixFile](pFile).Fh
}

// dupLog returns a descriptor of its own for the log whose descriptor is
// fd: the log syncer syncs through it after the writer's connection, and
// SQLite's descriptor with it, may have been closed.
func dupLog(fd int32) (*os.File, error) {
	if fd < 0 {
		return nil, fmt.Errorf("the registry's log has no descriptor to sync through")
	}
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("copying the registry log's descriptor: %w", err)
	}
	return os.NewFile(uintptr(nfd), "registry log"), nil
}
