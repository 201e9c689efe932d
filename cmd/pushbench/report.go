package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
)

// procStats reads the server's peak resident memory (VmHWM) and the CPU
// time it used (utime+stime) from /proc.
func procStats(pid int) (rssMB, cpuS float64) {
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				rssMB = kb / 1024
			}
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// Fields after the command name, which is in parentheses.
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i > 0 {
			f := strings.Fields(s[i+1:])
			if len(f) > 12 {
				ut, _ := strconv.ParseFloat(f[11], 64)
				st, _ := strconv.ParseFloat(f[12], 64)
				cpuS = (ut + st) / 100 // USER_HZ is 100 on Linux
			}
		}
	}
	return rssMB, cpuS
}

func printTable(w io.Writer, r Result) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "registrations\t%d\t%.0f/s over HTTP\n", r.Registrations, r.RegistrationsPS)
	for _, p := range []struct {
		name string
		ph   *Phase
	}{{"closed loop", r.Closed}, {"open loop", r.Open}} {
		if p.ph == nil {
			continue
		}
		target := ""
		if p.ph.Target > 0 {
			target = fmt.Sprintf(" (target %.0f/s)", p.ph.Target)
		}
		fmt.Fprintf(tw, "%s\t%.0f pushes/s%s\tp50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms\n",
			p.name, p.ph.Rate, target, p.ph.P50ms, p.ph.P90ms, p.ph.P99ms, p.ph.Maxms)
		fmt.Fprintf(tw, "\tsent %d, ok %d\terrors %v\n", p.ph.Sent, p.ph.OK, p.ph.Errors)
	}
	fmt.Fprintf(tw, "push service (%s)\t%d accepted\tsuccess replies %d\n", r.Backend, r.APNSAccepted, r.Successes)
	fmt.Fprintf(tw, "server\tpeak RSS %.1f MB\tCPU %.1f s\n", r.PeakRSSMB, r.CPUSeconds)
	tw.Flush()
}

func freeAddr() (string, error) {
	ln, err := netListen()
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
