//go:build !race

package apns_test

const raceSlowdown = 1
