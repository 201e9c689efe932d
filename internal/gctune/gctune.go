// Package gctune sets the Go garbage collector's defaults for the server.
//
// A push allocates a few hundred short-lived objects (XML tokens, the
// HTTP/2 request, the reply) and the heap that outlives them is small (the
// registration cache, buffers): at Go's default GOGC of 100 the collector
// runs often, and took 10 to 14 % of the instructions of a push. At 200 it
// runs half as often, for a heap that may grow to three times the live
// one instead of twice (see docs/performance.md).
package gctune

import "runtime/debug"

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
