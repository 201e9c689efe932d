// Command pushbench measures push-appserver end to end, the same way every
// time: it plays the user's XMPP server (accepting the app server's
// XEP-0114 component connection), runs the APNS mock, starts
// `push-appserver serve` as a separate process, registers devices over the
// HTTP API, and then sends publish IQs shaped like Prosody's, closed-loop
// (a fixed number in flight) and open-loop (a fixed rate). It prints a
// table and one JSON line prefixed "RESULT ". The same two phases, closed
// and open loop, then run against the HTTP API's push endpoint.
//
// The headline figures are the server's CPU time per push (utime+stime of
// its process over a phase, divided by the successful pushes): unlike
// rates, they hardly depend on what else the machine is doing. With
// -instructions N the server runs under valgrind's callgrind instead and
// the benchmark counts the instructions it executes for N pushes on each
// path, which is the same from run to run.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
	"github.com/push-appserver/push-appserver/internal/testutil/fcmmock"
	"github.com/push-appserver/push-appserver/internal/testutil/xmppfake"
)

type options struct {
	bin          string
	n            int
	concurrency  int
	regC         int
	sequential   bool // nodes and tokens in order instead of scattered
	duration     time.Duration
	openRate     float64 // 0: half the closed-loop rate
	openFor      time.Duration
	httpC        int
	httpBatch    int // >1: pushes per push-batch request instead of one /v1/push each
	paths        string
	count        int // >0: count instructions for this many pushes per path
	callgrindTo  string
	backend      string
	cpuprofile   string
	profilePhase string
	heapprofile  string
	serverLog    string
	soak         time.Duration // >0: soak instead of the phases
	soakRate     float64
	soakEvery    time.Duration
	dsn          string  // PostgreSQL registry instead of SQLite
	zipf         float64 // >1: push to devices by a Zipf law of this exponent instead of in turn
	cache        int     // the server's registration_cache; <0: its default
	tokenless    bool    // publish IQs to device tokens (fpush and Monal's tokenless pushes) instead of registered nodes
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "", "push-appserver binary (default: build it)")
	flag.IntVar(&o.n, "n", 100000, "devices to register")
	flag.IntVar(&o.concurrency, "c", 256, "publish IQs in flight in the closed loop")
	flag.DurationVar(&o.duration, "d", 30*time.Second, "closed-loop duration")
	flag.Float64Var(&o.openRate, "rate", 2000, "open-loop (fixed) rate in pushes/s (0: half the closed-loop maximum; <0: skip)")
	flag.DurationVar(&o.openFor, "open-d", 30*time.Second, "open-loop duration")
	flag.IntVar(&o.regC, "reg-c", 64, "registrations in flight (each on its own connection)")
	flag.BoolVar(&o.sequential, "sequential", false, "register nodes and tokens in order (bench-00000000, ...), as before 2026-12-04, evening: far cheaper for the registry than real devices' scattered ones")
	flag.IntVar(&o.httpC, "http-c", 64, "HTTP push requests in flight in the closed loop")
	flag.IntVar(&o.httpBatch, "http-batch", 1, "pushes per HTTP request: more than 1 sends them to /push_appserver/v1/push-batch (at most 100), each request counting as that many pushes")
	flag.StringVar(&o.paths, "paths", "xmpp,http", "input paths to measure: xmpp (publish IQs), http (/push_appserver/v1/push)")
	flag.IntVar(&o.count, "instructions", 0, "run the server under valgrind's callgrind and count the instructions of this many pushes per path (closed loop), and of this many registrations of new devices, instead of timing")
	flag.StringVar(&o.backend, "backend", "apns", "push backend of the benchmark app: apns or fcm (each against its mock), or log")
	flag.StringVar(&o.callgrindTo, "callgrind-out", "", "with -instructions: keep callgrind's dumps as this file name plus .1 (the idle server), .2, ... (one per path, then the registrations) (for callgrind_annotate)")
	flag.StringVar(&o.cpuprofile, "cpuprofile", "", "write a 10 s CPU profile of the server, taken during the closed loop of -profile, to this file")
	flag.StringVar(&o.profilePhase, "profile", "xmpp", "phase of -cpuprofile: xmpp, http (closed loops), xmpp-rate, http-rate (fixed rate; make -open-d at least 10s) or registrations")
	flag.StringVar(&o.heapprofile, "heapprofile", "", "write a heap profile of the server, taken after the first closed loop (XEP-0357's, or HTTP's with -paths http), to this file")
	flag.StringVar(&o.serverLog, "server-log", "", "write the server's log to this file")
	flag.DurationVar(&o.soak, "soak", 0, "instead of the phases, send publish IQs at -soak-rate for this long, report RSS, goroutines, open fds and p99 every -soak-every, and fail if one keeps growing")
	flag.Float64Var(&o.soakRate, "soak-rate", 500, "publish IQs per second during -soak")
	flag.DurationVar(&o.soakEvery, "soak-every", 30*time.Second, "report interval of -soak")
	flag.StringVar(&o.dsn, "dsn", "", "run the server on this PostgreSQL database (a URL or key=value DSN; its registrations are added to) instead of SQLite")
	flag.Float64Var(&o.zipf, "zipf", 0, "push to devices by a Zipf law of this exponent (>1, e.g. 1.1: a few devices get most pushes, as in real traffic) instead of to each in turn, which is the worst case for the server's registration cache")
	flag.BoolVar(&o.tokenless, "tokenless", false, "publish IQs whose node is the device token (fpush's and Monal's tokenless pushes, with the component's tokenless = true) instead of a registered node; the HTTP path still pushes to the registered nodes")
	flag.IntVar(&o.cache, "cache", -1, "the server's registration_cache (registrations kept in memory; 0: none); default: the server's default")
	against := flag.String("against", "", "a second push-appserver binary: run the benchmark alternately on -bin and on this one, -pairs times, and print how this one's figures differ from -bin's pair by pair")
	pairs := flag.Int("pairs", 3, "runs of each binary with -against")
	flag.Parse()
	if o.zipf != 0 && o.zipf <= 1 {
		fmt.Fprintln(os.Stderr, "pushbench: -zipf must be greater than 1")
		os.Exit(2)
	}
	if o.httpBatch < 1 || o.httpBatch > 100 {
		fmt.Fprintln(os.Stderr, "pushbench: -http-batch must be 1 to 100")
		os.Exit(2)
	}
	if o.soak > 0 && (o.count > 0 || o.soakRate <= 0 || o.soakEvery <= 0) {
		fmt.Fprintln(os.Stderr, "pushbench: -soak needs -soak-rate and -soak-every > 0 and no -instructions")
		os.Exit(2)
	}
	if *against != "" {
		if o.bin == "" || *pairs < 1 || o.soak > 0 || o.cpuprofile != "" || o.heapprofile != "" {
			fmt.Fprintln(os.Stderr, "pushbench: -against needs -bin, -pairs of at least 1, and no -soak or profiles")
			os.Exit(2)
		}
		if err := compare(o, *against, *pairs, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "pushbench:", err)
			os.Exit(1)
		}
		return
	}
	if _, err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "pushbench:", err)
		os.Exit(1)
	}
}

