// Command push-appserver is an XMPP push app server (XEP-0357): it connects
// to XMPP servers as a component, takes device registrations over HTTP and
// ad-hoc commands, and wakes devices through APNS and FCM.
//
// Usage:
//
//	push-appserver serve [-config file] [-pprof addr]
//	push-appserver reload [-config file] [-pid N]
//	push-appserver check-config [-config file]
//	push-appserver vapid-keygen -out file
//	push-appserver import mod_push_appserver [-config file] [-type-map a=b] [-dry-run] PATH
//	push-appserver import registry [-config file] [-dry-run] SOURCE
//	push-appserver registrations list|show|delete|count [flags]
//	push-appserver send-test -app A -token T [-config file]
//	push-appserver version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/push-appserver/push-appserver/internal/config"
	"github.com/push-appserver/push-appserver/internal/push/webpush"
	"github.com/push-appserver/push-appserver/internal/registry"
)

// Set at build time with -ldflags "-X main.version=... -X main.commit=...
// -X main.buildDate=...".
var (
	version   = ""
	commit    = ""
	buildDate = ""
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type command struct {
	name, summary string
	run           func(args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"init", "write a new installation's configuration, with the XMPP server's side", runInit},
		{"serve", "run the app server", runServe},
		{"reload", "tell the running server to reload its configuration (as SIGHUP)", runReload},
		{"check-config", "validate the configuration and print every problem", runCheckConfig},
		{"vapid-keygen", "write a VAPID key for a webpush app", vapidKeygen},
		{"import", "import registrations from mod_push_appserver or another registry", runImport},
		{"registrations", "list, show, count, delete or prune registrations", runRegistrations},
		{"backup", "write a consistent copy of the SQLite registry", runBackup},
		{"restore", "put a backup in place of the SQLite registry (server stopped)", runRestore},
		{"send-test", "send one test push through an app and print the answer", runSendTest},
		{"version", "print version, commit, Go version and build date", runVersion},
	}
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	name, args := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return 0
	case "-version", "--version":
		name = "version"
	}
	for _, c := range commands() {
		if c.name == name {
			return c.run(args, stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "push-appserver: unknown command %q\n", name)
	usage(stderr)
	return 2
}

// vapidKeygen writes a VAPID key for a webpush app and prints the public
// key web clients pass to PushManager.subscribe.
func vapidKeygen(args []string, stdout, stderr io.Writer) int {
	f := newFlags("vapid-keygen", "vapid-keygen -out file", stdout, stderr)
	out := f.String("out", "", "write the private key to this `file` (PEM, mode 0600; must not exist)")
	rest, code, ok := f.parse(args)
	if !ok {
		return code
	}
	if *out == "" || len(rest) != 0 {
		f.usage(stderr)
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
	fmt.Fprint(w, "usage: push-appserver <command> [flags]\n\ncommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-14s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, "\n\"push-appserver <command> -h\" lists a command's flags.\n")
}

// flags is one subcommand's flag set: -h prints only its flags, to stdout,
// and exits 0.
type flags struct {
	*flag.FlagSet
	synopsis string
	stdout   io.Writer
	stderr   io.Writer
}

func newFlags(name, synopsis string, stdout, stderr io.Writer) *flags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return &flags{FlagSet: fs, synopsis: synopsis, stdout: stdout, stderr: stderr}
}

func (f *flags) configFlag() *string {
	return f.String("config", os.Getenv("PUSH_APPSERVER_CONFIG"), "configuration `file` (TOML); default: $PUSH_APPSERVER_CONFIG, else built-in defaults")
}

func (f *flags) usage(w io.Writer) {
	fmt.Fprintf(w, "usage: push-appserver %s\n", f.synopsis)
	n := 0
	f.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprint(w, "\nflags:\n")
		f.SetOutput(w)
		f.PrintDefaults()
		f.SetOutput(io.Discard)
	}
}

// parse parses args, flags and arguments in any order, and returns the
// arguments. ok false means return code.
func (f *flags) parse(args []string) (rest []string, code int, ok bool) {
	for {
		err := f.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			f.usage(f.stdout)
			return nil, 0, false
		}
		if err != nil {
			fmt.Fprintf(f.stderr, "push-appserver %s: %v\n", f.Name(), err)
			f.usage(f.stderr)
			return nil, 2, false
		}
		args = f.Args()
		if len(args) == 0 {
			return rest, 0, true
		}
		if args[0] == "--" {
			return append(rest, args[1:]...), 0, true
		}
		rest = append(rest, args[0])
		args = args[1:]
	}
}

// loadConfig loads the configuration, printing its problems.
func loadConfig(path string, stderr io.Writer) (*config.Config, bool) {
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintf(stderr, "push-appserver: invalid configuration:\n%v\n", err)
		return nil, false
	}
	return cfg, true
}

// loadRegistryConfig is loadConfig for the commands that work on the
// registry alone: a component secret they do not use, such as an env:
// variable only the service's environment file sets, does not stop them.
func loadRegistryConfig(path string, stderr io.Writer) (*config.Config, bool) {
	cfg, err := config.Load(path)
	if err != nil && cfg != nil && config.OnlyComponentSecrets(err) {
		return cfg, true
	}
	if err != nil {
		fmt.Fprintf(stderr, "push-appserver: invalid configuration:\n%v\n", err)
		return nil, false
	}
	return cfg, true
}

func runVersion(args []string, stdout, stderr io.Writer) int {
	f := newFlags("version", "version", stdout, stderr)
	if rest, code, ok := f.parse(args); !ok {
		return code
	} else if len(rest) > 0 {
		f.usage(stderr)
		return 2
	}
	fmt.Fprintf(stdout, "push-appserver %s\ncommit %s\n%s %s/%s\nbuilt %s\n", versionString(), commitString(), runtime.Version(), runtime.GOOS, runtime.GOARCH, orUnknown(buildDate))
	return 0
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func commitString() string {
	if commit != "" {
		return commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" {
			if dirty {
				rev += "-dirty"
			}
			return rev
		}
	}
	return "unknown"
}

func orUnknown(s string) string {
	if strings.TrimSpace(s) == "" {
		return "unknown"
	}
	return s
}

// cliLogger is the log of a one-shot command: warnings and errors only.
func cliLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// openExisting is openConfigured for a command that reads the server's
// registry: opening an SQLite file that is not there would make an
// empty registry, and the command would report on it (a -config that is
// not the server's, a mistyped data_dir), leaving a file behind that,
// made by root, the server's user could not open.
func openExisting(cfg *config.Config, name string, stderr io.Writer) (ctx context.Context, store registry.Store, done func(), ok bool) {
	if cfg.Database.Driver == "sqlite" {
		if _, err := os.Stat(cfg.Database.Path); err != nil {
			fmt.Fprintf(stderr, "push-appserver %s: no registry at %s (is -config the server's?): %v\n", name, cfg.Database.Path, err)
			return nil, nil, nil, false
		}
	}
	return openConfigured(cfg, name, stderr)
}

// openConfigured opens cfg's registry for a one-shot command, with a
// context that ends on SIGINT or SIGTERM; done releases them. ok false:
// the problem was printed.
func openConfigured(cfg *config.Config, name string, stderr io.Writer) (ctx context.Context, store registry.Store, done func(), ok bool) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	store, err := openStore(ctx, cfg, cliLogger(stderr))
	if err != nil {
		stop()
		fmt.Fprintf(stderr, "push-appserver %s: %v\n", name, err)
		return nil, nil, nil, false
	}
	return ctx, store, func() { store.Close(); stop() }, true
}
