package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/push-appserver/push-appserver/internal/admin"
	"github.com/push-appserver/push-appserver/internal/config"
	"github.com/push-appserver/push-appserver/internal/migrate/modpushappserver"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/registry/postgres"
	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
)

// typeMap is a repeatable -type-map old=new flag.
type typeMap map[string]string

func (m typeMap) String() string {
	var parts []string
	for k, v := range m {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func (m typeMap) Set(s string) error {
	for _, pair := range strings.Split(s, ",") {
		from, to, ok := strings.Cut(pair, "=")
		if !ok || from == "" || to == "" {
			return fmt.Errorf("want old=new, got %q", pair)
		}
		m[from] = to
	}
	return nil
}

func runImport(args []string, stdout, stderr io.Writer) int {
	f := newFlags("import", "import mod_push_appserver [flags] PATH\n"+
		"       import registry [flags] SOURCE\n\n"+
		"mod_push_appserver: PATH is Prosody's data_path (file store), the push_appserver\n"+
		"folder in it, Prosody's SQLite database (storage = \"sql\"), or the URL of its\n"+
		"PostgreSQL (postgres://user:password@host/db) or MySQL/MariaDB database\n"+
		"(mysql://user:password@host[:port]/db, or mysql://user:password@/db?socket=PATH).\n\n"+
		"registry: SOURCE is another push-appserver registry, an SQLite file (such as\n"+
		"data/registry.db or a backup) or a PostgreSQL URL; every registration in it is\n"+
		"copied into the configured registry as it is, secret, owner and push outcomes\n"+
		"included, with the salt their account and device hashes need; how far it has\n"+
		"come goes to stderr every -progress (a line each time).\n\n"+
		"A URL with a password is readable by every user of this machine (ps) while the\n"+
		"import runs: put it in an environment variable or a file of your own and give\n"+
		"env:NAME or file:/path as PATH or SOURCE.", stdout, stderr)
	cfgPath := f.configFlag()
	types := typeMap{}
	f.Var(types, "type-map", "rename a type: `old=new` (repeatable, or comma-separated), e.g. apns=ios")
	dryRun := f.Bool("dry-run", false, "only report what would be imported")
	quiet := f.Bool("quiet", false, "no progress line and no line per skipped record")
	progressEvery := f.progressFlag()
	rest, code, ok := f.parse(args)
	if !ok {
		return code
	}
	if len(rest) == 2 {
		source, err := importSource(rest[1], stderr)
		if err != nil {
			fmt.Fprintf(stderr, "push-appserver import: %s: %v\n", rest[1], err)
			return 1
		}
		rest[1] = source
	}
	if len(rest) == 2 && rest[0] == "registry" {
		if len(types) > 0 {
			fmt.Fprintln(stderr, "push-appserver import registry: -type-map is for mod_push_appserver: a registry is copied as it is")
			return 2
		}
		every := *progressEvery
		if *quiet {
			every = 0
		}
		return importRegistry(*cfgPath, rest[1], *dryRun, newProgressLines(stderr, "push-appserver import registry", every), stdout, stderr)
	}
	if len(rest) != 2 || rest[0] != "mod_push_appserver" {
		f.usage(stderr)
		return 2
	}
	cfg, ok := loadRegistryConfig(*cfgPath, stderr)
	if !ok {
		return 1
	}
	ctx, store, done, ok := openTarget(cfg, *dryRun, "import", stderr)
	if !ok {
		return 1
	}
	defer done()
	src, closer, err := modpushappserver.OpenSource(ctx, rest[1])
	if err != nil {
		fmt.Fprintf(stderr, "push-appserver import: %v\n", err)
		return 1
	}
	defer closer.Close()

	opts := modpushappserver.Options{TypeMap: types, DryRun: *dryRun}
	for name := range cfg.Apps {
		opts.Apps = append(opts.Apps, name)
	}
	if !*quiet {
		opts.Report = stderr
		if isTerminal(stderr) {
			opts.Progress = stderr
		}
	}
	fmt.Fprintf(stdout, "importing from %s into %s\n", src, registryName(cfg))
	sum, err := modpushappserver.Import(ctx, src, store, opts)
	sum.WriteTo(stdout)
	if err != nil {
		fmt.Fprintf(stderr, "push-appserver import: %v\n", err)
		return 1
	}
	if sum.Imported+sum.Updated > 0 && !*dryRun {
		fmt.Fprintln(stdout, "a running push-appserver sees the changed registrations within a second")
	}
	return 0
}

// importSource is the source an import's PATH or SOURCE argument names.
// A database URL carries its password, and a process's arguments are
// readable by every user of the machine (ps, /proc/PID/cmdline) for as
// long as the import runs, which for a large registry is minutes: so the
// argument may be env:NAME or file:/path, resolved as the configuration's
// secrets are, and a literal URL with a password is taken with a warning.
func importSource(arg string, stderr io.Writer) (string, error) {
	if strings.HasPrefix(arg, "env:") || strings.HasPrefix(arg, "file:") {
		v, err := config.ResolveSecret(arg)
		if err != nil {
			return "", err
		}
		// file: names a file holding the URL, not the database (an
		// SQLite file's first line is binary).
		if v == "" || !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
			return "", errors.New("holds no URL or path (file:/path names a file whose first line is the source)")
		}
		return v, nil
	}
	if u, err := url.Parse(arg); err == nil && u.Scheme != "" && u.User != nil {
		if _, ok := u.User.Password(); ok {
			fmt.Fprintln(stderr, "push-appserver import: warning: the password in the source URL is readable by every user of this machine while the import runs; put the URL in an environment variable and give env:NAME (or in a file: file:/path)")
		}
	}
	return arg, nil
}

// isTerminal tells whether w is a terminal, for progress lines that
// rewrite themselves.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// registryName names the configured registry for a person: its file, or
// PostgreSQL (whose DSN may hold a password).
func registryName(cfg *config.Config) string {
	if cfg.Database.Driver == "postgres" {
		return "PostgreSQL (database.dsn)"
	}
	return cfg.Database.Path
}

// importRegistry copies the registrations of the push-appserver registry
// at source into the configured one (admin.Copy), telling lines how far
// it has come.
func importRegistry(cfgPath, source string, dryRun bool, lines *progressLines, stdout, stderr io.Writer) int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "push-appserver import registry: "+format+"\n", args...)
		return 1
	}
	cfg, ok := loadRegistryConfig(cfgPath, stderr)
	if !ok {
		return 1
	}
	isURL := strings.HasPrefix(source, "postgres://") || strings.HasPrefix(source, "postgresql://")
	if !isURL {
		// sqlite.Open would make an empty registry of a mistyped path.
		st, err := os.Stat(source)
		if err != nil {
			return fail("%v", err)
		}
		if !st.Mode().IsRegular() {
			return fail("%s is not a file", source)
		}
		if cfg.Database.Driver == "sqlite" && sameFile(source, cfg.Database.Path) {
			return fail("%s is the configured registry itself", source)
		}
	} else if cfg.Database.Driver == "postgres" {
		if dsn, err := config.ResolveSecret(cfg.Database.DSN); err == nil && dsn == source {
			return fail("the source is the configured registry itself")
		}
	}
	ctx, dst, done, ok := openTarget(cfg, dryRun, "import registry", stderr)
	if !ok {
		return 1
	}
	defer done()
	var src registry.Store
	var err error
	if isURL {
		src, err = postgres.Open(ctx, source, postgres.Options{StatementTimeout: cfg.Database.StatementTimeout.D(), Logger: cliLogger(stderr)})
	} else {
		// A copy: the source (a backup, another server's registry)
		// is read, never migrated or re-moded.
		src, err = sqlite.OpenCopy(ctx, source, cfg.DataDir)
	}
	if err != nil {
		return fail("opening the source: %v", err)
	}
	defer src.Close()
	name := source
	if isURL {
		name = "PostgreSQL"
	}
	verb := "copying"
	if dryRun {
		verb = "would copy (dry run)"
	}
	fmt.Fprintf(stdout, "%s registrations from %s into %s\n", verb, name, registryName(cfg))
	total := -1
	if lines.on() {
		// Only for the progress lines, which say "of how many": a
		// source that cannot count fails the copy's first read too.
		if n, err := src.Count(ctx); err == nil {
			total = n
		}
	}
	did := "copied"
	if dryRun {
		did = "to copy"
	}
	sum, err := admin.Copy(ctx, dst, src, dryRun, lines.pass("", total, did))
	sum.WriteTo(stdout)
	if err != nil {
		return fail("%v", err)
	}
	if !dryRun && sum.Total() > 0 {
		fmt.Fprintln(stdout, "a server running on the target serves them at once; registrations made on the source from now on are not copied: stop its servers and run this again before moving them")
	}
	return 0
}

// sameFile tells whether paths a and b name the same file.
func sameFile(a, b string) bool {
	sa, err := os.Stat(a)
	if err != nil {
		return false
	}
	sb, err := os.Stat(b)
	return err == nil && os.SameFile(sa, sb)
}

// openTarget opens the configured registry for an import, or for a dry
// run, which writes nothing, a copy of it (an empty one where there is
// none yet: made by root, a registry the server's user could not open).
func openTarget(cfg *config.Config, dryRun bool, name string, stderr io.Writer) (ctx context.Context, store registry.Store, done func(), ok bool) {
	if !dryRun || cfg.Database.Driver != "sqlite" {
		return openConfigured(cfg, name, stderr)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if _, err := os.Stat(cfg.Database.Path); errors.Is(err, fs.ErrNotExist) {
		return ctx, memory.New(), stop, true
	}
	s, err := sqlite.OpenCopy(ctx, cfg.Database.Path, cfg.DataDir)
	if err == nil {
		return ctx, s, func() { s.Close(); stop() }, true
	}
	stop()
	fmt.Fprintf(stderr, "push-appserver %s: opening a copy of the registry: %v\n", name, err)
	return nil, nil, nil, false
}
