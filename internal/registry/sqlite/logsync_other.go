//go:build !linux

package sqlite

import (
	"errors"
	"os"

	lib "modernc.org/sqlite/lib"
)

// rootFD is -1: only on Linux does the registration writer sync the log
// itself (logsync.go); elsewhere each commit syncs it.
func rootFD(*lib.Tsqlite3_vfs, uintptr) int32 { return -1 }

func openLog(int32) (*os.File, error) {
	return nil, errors.New("the registry's log is synced by each commit here")
}

func syncLog(f *os.File) error { return f.Sync() }
