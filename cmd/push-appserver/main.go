// Command push-appserver is an XMPP push app server (XEP-0357): it connects
// to XMPP servers as a component, takes device registrations over HTTP and
// ad-hoc commands, and wakes devices through APNS and FCM.
//
// Usage:
//
//	push-appserver serve [-config file] [-pprof addr]
//	push-appserver check-config [-config file]
//	push-appserver vapid-keygen -out file
//	push-appserver version
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"syscall"

	"github.com/push-appserver/push-appserver/internal/config"
	"github.com/push-appserver/push-appserver/internal/push/apns"
	"github.com/push-appserver/push-appserver/internal/push/webpush"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", os.Getenv("PUSH_APPSERVER_CONFIG"), "configuration `file` (TOML); default: built-in defaults")
	pprofAddr := fs.String("pprof", "", "serve net/http/pprof on this `address` (overrides pprof_listen; keep it on loopback)")
	switch cmd {
	case "serve", "check-config":
		if err := fs.Parse(args); err != nil {
			return 2
		}
	case "vapid-keygen":
		return vapidKeygen(args, stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "push-appserver", versionString())
		return 0
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "push-appserver: unknown command %q\n", cmd)
		usage(stderr)
		return 2
	}

	cfg, err := config.Load(*cfgPath)
	if cmd == "check-config" {
		return checkConfig(cfg, err, stdout, stderr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "push-appserver: invalid configuration:\n%v\n", err)
		return 1
	}
	if *pprofAddr != "" {
		cfg.PprofListen = *pprofAddr
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, stderr); err != nil {
		fmt.Fprintf(stderr, "push-appserver: %v\n", err)
		return 1
	}
	return 0
}

func checkConfig(cfg *config.Config, err error, stdout, stderr io.Writer) int {
	if err != nil {
		fmt.Fprintf(stderr, "configuration has problems:\n%v\n", err)
		return 1
	}
	for _, o := range cfg.Obsolete {
		fmt.Fprintf(stdout, "warning: %s is obsolete and ignored\n", o)
	}
	if cfg.Debugging {
		fmt.Fprintln(stdout, "warning: debugging is on: the settings pages show every secret; never in production")
	}
	names := make([]string, 0, len(cfg.Apps))
	for n := range cfg.Apps {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		// A production app left on the seed's default (sandbox) loses
		// every push to BadDeviceToken: say which one each app uses.
		if a := cfg.Apps[n]; a.Kind == config.KindAPNS {
			fmt.Fprintf(stdout, "app %s: APNS %s\n", n, apns.Environment(*a.Sandbox, a.Endpoint))
		}
		// A key file that exists but is no P-256 key would only fail at
		// serve; the public key is what web clients need.
		if a := cfg.Apps[n]; a.Kind == config.KindWebPush {
			key, err := webpush.LoadVAPIDKey(a.VAPIDKeyFile)
			if err != nil {
				fmt.Fprintf(stderr, "configuration has problems:\napps.%s.vapid_key_file: %v\n", n, err)
				return 1
			}
			pub, _ := webpush.PublicKeyString(key)
			fmt.Fprintf(stdout, "app %s: WebPush, VAPID public key %s\n", n, pub)
			if a.AllowPrivateEndpoints {
				fmt.Fprintf(stdout, "warning: app %s: allow_private_endpoints is on: registrations can make us POST into our own network\n", n)
			}
		}
	}
	fmt.Fprintf(stdout, "configuration OK: %d app(s), %d component(s), HTTP on %q, registry %s\n",
		len(cfg.Apps), len(cfg.Components), cfg.HTTP.Listen, cfg.Database.Path)
	return 0
}

// vapidKeygen writes a VAPID key for a webpush app and prints the public
// key web clients pass to PushManager.subscribe.
func vapidKeygen(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("vapid-keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "write the private key to this `file` (PEM, mode 0600; must not exist)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *out == "" || fs.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: push-appserver vapid-keygen -out FILE")
		return 2
	}
	pub, err := webpush.GenerateVAPIDKey(*out)
	if err != nil {
		fmt.Fprintf(stderr, "push-appserver: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "wrote %s; set vapid_key_file to it. Public key (applicationServerKey for web clients):\n", *out)
	fmt.Fprintln(stdout, pub)
	return 0
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: push-appserver <command> [-config file]

commands:
  serve          run the app server
  check-config   validate the configuration and print every problem
  vapid-keygen   -out FILE: write a VAPID key for webpush apps, print its public key
  version        print the version
`)
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "dev"
}
