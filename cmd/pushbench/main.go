// Command pushbench measures push-appserver end to end, the same way every
// time: it plays the user's XMPP server (accepting the app server's
// XEP-0114 component connection), runs the APNS mock, starts
// `push-appserver serve` as a separate process, registers devices over the
// HTTP API, and then sends publish IQs shaped like Prosody's, closed-loop
// (a fixed number in flight) and open-loop (a fixed rate). It prints a
// table and one JSON line prefixed "RESULT ".
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
)

type options struct {
	bin         string
	n           int
	concurrency int
	duration    time.Duration
	openRate    float64 // 0: half the closed-loop rate
	openFor     time.Duration
	backend     string
	cpuprofile  string
	heapprofile string
	serverLog   string
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "", "push-appserver binary (default: build it)")
	flag.IntVar(&o.n, "n", 100000, "devices to register")
	flag.IntVar(&o.concurrency, "c", 256, "publish IQs in flight in the closed loop")
	flag.DurationVar(&o.duration, "d", 30*time.Second, "closed-loop duration")
	flag.Float64Var(&o.openRate, "rate", 0, "open-loop rate in IQs/s (0: half the closed-loop maximum; <0: skip)")
	flag.DurationVar(&o.openFor, "open-d", 30*time.Second, "open-loop duration")
	flag.StringVar(&o.backend, "backend", "apns", "push backend of the benchmark app: apns (against the mock) or log")
	flag.StringVar(&o.cpuprofile, "cpuprofile", "", "write a 10 s CPU profile of the server, taken during the closed loop, to this file")
	flag.StringVar(&o.heapprofile, "heapprofile", "", "write a heap profile of the server, taken after the closed loop, to this file")
	flag.StringVar(&o.serverLog, "server-log", "", "write the server's log to this file")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "pushbench:", err)
		os.Exit(1)
	}
}

// Result is the JSON line.
type Result struct {
	Registrations    int     `json:"registrations"`
	RegistrationsPS  float64 `json:"registrations_per_s"`
	Closed           *Phase  `json:"closed_loop"`
	Open             *Phase  `json:"open_loop,omitempty"`
	APNSAccepted     int     `json:"apns_accepted"`
	Successes        int64   `json:"successes"`
	PeakRSSMB        float64 `json:"peak_rss_mb"`
	CPUSeconds       float64 `json:"server_cpu_s"`
	Backend          string  `json:"backend"`
	GoMaxProcsServer int     `json:"-"`
}

