package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/push-appserver/push-appserver/internal/admin"
	"github.com/push-appserver/push-appserver/internal/config"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/logpush"
)

const registrationsSynopsis = `registrations <list|show|delete|count> [flags]

  list [-type T] [-domain D] [-json] [-show-secrets]   every registration, in node order
  show NODE [-json] [-show-secrets]                     one registration, every field
  delete NODE                                           remove a registration
  count [-type T] [-domain D]                           how many there are

They work beside a running server. A running server keeps pushing to a
deleted registration it has cached for up to one minute.`

func runRegistrations(args []string, stdout, stderr io.Writer) int {
	f := newFlags("registrations", registrationsSynopsis, stdout, stderr)
	cfgPath := f.configFlag()
	var flt admin.Filter
	f.StringVar(&flt.Type, "type", "", "only registrations of this app (list, count)")
	f.StringVar(&flt.Domain, "domain", "", "only registrations of accounts of this domain, known for Conversations' register-push-* registrations (list, count)")
	asJSON := f.Bool("json", false, "JSON, one object a line (list) or one object (show)")
	showSecrets := f.Bool("show-secrets", false, "show the registrations' secrets")
	rest, code, ok := f.parse(args)
	if !ok {
		return code
	}
	if len(rest) == 0 {
		f.usage(stderr)
		return 2
	}
	verb, rest := rest[0], rest[1:]
	wantArgs := map[string]int{"list": 0, "count": 0, "show": 1, "delete": 1}
	if n, known := wantArgs[verb]; !known || len(rest) != n {
		f.usage(stderr)
		return 2
	}
	ctx, _, store, done, ok := openRegistry(*cfgPath, "registrations", stderr)
	if !ok {
		return 1
	}
	defer done()
	var err error

	switch verb {
	case "list":
		p := &admin.Printer{W: stdout, JSON: *asJSON, ShowSecrets: *showSecrets}
		err = admin.Each(ctx, store, flt, p.Print)
		if ferr := p.Flush(); err == nil {
			err = ferr
		}
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

func runSendTest(args []string, stdout, stderr io.Writer) int {
	f := newFlags("send-test", "send-test -app A -token T [-config file]\n\n"+
		"Sends one push through app A to the device token T, as the server would,\n"+
		"and prints every answer of the push service (status, headers, body) and\n"+
		"what the server makes of it.", stdout, stderr)
	cfgPath := f.configFlag()
	app := f.String("app", "", "the configured `app` to push through")
	token := f.String("token", "", "the device's push `token`")
	verbose := f.Bool("v", false, "log the backend's work (debug level) on stderr")
	showSecrets := f.Bool("show-secrets", false, "show the request's URL whole (it holds the token, or is the WebPush subscription)")
	rest, code, ok := f.parse(args)
	if !ok {
		return code
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
		b, err = newBackend(ctx, *app, a, push.NewBreaker(*app, push.BreakerOptions{}, logger), logger)
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
