package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"mellium.im/xmpp/jid"

	"github.com/push-appserver/push-appserver/internal/admin"
	"github.com/push-appserver/push-appserver/internal/config"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/logpush"
)

const registrationsSynopsis = `registrations <list|show|delete|count|prune> [flags]

  list [-type T] [-domain D] [-json] [-show-secrets]   every registration, in node order
  show NODE [-json] [-show-secrets]                     one registration, every field
  delete NODE                                           remove a registration
  count [-type T] [-domain D]                           how many there are
  prune -idle DAYSd [-type T] [-yes [-all]]            the registrations not registered, renewed
        [-progress 5s]                                  or pushed to successfully for that long:
                                                        counted, and deleted with -yes (with -all
                                                        too when that would be every registration),
                                                        saying on stderr how far it has come

They work beside a running server, which drops what they delete from its
cache within a second.`

// minPruneIdle is the least -idle prune takes: an app in use renews its
// registration when it starts, which can be days apart, and a device
// pushed to now and then is kept by its successes.
const minPruneIdle = 7 * 24 * time.Hour

func runRegistrations(args []string, stdout, stderr io.Writer) int {
	f := newFlags("registrations", registrationsSynopsis, stdout, stderr)
	cfgPath := f.configFlag()
	var flt admin.Filter
	f.StringVar(&flt.Type, "type", "", "only registrations of this app (list, count)")
	f.StringVar(&flt.Domain, "domain", "", "only registrations of accounts of this domain, known for registrations made over XMPP, not over HTTP or imported (list, count)")
	idleFlag := f.String("idle", "", "prune: how long a registration has been idle, in days (\"180d\") or as a Go duration; at least 7d")
	yes := f.Bool("yes", false, "prune: delete, rather than only count")
	all := f.Bool("all", false, "prune -yes: delete even when every registration of the registry is idle, which otherwise says this host's clock or -idle is wrong")
	asJSON := f.Bool("json", false, "JSON, one object a line (list) or one object (show)")
	showSecrets := f.Bool("show-secrets", false, "show the registrations' secrets")
	progressEvery := f.progressFlag()
	rest, code, ok := f.parse(args)
	if !ok {
		return code
	}
	if len(rest) == 0 {
		f.usage(stderr)
		return 2
	}
	verb, rest := rest[0], rest[1:]
	wantArgs := map[string]int{"list": 0, "count": 0, "show": 1, "delete": 1, "prune": 0}
	if n, known := wantArgs[verb]; !known || len(rest) != n {
		f.usage(stderr)
		return 2
	}
	var idle time.Duration
	if verb == "prune" {
		var err error
		if idle, err = parseIdle(*idleFlag); err != nil {
			fmt.Fprintf(stderr, "push-appserver registrations prune: -idle: %v\n", err)
			return 2
		}
		if flt.Domain != "" {
			fmt.Fprintln(stderr, "push-appserver registrations prune: -domain is not supported")
			return 2
		}
	}
	if flt.Domain != "" {
		// The registry holds an account's domain as the commands
		// normalised it (lower case, an IDN as its U-label, no final
		// dot): the operator's spelling, copied from a log or a user's
		// report, is compared as JIDs compare it, or a domain with
		// registrations would count none.
		j, err := jid.Parse(flt.Domain)
		if err != nil || j.Localpart() != "" || j.Resourcepart() != "" {
			fmt.Fprintf(stderr, "push-appserver registrations %s: -domain: want an XMPP domain such as example.org, got %q\n", verb, flt.Domain)
			return 2
		}
		flt.Domain = j.Domainpart()
	}
	cfg, ok := loadRegistryConfig(*cfgPath, stderr)
	if !ok {
		return 1
	}
	ctx, store, done, ok := openExisting(cfg, "registrations", stderr)
	if !ok {
		return 1
	}
	defer done()
	var err error

	switch verb {
	case "list":
		err = admin.List(ctx, store, flt, &admin.Printer{W: stdout, JSON: *asJSON, ShowSecrets: *showSecrets})
	case "count":
		var n int
		if n, err = admin.Count(ctx, store, flt); err == nil {
			fmt.Fprintln(stdout, n)
		}
	case "show":
		r, gerr := store.Get(ctx, rest[0])
		if err = gerr; err == nil {
			err = admin.Show(stdout, r, *asJSON, *showSecrets)
		}
	case "delete":
		r, derr := admin.Delete(ctx, store, rest[0])
		if err = derr; err == nil {
			fmt.Fprintf(stdout, "deleted %s (type %s)\n", r.Node, r.Type)
		}
	case "prune":
		lines := newProgressLines(stderr, "push-appserver registrations prune", *progressEvery)
		err = prune(ctx, stdout, lines, store, flt.Type, time.Now().Add(-idle), *yes, *all)
	}
	if admin.IsNotFound(err) {
		fmt.Fprintf(stderr, "push-appserver registrations %s: no registration %q\n", verb, rest[0])
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "push-appserver registrations %s: %v\n", verb, err)
		return 1
	}
	return 0
}