func run(o options) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "pushbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	if o.bin == "" {
		o.bin = filepath.Join(dir, "push-appserver")
		build := exec.Command("go", "build", "-o", o.bin, "./cmd/push-appserver")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		build.Stderr = os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building push-appserver: %w", err)
		}
	}

	// The APNS mock, in this process.
	p8, pub, err := apnsmock.TokenKey()
	if err != nil {
		return err
	}
	keyFile := filepath.Join(dir, "key.p8")
	os.WriteFile(keyFile, p8, 0o600)
	mock, err := apnsmock.New(apnsmock.Config{TokenKey: pub, KeyID: "BENCHKEY", TeamID: "BENCHTEAM", Topic: "im.bench.app", KeepRequests: 1})
	if err != nil {
		return err
	}
	defer mock.Close()

	xmpp, err := listenComponent("push.bench", "bench-secret")
	if err != nil {
		return err
	}
	defer xmpp.Close()

	httpAddr, err := freeAddr()
	if err != nil {
		return err
	}
	pprofAddr, _ := freeAddr()
	cfg := fmt.Sprintf(`data_dir = %q
rate_limit = 0
log_level = "warn"
pprof_listen = %q
[http]
listen = %q
[[component]]
jid = "push.bench"
address = %q
secret = "bench-secret"
max_in_flight = 1024
`, filepath.Join(dir, "data"), pprofAddr, httpAddr, xmpp.Addr())
	switch o.backend {
	case "apns":
		cfg += fmt.Sprintf(`[apps.bench]
kind = "apns"
topic = "im.bench.app"
priority = "auto"
token_key_file = %q
key_id = "BENCHKEY"
team_id = "BENCHTEAM"
endpoint = %q
ca_path = %q
`, keyFile, mock.URL, mock.CADir)
	case "log":
		cfg += "[apps.bench]\nkind = \"log\"\n"
	default:
		return fmt.Errorf("unknown backend %q", o.backend)
	}
	cfgFile := filepath.Join(dir, "bench.toml")
	os.WriteFile(cfgFile, []byte(cfg), 0o600)

	srv := exec.CommandContext(ctx, o.bin, "serve", "-config", cfgFile)
	logw := io.Discard
	if o.serverLog != "" {
		f, err := os.Create(o.serverLog)
		if err != nil {
			return err
		}
		defer f.Close()
		logw = f
	}
	srv.Stdout, srv.Stderr = logw, logw
	if err := srv.Start(); err != nil {
		return err
	}
	defer func() {
		srv.Process.Signal(os.Interrupt)
		srv.Wait()
	}()

	fmt.Fprintln(os.Stderr, "waiting for the component connection ...")
	stream, err := xmpp.Accept(30 * time.Second)
	if err != nil {
		return err
	}
	defer stream.Close()

	res := Result{Backend: o.backend}
	fmt.Fprintf(os.Stderr, "registering %d devices ...\n", o.n)
	devices, took, err := register(ctx, "http://"+httpAddr, o.n)
	if err != nil {
		return err
	}
	res.Registrations = len(devices)
	res.RegistrationsPS = float64(len(devices)) / took.Seconds()

	var profileDone chan error
	if o.cpuprofile != "" {
		profileDone = make(chan error, 1)
		go func() {
			time.Sleep(min(2*time.Second, o.duration/4))
			profileDone <- fetchProfile("http://"+pprofAddr+"/debug/pprof/profile?seconds=10", o.cpuprofile)
		}()
	}
	fmt.Fprintf(os.Stderr, "closed loop: %d in flight for %s ...\n", o.concurrency, o.duration)
	res.Closed = stream.ClosedLoop(devices, o.concurrency, o.duration)
	if profileDone != nil {
		if err := <-profileDone; err != nil {
			fmt.Fprintln(os.Stderr, "cpu profile:", err)
		}
	}
	if o.heapprofile != "" {
		if err := fetchProfile("http://"+pprofAddr+"/debug/pprof/heap", o.heapprofile); err != nil {
			fmt.Fprintln(os.Stderr, "heap profile:", err)
		}
	}
	if o.openRate >= 0 {
		rate := o.openRate
		if rate == 0 {
			rate = res.Closed.Rate / 2
		}
		fmt.Fprintf(os.Stderr, "open loop: %.0f IQs/s for %s ...\n", rate, o.openFor)
		res.Open = stream.OpenLoop(devices, rate, o.openFor)
	}
	res.Successes = res.Closed.OK
	if res.Open != nil {
		res.Successes += res.Open.OK
	}
	res.APNSAccepted = mock.Accepted()
	res.PeakRSSMB, res.CPUSeconds = procStats(srv.Process.Pid)

	printTable(os.Stdout, res)
	line, _ := json.Marshal(res)
	fmt.Printf("RESULT %s\n", line)
	if o.backend == "apns" && int64(res.APNSAccepted) != res.Successes {
		return fmt.Errorf("APNS mock accepted %d pushes but %d IQs were answered with success", res.APNSAccepted, res.Successes)
	}
	return nil
}

type device struct{ node, secret string }

// register creates n devices over the HTTP API with 64 workers.
func register(ctx context.Context, base string, n int) ([]device, time.Duration, error) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 30 * time.Second}
	devices := make([]device, n)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for range 64 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				node := fmt.Sprintf("bench-%08d", i)
				resp, err := client.PostForm(base+"/push_appserver/v1/register", url.Values{
					"type": {"bench"}, "node": {node}, "token": {fmt.Sprintf("%064x", i+1)},
				})
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				lines := strings.Split(string(body), "\n")
				if len(lines) != 3 || lines[0] != "OK" {
					once.Do(func() { firstErr = fmt.Errorf("register %s: %q", node, body) })
					return
				}
				devices[i] = device{node: node, secret: lines[2]}
			}
		})
	}
	wg.Wait()
	return devices, time.Since(start), firstErr
}

func fetchProfile(u, file string) error {
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(f, resp.Body)
	return err
}
