//go:build !race

package h2client_test

const raceSlowdown = 1
