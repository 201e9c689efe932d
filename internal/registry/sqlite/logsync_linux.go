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

// openLog returns a descriptor of its own for the log whose descriptor
// is fd: the log syncer syncs through it after the writer's connection,
// and SQLite's descriptor with it, may have been closed.
//
// It opens the file anew (through /proc, which reaches the file fd has
// open even once its name is gone) instead of copying fd: Linux reports
// a failed writeback of the file's pages at the next fsync of each open
// file description, once, and a copy shares SQLite's. SQLite syncs the
// log too (every other write's commit, the checkpoints); a failure its
// sync saw first would leave the syncer's without an error, and the
// batches whose frames were lost would be answered OK.
func openLog(fd int32) (*os.File, error) {
	if fd < 0 {
		return nil, fmt.Errorf("the registry's log has no descriptor to sync through")
	}
	f, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", fd), os.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("opening the registry's log anew: %w", err)
	}
	return f, nil
}

// syncLog syncs the log's data, and of its metadata only what reading it
// back needs (its size): fdatasync, as SQLite's unix VFS does where it
// has it. A log reused from its start keeps its size, and its sync then
// waits for no journal commit of the file system, which with ext4's
// ordered data would wait for every file's blocks allocated meanwhile,
// the registry's as a checkpoint grows it.
func syncLog(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	if cerr := rc.Control(func(fd uintptr) { err = unix.Fdatasync(int(fd)) }); cerr != nil {
		return cerr
	}
	return err
}
