package sockio_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/sockio"
)

// echoEnv makes the test binary an echo server instead (see TestMain):
// the benchmark measures the CPU of a process of its own.
const echoEnv = "SOCKIO_ECHO"

func TestMain(m *testing.M) {
	if kind := os.Getenv(echoEnv); kind != "" {
		echo(kind == "sockio")
		return
	}
	os.Exit(m.Run())
}

// echo answers every message on one connection until it closes.
func echo(wrap bool) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr())
	c, err := ln.Accept()
	if err != nil {
		os.Exit(1)
	}
	if wrap {
		c = sockio.Wrap(c)
	}
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		if _, err := c.Write(buf[:n]); err != nil {
			return
		}
	}
}

// BenchmarkWakeUp measures what one network wait costs a Go process that
// is otherwise idle, which is how a push finds the server at a moderate
// rate: an echo server in a process of its own is sent a 300-byte
// message every 500 µs, and reports the CPU time it spent per answer. A push waits twice (its IQ, the push
// service's answer), so twice this is the floor of a push's cost at such
// rates, whatever the push itself does.
func BenchmarkWakeUp(b *testing.B) {
	for _, kind := range []string{"net", "sockio"} {
		b.Run(kind, func(b *testing.B) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), echoEnv+"="+kind)
			out, err := cmd.StdoutPipe()
			if err != nil {
				b.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			defer cmd.Wait()
			addr, err := bufio.NewReader(out).ReadString('\n')
			if err != nil {
				cmd.Process.Kill()
				b.Fatal(err)
			}
			c, err := net.Dial("tcp", strings.TrimSpace(addr))
			if err != nil {
				cmd.Process.Kill()
				b.Fatal(err)
			}
			defer c.Close()
			msg, buf := make([]byte, 300), make([]byte, 300)
			exchange := func() {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
			for range 100 {
				exchange() // the echo's start-up is not measured
			}
			before := procCPU(b, cmd.Process.Pid)
			for b.Loop() {
				exchange()
				time.Sleep(500 * time.Microsecond)
			}
			spent := procCPU(b, cmd.Process.Pid) - before
			b.ReportMetric(float64(spent.Microseconds())/float64(b.N), "echo-cpu-µs/op")
		})
	}
}

// procCPU is the time a process's threads have run, from their
// schedstat (nanoseconds, unlike /proc/PID/stat's 10 ms ticks).
func procCPU(b *testing.B, pid int) time.Duration {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	for _, t := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue // the thread exited
		}
		ns, err := strconv.ParseInt(strings.Fields(string(data))[0], 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		total += time.Duration(ns)
	}
	return total
}
