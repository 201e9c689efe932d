//go:build race

package sockio

import "syscall"

// Under the race detector the reads and writes go through package
// syscall's, which tell the detector that what a goroutine did before it
// wrote to a socket happened before what another does after reading: a
// test whose goroutines meet only through a connection would otherwise
// be reported as racing. The raw calls are tested without -race.
func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Read(int(fd), p)
	return n, errnoOf(err)
}

func sysWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Write(int(fd), p)
	return n, errnoOf(err)
}

// errnoOf is err as package syscall returns it: nil or an Errno.
func errnoOf(err error) syscall.Errno {
	e, _ := err.(syscall.Errno)
	return e
}
