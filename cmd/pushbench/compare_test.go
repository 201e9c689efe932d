package main

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

func TestCompareFigures(t *testing.T) {
	as := []Result{
		{ServerCPUus: 40, RegistrationCPUus: 80, PeakRSSMB: 120},
		{ServerCPUus: 50, RegistrationCPUus: 90, PeakRSSMB: 120},
		{ServerCPUus: 45, RegistrationCPUus: 70, PeakRSSMB: 120},
	}
	bs := []Result{
		{ServerCPUus: 36, RegistrationCPUus: 85, PeakRSSMB: 121},
		{ServerCPUus: 44, RegistrationCPUus: 80, PeakRSSMB: 119},
		{ServerCPUus: 46, RegistrationCPUus: 60, PeakRSSMB: 120},
	}
	got := map[string]figure{}
	for _, f := range compareFigures(as, bs) {
		got[f.Key] = f
	}
	if f := got["server_cpu_us_per_push"]; len(f.A) != 3 || f.A[1] != 50 || f.B[2] != 46 {
		t.Errorf("runs in order: A %v, B %v", f.A, f.B)
	}
	for _, tc := range []struct {
		key      string
		meanDiff float64
		relDiff  float64
		bLower   int
	}{
		// (-4 - 6 + 1) / 3 over a mean of 45.
		{"server_cpu_us_per_push", -3, -9.0 / 135, 2},
		{"registration_cpu_us", -5, -15.0 / 240, 2},
		// Equal in one pair: not lower there.
		{"peak_rss_mb", 0, 0, 1},
	} {
		f, ok := got[tc.key]
		if !ok {
			t.Errorf("%s: missing", tc.key)
			continue
		}
		if math.Abs(f.MeanDiff-tc.meanDiff) > 1e-9 || math.Abs(f.RelDiff-tc.relDiff) > 1e-9 || f.BLower != tc.bLower {
			t.Errorf("%s: mean diff %g, rel %g, B lower %d; want %g, %g, %d", tc.key, f.MeanDiff, f.RelDiff, f.BLower, tc.meanDiff, tc.relDiff, tc.bLower)
		}
		if len(f.A) != 3 || len(f.B) != 3 {
			t.Errorf("%s: runs %v and %v", tc.key, f.A, f.B)
		}
	}
	// Phases that did not run (0 in every run) are left out.
	for _, key := range []string{"http_server_cpu_us_per_push", "rate_server_cpu_us_per_push", "instructions_per_push"} {
		if _, ok := got[key]; ok {
			t.Errorf("%s compared though it never ran", key)
		}
	}
	var out bytes.Buffer
	printComparison(&out, "a", "b", compareFigures(as, bs))
	if !strings.Contains(out.String(), "-3.0 (-6.7 %)") || !strings.Contains(out.String(), "2 of 3") {
		t.Errorf("table:\n%s", out.String())
	}
}
