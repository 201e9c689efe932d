package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// callgrind counts the instructions the server executes, with valgrind's
// callgrind tool: unlike CPU time, the count is the same from run to run
// whatever else the machine is doing, so it judges small optimisations.
// The server runs under valgrind for the whole benchmark; the counters are
// zeroed before a measured window and dumped after it with callgrind_control.
type callgrind struct {
	out string // callgrind's output file; dumps are out.1, out.2, ...
	pid int
}

// valgrindDeps says how to get the tools when they are missing.
const valgrindDeps = "valgrind's callgrind_control not found: run scripts/bench-deps.sh (apt-get install valgrind)"

// command returns the server command line run under callgrind. Go's
// asynchronous preemption signals trip an assertion in callgrind's signal
// handling, so they are turned off (goroutines are still preempted at
// function calls).
func (c *callgrind) command(bin string, args ...string) (*exec.Cmd, error) {
	if _, err := exec.LookPath("valgrind"); err != nil {
		return nil, errors.New(valgrindDeps)
	}
	if _, err := exec.LookPath("callgrind_control"); err != nil {
		return nil, errors.New(valgrindDeps)
	}
	// Dumps are numbered from 1 again: old ones would be taken for new.
	old, _ := filepath.Glob(c.out + ".*")
	for _, f := range old {
		os.Remove(f)
	}
	cmd := exec.Command("valgrind", append([]string{"--tool=callgrind", "--callgrind-out-file=" + c.out, bin}, args...)...)
	// Valgrind 3.19 (Debian 12's) cannot run RDTSCP, which the runtime's
	// clock uses where the processor has it: the server would die of
	// SIGILL at its first lock contention.
	godebug := "asyncpreemptoff=1,cpu.rdtscp=off"
	if v := os.Getenv("GODEBUG"); v != "" {
		godebug = v + "," + godebug
	}
	cmd.Env = append(os.Environ(), "GODEBUG="+godebug)
	return cmd, nil
}

func (c *callgrind) control(arg string) error {
	out, err := exec.Command("callgrind_control", arg, strconv.Itoa(c.pid)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "OK") {
		return fmt.Errorf("callgrind_control %s: %v: %s", arg, err, out)
	}
	return nil
}

// zero resets the counters at the start of a window.
func (c *callgrind) zero() error { return c.control("-z") }

// dump ends a window and returns the instructions counted since zero.
func (c *callgrind) dump() (int64, error) {
	before, _ := filepath.Glob(c.out + ".*")
	if err := c.control("-d"); err != nil {
		return 0, err
	}
	after, _ := filepath.Glob(c.out + ".*")
	if len(after) != len(before)+1 {
		return 0, fmt.Errorf("callgrind wrote %d dumps, want one", len(after)-len(before))
	}
	return dumpTotal(c.out + "." + strconv.Itoa(len(after)))
}

// dumpTotal reads the "totals:" line of a callgrind dump (events: Ir).
func dumpTotal(file string) (int64, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "totals:"); ok {
			return strconv.ParseInt(strings.Fields(v)[0], 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: no totals line", file)
}
