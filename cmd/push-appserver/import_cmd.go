package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/push-appserver/push-appserver/internal/migrate/modpushappserver"
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
	f := newFlags("import", "import mod_push_appserver [flags] PATH\n\n"+
		"PATH is Prosody's data_path (file store), the push_appserver folder in it,\n"+
		"Prosody's SQLite database (storage = \"sql\"), or the URL of its PostgreSQL\n"+
		"(postgres://user:password@host/db) or MySQL/MariaDB database\n"+
		"(mysql://user:password@host[:port]/db, or mysql://user:password@/db?socket=PATH).", stdout, stderr)
	cfgPath := f.configFlag()
	types := typeMap{}
	f.Var(types, "type-map", "rename a type: `old=new` (repeatable, or comma-separated), e.g. apns=ios")
	dryRun := f.Bool("dry-run", false, "only report what would be imported")
	quiet := f.Bool("quiet", false, "no progress line and no line per skipped record")
	rest, code, ok := f.parse(args)
	if !ok {
		return code
	}
	if len(rest) != 2 || rest[0] != "mod_push_appserver" {
		f.usage(stderr)
		return 2
	}
	ctx, cfg, store, done, ok := openRegistry(*cfgPath, "import", stderr)
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
	fmt.Fprintf(stdout, "importing from %s into %s\n", src, cfg.Database.Path)
	sum, err := modpushappserver.Import(ctx, src, store, opts)
	sum.WriteTo(stdout)
	if err != nil {
		fmt.Fprintf(stderr, "push-appserver import: %v\n", err)
		return 1
	}
	if sum.Imported+sum.Updated > 0 && !*dryRun {
		fmt.Fprintln(stdout, "a running push-appserver sees changed registrations within its cache lifetime (one minute)")
	}
	return 0
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