// Result is the JSON line. The top-level per-push figures repeat the
// phases' ones under stable names; a figure of a phase that did not run
// is 0 (or absent).
type Result struct {
	Registrations   int     `json:"registrations"`
	RegistrationsPS float64 `json:"registrations_per_s"`
	// Server CPU per HTTP registration.
	RegistrationCPUus float64 `json:"registration_cpu_us"`
	// RegistrationClientCPUus is this load generator's own CPU per
	// registration: it shares the machine, so it bounds the rate too.
	RegistrationClientCPUus float64 `json:"registration_client_cpu_us"`

	ServerCPUus         float64 `json:"server_cpu_us_per_push"`           // XEP-0357, closed loop
	HTTPServerCPUus     float64 `json:"http_server_cpu_us_per_push"`      // HTTP, closed loop
	RateServerCPUus     float64 `json:"rate_server_cpu_us_per_push"`      // XEP-0357, fixed rate
	HTTPRateServerCPUus float64 `json:"http_rate_server_cpu_us_per_push"` // HTTP, fixed rate
	AllocsPerPush       float64 `json:"allocs_per_push"`                  // XEP-0357, closed loop
	HTTPAllocsPerPush   float64 `json:"http_allocs_per_push"`             // HTTP, closed loop
	PushesPS            float64 `json:"pushes_per_s"`
	HTTPPushesPS        float64 `json:"http_pushes_per_s"`
	InstrPerPush        float64 `json:"instructions_per_push,omitempty"`
	HTTPInstrPerPush    float64 `json:"http_instructions_per_push,omitempty"`
	IdleInstrPerS       float64 `json:"idle_instructions_per_s,omitempty"`
	// RegInstr is the instructions of an HTTP registration of a new
	// device, counted over a window of -instructions of them after the
	// push windows.
	RegInstr float64 `json:"instructions_per_registration,omitempty"`

	Closed     *Phase `json:"closed_loop,omitempty"`
	Open       *Phase `json:"open_loop,omitempty"`
	HTTPClosed *Phase `json:"http_closed_loop,omitempty"`
	HTTPOpen   *Phase `json:"http_open_loop,omitempty"`

	APNSAccepted int     `json:"apns_accepted"`    // as Accepted, with -backend apns
	Accepted     int     `json:"service_accepted"` // pushes the push service mock accepted
	Successes    int64   `json:"successes"`
	PeakRSSMB    float64 `json:"peak_rss_mb"`
	CPUSeconds   float64 `json:"server_cpu_s"`
	LoadAvg      float64 `json:"load_avg_1m"` // of the machine at the end: how shared the cores were
	Backend      string  `json:"backend"`
	Zipf         float64 `json:"zipf,omitempty"`       // exponent of -zipf; absent: each device in turn
	HTTPBatch    int     `json:"http_batch,omitempty"` // pushes per HTTP request (-http-batch); absent: one
	Tokenless    bool    `json:"tokenless,omitempty"`  // publish IQs to device tokens (-tokenless)
}

