package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// compare runs the benchmark on o.bin (A) and on against (B)
// alternately, A then B, pairs times, and prints how B's figures differ
// from A's. On a machine whose cores are shared, one run of each says
// little: the load moves a figure by more than most changes do. Runs
// that alternate see the same stretches of load, and each B is judged by
// its difference from the A of its own pair.
func compare(o options, against string, pairs int, w io.Writer) error {
	var as, bs []Result
	for i := range pairs {
		for _, side := range []struct {
			bin  string
			runs *[]Result
		}{{o.bin, &as}, {against, &bs}} {
			fmt.Fprintf(w, "pair %d of %d: %s\n", i+1, pairs, side.bin)
			one := o
			one.bin = side.bin
			res, err := run(one)
			if err != nil {
				return fmt.Errorf("pair %d, %s: %w", i+1, side.bin, err)
			}
			*side.runs = append(*side.runs, res)
		}
	}
	figs := compareFigures(as, bs)
	printComparison(w, o.bin, against, figs)
	line, _ := json.Marshal(struct {
		A       string   `json:"a"`
		B       string   `json:"b"`
		Pairs   int      `json:"pairs"`
		Figures []figure `json:"figures"`
	}{o.bin, against, pairs, figs})
	fmt.Fprintf(w, "COMPARE %s\n", line)
	return nil
}

// figure is one figure of a comparison: its value in every run of A and
// of B, in the order they ran, and B's difference from A pair by pair.
type figure struct {
	Key      string    `json:"key"` // the Result's JSON name
	Name     string    `json:"name"`
	A        []float64 `json:"a"`
	B        []float64 `json:"b"`
	MeanDiff float64   `json:"mean_diff"` // mean of B-A over the pairs
	RelDiff  float64   `json:"rel_diff"`  // MeanDiff over the mean of A
	BLower   int       `json:"b_lower"`   // pairs in which B was lower
}

// figures are the ones compared, all lower-is-better. A figure that is 0
// in every run belongs to a phase that did not run and is left out.
var figures = []struct {
	key, name string
	get       func(Result) float64
}{
	{"server_cpu_us_per_push", "XEP-0357 µs/push, closed loop", func(r Result) float64 { return r.ServerCPUus }},
	{"rate_server_cpu_us_per_push", "XEP-0357 µs/push, fixed rate", func(r Result) float64 { return r.RateServerCPUus }},
	{"http_server_cpu_us_per_push", "HTTP µs/push, closed loop", func(r Result) float64 { return r.HTTPServerCPUus }},
	{"http_rate_server_cpu_us_per_push", "HTTP µs/push, fixed rate", func(r Result) float64 { return r.HTTPRateServerCPUus }},
	{"registration_cpu_us", "µs/registration", func(r Result) float64 { return r.RegistrationCPUus }},
	{"allocs_per_push", "XEP-0357 allocations/push", func(r Result) float64 { return r.AllocsPerPush }},
	{"http_allocs_per_push", "HTTP allocations/push", func(r Result) float64 { return r.HTTPAllocsPerPush }},
	{"instructions_per_push", "XEP-0357 instructions/push", func(r Result) float64 { return r.InstrPerPush }},
	{"http_instructions_per_push", "HTTP instructions/push", func(r Result) float64 { return r.HTTPInstrPerPush }},
	{"instructions_per_registration", "instructions/registration", func(r Result) float64 { return r.RegInstr }},
	{"peak_rss_mb", "peak RSS MB", func(r Result) float64 { return r.PeakRSSMB }},
}

// compareFigures compares runs as and bs, the i-th of each a pair.
func compareFigures(as, bs []Result) []figure {
	n := min(len(as), len(bs))
	var out []figure
	for _, f := range figures {
		fig := figure{Key: f.key, Name: f.name}
		var sumA, sumDiff float64
		ran := false
		for i := range n {
			a, b := f.get(as[i]), f.get(bs[i])
			fig.A, fig.B = append(fig.A, a), append(fig.B, b)
			ran = ran || a != 0 || b != 0
			sumA += a
			sumDiff += b - a
			if b < a {
				fig.BLower++
			}
		}
		if !ran {
			continue
		}
		fig.MeanDiff = sumDiff / float64(n)
		if sumA != 0 {
			fig.RelDiff = sumDiff / sumA
		}
		out = append(out, fig)
	}
	return out
}

func printComparison(w io.Writer, a, b string, figs []figure) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "A: %s\tB: %s\n", a, b)
	fmt.Fprintf(tw, "figure\tA, each run\tB, each run\tB-A, mean of pairs\tB lower\n")
	for _, f := range figs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%+.1f (%+.1f %%)\t%d of %d\n", f.Name, values(f.A), values(f.B), f.MeanDiff, 100*f.RelDiff, f.BLower, len(f.A))
	}
	tw.Flush()
}

func values(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.1f", x)
	}
	return strings.Join(s, " ")
}