// parseIdle reads prune's -idle: days ("180d") or a Go duration, at
// least minPruneIdle.
func parseIdle(s string) (time.Duration, error) {
	if s == "" {
		return 0, errors.New("required, e.g. -idle 180d")
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil {
			return 0, fmt.Errorf("not a number of days: %q", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("not a duration: %q", s)
		}
	}
	if d < minPruneIdle {
		return 0, fmt.Errorf("%s is less than 7d: an app in use renews its registration only when it starts", s)
	}
	return d, nil
}

// prune counts the registrations idle since before, by type, and deletes
// them when del is set, unless that is every registration of the
// registry and all is not set: a service in use has some device active
// within days, so a registry idle to the last registration says rather
// that this host's clock runs ahead (stepped forward by a wrong NTP
// server or a resumed VM, every registration looks idle) or that -idle
// is not what was meant, and a deletion is not to be undone.
//
// lines hears how far each read of the registry has come, of how many
// registrations, counted at the start (one query, which the check of
// every registration takes anyway).
func prune(ctx context.Context, w io.Writer, lines *progressLines, store admin.Store, typ string, before time.Time, del, all bool) error {
	var n map[string]int
	var err error
	whole := -1
	if lines.on() || del && !all {
		if whole, err = admin.Count(ctx, store, admin.Filter{}); err != nil {
			return err
		}
	}
	if del && !all {
		if err := everyIdle(ctx, store, before, whole, lines.pass("checking that not every registration is idle", whole, "idle")); err != nil {
			return err
		}
	}
	if del {
		n, err = admin.Prune(ctx, store, typ, before, lines.pass("", whole, "deleted"))
	} else {
		n, err = admin.Idle(ctx, store, typ, before, lines.pass("", whole, "idle"))
	}
	total := 0
	for _, c := range n {
		total += c
	}
	verb := "idle"
	if del {
		verb = "deleted, idle"
	}
	fmt.Fprintf(w, "%d registrations %s since %s (not registered, renewed or pushed to successfully since)\n", total, verb, before.UTC().Format(time.RFC3339))
	for _, t := range slices.Sorted(maps.Keys(n)) {
		fmt.Fprintf(w, "  %s\t%d\n", t, n[t])
	}
	if !del && err == nil && total > 0 {
		fmt.Fprintln(w, "nothing deleted: run again with -yes to delete them")
	}
	return err
}

// everyIdle fails when every registration of store, total of them, is
// idle since before (see prune).
func everyIdle(ctx context.Context, store admin.Store, before time.Time, total int, progress admin.Progress) error {
	if total == 0 {
		return nil
	}
	idle, err := admin.Idle(ctx, store, "", before, progress)
	if err != nil {
		return err
	}
	n := 0
	for _, c := range idle {
		n += c
	}
	if n < total {
		return nil
	}
	return fmt.Errorf("every registration of the registry (%d) is idle since %s, so none was deleted: a service in use has devices active within days, so check this host's clock (it reads %s) and -idle; run again with -all to delete them all",
		total, before.UTC().Format(time.RFC3339), time.Now().UTC().Format(time.RFC3339))
}

func runSendTest(args []string, stdout, stderr io.Writer) int {
	f := newFlags("send-test", "send-test -app A (-token T | -token-file F) [-config file]\n\n"+
		"Sends one push through app A to the device token T, as the server would,\n"+
		"and prints every answer of the push service (status, headers, body) and\n"+
		"what the server makes of it.", stdout, stderr)
	cfgPath := f.configFlag()
	app := f.String("app", "", "the configured `app` to push through")
	token := f.String("token", "", "the device's push `token` (other users of the host see it in the process list: -token-file keeps it out)")
	tokenFile := f.String("token-file", "", "read the token from this `file`'s first line; - reads it from standard input")
	verbose := f.Bool("v", false, "log the backend's work (debug level) on stderr")
	showSecrets := f.Bool("show-secrets", false, "show the request's URL whole (it holds the token, or is the WebPush subscription)")
	rest, code, ok := f.parse(args)
	if !ok {
		return code
	}
	if *tokenFile != "" && *token == "" {
		t, err := readTokenFile(*tokenFile, os.Stdin)
		if err != nil {
			fmt.Fprintf(stderr, "push-appserver send-test: -token-file: %v\n", err)
			return 1
		}
		*token = t
	}
	if len(rest) > 0 || *app == "" || *token == "" {
		f.usage(stderr)
		return 2
	}
	cfg, ok := loadConfig(*cfgPath, stderr)
	if !ok {
		return 1
	}
	a := cfg.Apps[*app]
	if a == nil {
		fmt.Fprintf(stderr, "push-appserver send-test: no app %q in the configuration\n", *app)
		return 1
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})).With("app", *app)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	prio, err := push.ParsePriority(a.Priority)
	if err != nil {
		fmt.Fprintf(stderr, "push-appserver send-test: apps.%s: %v\n", *app, err)
		return 1
	}
	var b push.Backend
	if a.Kind == config.KindLog {
		b = logpush.New(logger)
	} else {
		b, err = newBackend(ctx, *app, a, push.NewBreaker(*app, push.BreakerOptions{}, logger), nil, webPushLimits{}, logger)
	}
	if err != nil {
		fmt.Fprintf(stderr, "push-appserver send-test: apps.%s: %v\n", *app, err)
		return 1
	}
	fmt.Fprintf(stdout, "sending a test push through app %s (kind %s)\n", *app, a.Kind)
	t := admin.TestPush{App: *app, Backend: b, Priority: prio, Token: *token,
		URLIsSecret: a.Kind == config.KindWebPush, ShowSecrets: *showSecrets}
	if err := admin.SendTest(ctx, stdout, t); err != nil {
		return 1
	}
	return 0
}

// readTokenFile reads a device token from path's first line, or from
// stdin for "-": a token on the command line is in the process list, for
// every user of the host to read.
func readTokenFile(path string, stdin io.Reader) (string, error) {
	r := stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return "", err
		}
		defer f.Close()
		r = f
	}
	// A WebPush subscription is the longest token, a few KiB.
	line, err := bufio.NewReader(io.LimitReader(r, 64<<10)).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", err
	}
	if line = strings.TrimSpace(line); line == "" {
		return "", errors.New("no token in its first line")
	}
	return line, nil
}