// run runs the benchmark once and prints its table and RESULT line. The
// Result is the zero value for a soak.
func run(o options) (res Result, err error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "pushbench")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)

	if o.bin == "" {
		o.bin = filepath.Join(dir, "push-appserver")
		build := exec.Command("go", "build", "-o", o.bin, "./cmd/push-appserver")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		build.Stderr = os.Stderr
		if err := build.Run(); err != nil {
			return res, fmt.Errorf("building push-appserver: %w", err)
		}
	}

	// The APNS mock, in this process.
	p8, pub, err := apnsmock.TokenKey()
	if err != nil {
		return res, err
	}
	keyFile := filepath.Join(dir, "key.p8")
	os.WriteFile(keyFile, p8, 0o600)
	mock, err := apnsmock.New(apnsmock.Config{TokenKey: pub, KeyID: "BENCHKEY", TeamID: "BENCHTEAM", Topic: "im.bench.app", KeepRequests: 1})
	if err != nil {
		return res, err
	}
	defer mock.Close()
	accepted := mock.Accepted
	var fcmMock *fcmmock.Server
	if o.backend == "fcm" {
		if fcmMock, err = fcmmock.New("bench-project"); err != nil {
			return res, err
		}
		defer fcmMock.Close()
		fcmMock.KeepRequests(1)
		accepted = fcmMock.Accepted
	}

	xmpp, err := xmppfake.Listen("push.bench", "bench-secret")
	if err != nil {
		return res, err
	}
	defer xmpp.Close()

	httpAddr, err := freeAddr()
	if err != nil {
		return res, err
	}
	pprofAddr, _ := freeAddr()
	cache := ""
	if o.cache >= 0 {
		cache = fmt.Sprintf("registration_cache = %d", o.cache)
	}
	cfg := fmt.Sprintf(`data_dir = %q
rate_limit = 0
log_level = "warn"
pprof_listen = %q
%s
[http]
listen = %q
[[component]]
jid = "push.bench"
address = %q
secret = "bench-secret"
max_in_flight = 1024
tokenless = %t
tokenless_app = "bench"
`, filepath.Join(dir, "data"), pprofAddr, cache, httpAddr, xmpp.Addr(), o.tokenless)
	if o.dsn != "" {
		cfg += fmt.Sprintf("[database]\ndriver = \"postgres\"\ndsn = %q\n", o.dsn)
	}
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
	case "fcm":
		sa, err := fcmMock.WriteServiceAccount(dir)
		if err != nil {
			return res, err
		}
		cfg += fmt.Sprintf(`[apps.bench]
kind = "fcm"
service_account_file = %q
endpoint = %q
ca_path = %q
`, sa, fcmMock.URL, fcmMock.CADir)
	case "log":
		cfg += "[apps.bench]\nkind = \"log\"\n"
	default:
		return res, fmt.Errorf("unknown backend %q", o.backend)
	}
	cfgFile := filepath.Join(dir, "bench.toml")
	os.WriteFile(cfgFile, []byte(cfg), 0o600)

	var cg *callgrind
	var srv *exec.Cmd
	if o.count > 0 {
		cg = &callgrind{out: filepath.Join(dir, "callgrind.out")}
		if o.callgrindTo != "" {
			cg.out = o.callgrindTo
		}
		if srv, err = cg.command(o.bin, "serve", "-config", cfgFile); err != nil {
			return res, err
		}
	} else {
		srv = exec.Command(o.bin, "serve", "-config", cfgFile)
	}
	logw := io.Discard
	if o.serverLog != "" {
		f, err := os.Create(o.serverLog)
		if err != nil {
			return res, err
		}
		defer f.Close()
		logw = f
	}
	srv.Stdout, srv.Stderr = logw, logw
	if err := srv.Start(); err != nil {
		return res, err
	}
	defer func() {
		// Under valgrind the server may never finish its graceful
		// shutdown; the figures are taken by then.
		srv.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { srv.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			srv.Process.Kill()
			<-done
		}
	}()
	probe := &serverProbe{pid: srv.Process.Pid, metricsURL: "http://" + httpAddr + "/metrics", client: &http.Client{Timeout: 30 * time.Second}}

	fmt.Fprintln(os.Stderr, "waiting for the component connection ...")
	accept := 30 * time.Second
	if cg != nil {
		accept = 5 * time.Minute // valgrind starts slowly
	}
	fs, err := xmpp.Accept(accept)
	if err != nil {
		return res, err
	}
	stream := newStream(fs, "push.bench")
	stream.tokenless = o.tokenless
	defer stream.Close()

	if err := waitHTTP(ctx, "http://"+httpAddr, accept); err != nil {
		return res, err
	}
	res = Result{Backend: o.backend, Zipf: o.zipf, Tokenless: o.tokenless}
	if o.httpBatch > 1 {
		res.HTTPBatch = o.httpBatch
	}
	fmt.Fprintf(os.Stderr, "registering %d devices ...\n", o.n)
	before, clientBefore := procCPU(srv.Process.Pid), procCPU(os.Getpid())
	profiled := startProfile(o, "registrations", pprofAddr)
	devices, took, err := register(ctx, "http://"+httpAddr, 0, o.n, o.regC, o.sequential)
	profiled()
	if err != nil {
		return res, err
	}
	res.Registrations = len(devices)
	res.RegistrationsPS = float64(len(devices)) / took.Seconds()
	res.RegistrationCPUus = float64((procCPU(srv.Process.Pid) - before).Microseconds()) / float64(len(devices))
	res.RegistrationClientCPUus = float64((procCPU(os.Getpid()) - clientBefore).Microseconds()) / float64(len(devices))

	// The order of the pushes of the timed phases.
	order := devices
	if o.zipf > 0 {
		order = zipfOrder(devices, o.zipf)
	}
	if o.soak > 0 {
		fmt.Fprintf(os.Stderr, "soak: %.0f publish IQs/s for %s ...\n", o.soakRate, o.soak)
		sr, err := soak(o, probe, stream, order, os.Stdout)
		line, _ := json.Marshal(sr)
		fmt.Printf("RESULT %s\n", line)
		if accepted, ok := accepted(), soakOK(sr); o.backend != "log" && int64(accepted) != ok {
			err = errors.Join(err, fmt.Errorf("%s mock accepted %d pushes but %d were answered with success", o.backend, accepted, ok))
		}
		return res, err
	}
	if cg != nil {
		cg.pid = srv.Process.Pid
		regs := func(from, n int) (int, time.Duration, error) {
			d, took, err := register(ctx, "http://"+httpAddr, from, n, o.regC, o.sequential)
			ok := 0
			for _, dev := range d {
				if dev.secret != "" {
					ok++
				}
			}
			return ok, took, err
		}
		if err := countInstructions(o, cg, stream, newHTTPPusher("http://"+httpAddr, 1024, o.httpBatch), devices, regs, &res); err != nil {
			return res, err
		}
	} else {
		runPhases(o, probe, pprofAddr, stream, newHTTPPusher("http://"+httpAddr, 1024, o.httpBatch), order, &res)
	}
	for _, p := range []*Phase{res.Closed, res.Open, res.HTTPClosed, res.HTTPOpen} {
		if p != nil {
			res.Successes += p.OK
		}
	}
	res.Accepted = accepted()
	if o.backend == "apns" {
		res.APNSAccepted = res.Accepted
	}
	res.PeakRSSMB, res.CPUSeconds = peakRSS(srv.Process.Pid), procCPU(srv.Process.Pid).Seconds()
	res.LoadAvg = loadAverage()

	printTable(os.Stdout, res)
	line, _ := json.Marshal(res)
	fmt.Printf("RESULT %s\n", line)
	if o.backend != "log" && int64(res.Accepted) != res.Successes {
		return res, fmt.Errorf("%s mock accepted %d pushes but %d were answered with success", o.backend, res.Accepted, res.Successes)
	}
	return res, nil
}

