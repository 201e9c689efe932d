//go:build race

package e2e_test

// raceEnabled: the race detector makes the pure-Go SQLite some ten times
// slower, so bulk tests use less data under it (make test also runs them
// without it, at full size).
const raceEnabled = true
