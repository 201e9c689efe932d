//go:build race

package apns_test

// raceSlowdown stretches deadlines of CPU-bound tests: the race detector
// makes TLS handshakes and HTTP/2 framing many times slower.
const raceSlowdown = 6