type device struct{ node, secret, token string }

// deviceKeys returns the node and token of device i. Real devices' are
// scattered (apps make nodes from UUIDs, push services' tokens look
// random), so each registration lands at its own place in the registry's
// indexes; in order, consecutive ones share index pages, which made a
// registration cost about half as much on SQLite. Both are the same
// from run to run.
func deviceKeys(i int, sequential bool) (node, token string) {
	if sequential {
		return fmt.Sprintf("bench-%08d", i), fmt.Sprintf("%064x", i+1)
	}
	n := sha256.Sum256(fmt.Appendf(nil, "node %d", i))
	t := sha256.Sum256(fmt.Appendf(nil, "token %d", i))
	h := hex.EncodeToString(n[:16])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], hex.EncodeToString(t[:])
}

// register creates n devices over the HTTP API with c workers: devices
// from to from+n-1, so that a later call adds devices of its own.
func register(ctx context.Context, base string, from, n, c int, sequential bool) ([]device, time.Duration, error) {
	client, err := newFormClient(base, "/push_appserver/v1/register", c)
	if err != nil {
		return nil, 0, err
	}
	defer client.Close()
	devices := make([]device, n)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for range c {
		wg.Go(func() {
			var form []byte
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				node, token := deviceKeys(from+i, sequential)
				// Neither the node nor the hex token needs escaping.
				form = fmt.Appendf(form[:0], "type=bench&node=%s&token=%s", node, token)
				_, body, err := client.post(form)
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				lines := strings.Split(string(body), "\n")
				if len(lines) != 3 || lines[0] != "OK" {
					once.Do(func() { firstErr = fmt.Errorf("register %s: %q", node, body) })
					return
				}
				devices[i] = device{node: node, secret: lines[2], token: token}
			}
		})
	}
	wg.Wait()
	return devices, time.Since(start), firstErr
}

// zipfOrder returns the order in which to push to devices: a device of
// rank k (its index) is drawn with a probability proportional to
// 1/(k+1)^s, and the loops go through the order in turn. Long enough
// that no loop of ours goes round it twice in a run at today's rates,
// the same in every run (a fixed seed).
func zipfOrder(devices []device, s float64) []device {
	z := rand.NewZipf(rand.New(rand.NewPCG(1, 2)), s, 1, uint64(len(devices)-1))
	order := make([]device, max(len(devices), 1<<20))
	for i := range order {
		order[i] = devices[z.Uint64()]
	}
	return order
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

// waitHTTP waits until the server's HTTP API serves: its health page
// says RUNNING, where a server still starting says STARTING and answers
// registrations 503.
func waitHTTP(ctx context.Context, base string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(base + "/push_appserver/v1/health")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.HasPrefix(string(b), "RUNNING\n") {
				return nil
			}
			err = fmt.Errorf("health: %q", b)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("HTTP API not up: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
