// Package gctune sets the Go garbage collector's defaults for the server.
//
// A push allocates a few hundred short-lived objects (XML tokens, the
// HTTP/2 request, the reply) and the heap that outlives them is small (the
// registration cache, buffers): at Go's default GOGC of 100 the collector
// runs often, and took 10 to 14 % of the instructions of a push. At 200 it
// runs half as often, for a heap that may grow to three times the live
// one instead of twice (see docs/performance.md).
package gctune

import (
	"path"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
)

// DefaultGCPercent is the collector's GOGC when the environment sets none.
const DefaultGCPercent = 200

// Apply sets the collector to DefaultGCPercent unless GOGC is set in the
// environment getenv reads, which Go's runtime has already applied and
// which wins. It reports whether it set the default.
func Apply(getenv func(string) string) bool {
	if getenv("GOGC") != "" {
		return false
	}
	debug.SetGCPercent(DefaultGCPercent)
	return true
}

// memoryLimitShare is the part of its cgroup's memory limit the process
// gives the Go runtime as its soft limit (GOMEMLIMIT). At GOGC 200 the
// heap may grow to three times the live one before a collection, and
// under a container's limit, or systemd's MemoryMax=, that is an OOM
// kill where a collection would have done. Not all of it: SQLite's page
// caches and the runtime's own overhead are memory the limit does not
// see.
const memoryLimitShare = 0.8

// ApplyMemoryLimit sets the runtime's soft memory limit to
// memoryLimitShare of the memory limit of the cgroup the process runs in
// (v2's memory.max, or v1's memory.limit_in_bytes), read through
// readFile, unless GOMEMLIMIT is set in the environment getenv reads,
// which Go's runtime has already applied and which wins. It returns the
// limit it set, 0 when it set none: no limit, or none to be read.
func ApplyMemoryLimit(getenv func(string) string, readFile func(string) ([]byte, error)) int64 {
	if getenv("GOMEMLIMIT") != "" {
		return 0
	}
	limit := cgroupMemoryLimit(readFile)
	if limit <= 0 {
		return 0
	}
	soft := int64(float64(limit) * memoryLimitShare)
	debug.SetMemoryLimit(soft)
	return soft
}

// cgroupMemoryLimit is the memory limit the process's cgroup is held
// to in bytes, 0 for none: the tightest of its own and of every cgroup
// above it, up to /sys/fs/cgroup's own files (in a container with a
// cgroup namespace of its own, the container's). A limit binds every
// cgroup below it, and is often set on one above the process's own: on
// a systemd slice (MemoryMax= on the slice, the service's own left at
// max), or on a container whose systemd runs the server in a service of
// its own.
func cgroupMemoryLimit(readFile func(string) ([]byte, error)) int64 {
	self, err := readFile("/proc/self/cgroup")
	if err != nil {
		return 0
	}
	var v2, v1 string
	for line := range strings.Lines(string(self)) {
		// hierarchy-ID:controller-list:path
		parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			v2 = parts[2]
		case slices.Contains(strings.Split(parts[1], ","), "memory"):
			v1 = parts[2]
		}
	}
	root, dir, file := "/sys/fs/cgroup", v2, "memory.max"
	if v1 != "" {
		root, dir, file = "/sys/fs/cgroup/memory", v1, "memory.limit_in_bytes"
	}
	var limit int64
	for dir = path.Join("/", dir); ; dir = path.Dir(dir) {
		if n := readLimit(readFile, path.Join(root, dir, file)); n > 0 && (limit == 0 || n < limit) {
			limit = n
		}
		if dir == "/" {
			return limit
		}
	}
}

// readLimit reads one cgroup's memory limit from file, 0 for none or
// none to be read.
func readLimit(readFile func(string) ([]byte, error), file string) int64 {
	b, err := readFile(file)
	if err != nil {
		return 0
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0
	}
	n, err := strconv.ParseInt(s, 10, 64)
	// cgroup v1 says "no limit" with the largest page-aligned value.
	if err != nil || n <= 0 || n >= 1<<62 {
		return 0
	}
	return n
}
