package main

import (
	"fmt"
	"io"
	"text/tabwriter"
)

func printTable(w io.Writer, r Result) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "registrations\t%d\t%.0f/s over HTTP\tserver CPU %.1f µs each (load generator %.1f µs)\n", r.Registrations, r.RegistrationsPS, r.RegistrationCPUus, r.RegistrationClientCPUus)
	for _, p := range []struct {
		name string
		ph   *Phase
	}{{"XEP-0357 closed loop", r.Closed}, {"XEP-0357 open loop", r.Open}, {"HTTP closed loop", r.HTTPClosed}, {"HTTP open loop", r.HTTPOpen}} {
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
		fmt.Fprintf(tw, "\tserver CPU %.1f µs/push\tallocs %.1f/push  syscalls %.2f/push  switches %.2f+%.2f/push  cache hits %.0f%%\n", p.ph.CPUus, p.ph.Allocs, p.ph.Syscalls, p.ph.Voluntary, p.ph.Involuntary, 100*p.ph.CacheHits)
	}
	fmt.Fprintf(tw, "push service (%s)\t%d accepted\tsuccess replies %d\n", r.Backend, r.Accepted, r.Successes)
	if r.InstrPerPush > 0 || r.HTTPInstrPerPush > 0 {
		fmt.Fprintf(tw, "instructions (callgrind)\tXEP-0357 %.0f/push\tHTTP %.0f/push\n", r.InstrPerPush, r.HTTPInstrPerPush)
		fmt.Fprintf(tw, "\tidle server: %.0f/s\n", r.IdleInstrPerS)
		if r.RegInstr > 0 {
			fmt.Fprintf(tw, "\tregistration %.0f\n", r.RegInstr)
		}
	}
	fmt.Fprintf(tw, "server\tpeak RSS %.1f MB\tCPU %.1f s\tmachine load %.2f\n", r.PeakRSSMB, r.CPUSeconds, r.LoadAvg)
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
