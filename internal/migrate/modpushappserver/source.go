package modpushappserver

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	_ "modernc.org/sqlite" // Prosody's SQL store in SQLite
)

// storeName is the Prosody store mod_push_appserver keeps its
// registrations in, one entry per push node.
const storeName = "push_appserver"

// Record is one registration as mod_push_appserver stored it, or the reason
// an entry of its store could not be read.
type Record struct {
	Source string // file or row the record came from, for the report
	Host   string // the component's host
	Node   string // the store key: the node the user's server pushes to
	Fields map[string]any
	Err    error // the entry is unreadable; Fields is nil
}

// Source is a mod_push_appserver store.
type Source interface {
	// Count returns how many records Records will yield, for progress.
	Count(ctx context.Context) (int, error)
	// Records calls fn with every record, in a stable order.
	Records(ctx context.Context, fn func(Record) error) error
	// String names the source for messages.
	String() string
}

// FileStore is Prosody's default file storage. Dir is Prosody's data_path
// (holding <host>/push_appserver/<node>.dat), one host's folder, or the
// push_appserver folder itself.
type FileStore struct {
	Dir string
}

func (f FileStore) String() string { return "Prosody file store " + f.Dir }

// files lists the store's files with the host each belongs to, sorted.
func (f FileStore) files() ([][2]string, error) {
	st, err := os.Stat(f.Dir)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", f.Dir)
	}
	var dirs []string
	switch {
	case filepath.Base(filepath.Clean(f.Dir)) == storeName:
		dirs = []string{f.Dir}
	case isDir(filepath.Join(f.Dir, storeName)):
		dirs = []string{filepath.Join(f.Dir, storeName)}
	default:
		dirs, err = filepath.Glob(filepath.Join(f.Dir, "*", storeName))
		if err != nil {
			return nil, err
		}
	}
	if len(dirs) == 0 {
		return nil, fmt.Errorf("no %s folder in %s: give Prosody's data_path or the %s folder inside it", storeName, f.Dir, storeName)
	}
	var out [][2]string
	for _, d := range dirs {
		host := decodeName(filepath.Base(filepath.Dir(filepath.Clean(d))))
		entries, err := os.ReadDir(d)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			// Links are listed too, and read when they lead to a file
			// (readDataFile): left out, their records would vanish from
			// the import and its report.
			if e.Type().IsRegular() || e.Type()&fs.ModeSymlink != 0 {
				out = append(out, [2]string{host, filepath.Join(d, e.Name())})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i][1] < out[j][1] })
	return out, nil
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

func (f FileStore) Count(ctx context.Context) (int, error) {
	files, err := f.files()
	return len(files), err
}

func (f FileStore) Records(ctx context.Context, fn func(Record) error) error {
	files, err := f.files()
	if err != nil {
		return err
	}
	for _, hf := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		host, path := hf[0], hf[1]
		rec := Record{Source: path, Host: host}
		name := filepath.Base(path)
		if node, ok := strings.CutSuffix(name, ".dat"); ok {
			rec.Node = decodeName(node)
			rec.Fields, rec.Err = readDataFile(path)
		} else {
			rec.Err = errors.New("not a .dat file")
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
	return nil
}

func readDataFile(path string) (map[string]any, error) {
	// Not a FIFO or device a link leads to: opening one could block.
	if st, err := os.Stat(path); err != nil {
		return nil, err
	} else if !st.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(f, maxDataFile+1)); err != nil {
		return nil, err
	}
	t, err := parseLuaData(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("not a Prosody data table: %w", err)
	}
	return t, nil
}

// decodeName undoes Prosody's file name escaping (every byte that is not
// a letter or digit written as %xx).
func decodeName(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(n))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// SQLStore is Prosody's SQL storage (mod_storage_sql): table "prosody" with
// one row per field of an entry (host, user = node, store, key = field
// name, type, value).
type SQLStore struct {
	DB   *sql.DB
	Name string // for messages
	// Placeholder is the driver's parameter marker for the first argument:
	// "?" (SQLite, MySQL) or "$1" (PostgreSQL).
	Placeholder string
	// Quote quotes names: `"` (the default) or "`" (MySQL).
	Quote string
}

// query returns q with its "quoted" names quoted as the database wants.
func (s SQLStore) query(q string) string {
	if s.Quote == "" || s.Quote == `"` {
		return q
	}
	return strings.ReplaceAll(q, `"`, s.Quote)
}

func (s SQLStore) String() string { return "Prosody SQL store " + s.Name }

func (s SQLStore) Count(ctx context.Context) (int, error) {
	var n int
	err := s.DB.QueryRowContext(ctx, s.query(`SELECT COUNT(*) FROM (SELECT DISTINCT "host", "user" FROM "prosody" WHERE "store" = `+s.param()+`) AS entries`), storeName).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("counting entries: %w", err)
	}
	return n, nil
}

func (s SQLStore) param() string {
	if s.Placeholder == "" {
		return "?"
	}
	return s.Placeholder
}

func (s SQLStore) Records(ctx context.Context, fn func(Record) error) error {
	rows, err := s.DB.QueryContext(ctx, s.query(`SELECT "host", "user", "key", "type", "value" FROM "prosody"
		WHERE "store" = `+s.param()+` ORDER BY "host", "user", "key"`), storeName)
	if err != nil {
		return fmt.Errorf("reading table prosody: %w", err)
	}
	defer rows.Close()
	var cur *Record
	flush := func() error {
		if cur == nil {
			return nil
		}
		r := *cur
		cur = nil
		if r.Err != nil {
			r.Fields = nil
		}
		return fn(r)
	}
	for rows.Next() {
		var host, user, key, typ, value string
		if err := rows.Scan(&host, &user, &key, &typ, &value); err != nil {
			return fmt.Errorf("reading table prosody: %w", err)
		}
		if cur == nil || cur.Host != host || cur.Node != user {
			if err := flush(); err != nil {
				return err
			}
			cur = &Record{Source: fmt.Sprintf("host %q user %q", host, user), Host: host, Node: user, Fields: map[string]any{}}
		}
		if cur.Err != nil {
			continue
		}
		v, err := sqlValue(typ, value)
		if err != nil {
			cur.Err = fmt.Errorf("key %q: %w", key, err)
			continue
		}
		if key != "" {
			cur.Fields[key] = v
			continue
		}
		// mod_storage_sql keeps non-string keys in one JSON row with key "".
		if m, ok := v.(map[string]any); ok {
			for k, x := range m {
				if _, dup := cur.Fields[k]; !dup {
					cur.Fields[k] = x
				}
			}
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading table prosody: %w", err)
	}
	return flush()
}

// sqlValue decodes a value as mod_storage_sql's deserialize does.
func sqlValue(typ, value string) (any, error) {
	switch typ {
	case "string":
		return value, nil
	case "number":
		f, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return nil, fmt.Errorf("invalid number %q", value)
		}
		return f, nil
	case "boolean":
		switch value {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
		return nil, fmt.Errorf("invalid boolean %q", value)
	case "json":
		var v any
		if err := json.Unmarshal([]byte(value), &v); err != nil {
			return nil, fmt.Errorf("invalid json: %w", err)
		}
		return v, nil
	}
	return nil, fmt.Errorf("value type %q", typ)
}

// OpenSource opens the store at where: a directory is Prosody's file store,
// a file an SQLite database of Prosody's SQL store, a postgres:// or
// mysql:// URL Prosody's SQL store in that database. The caller closes the
// returned closer.
func OpenSource(ctx context.Context, where string) (Source, io.Closer, error) {
	if strings.HasPrefix(where, "postgres://") || strings.HasPrefix(where, "postgresql://") {
		return openPostgres(ctx, where)
	}
	if strings.HasPrefix(where, "mysql://") || strings.HasPrefix(where, "mariadb://") {
		return openMySQL(ctx, where)
	}
	st, err := os.Stat(where)
	if err != nil {
		return nil, nil, err
	}
	if st.IsDir() {
		return FileStore{Dir: where}, io.NopCloser(nil), nil
	}
	f, err := os.Open(where)
	if err != nil {
		return nil, nil, err
	}
	head := make([]byte, 16)
	_, err = io.ReadFull(f, head)
	f.Close()
	if err != nil || string(head) != "SQLite format 3\x00" {
		return nil, nil, fmt.Errorf("%s is neither a directory (Prosody's file store) nor an SQLite database (Prosody's SQL store)", where)
	}
	// Read-only and immutable off: Prosody may still be running.
	db, err := sql.Open("sqlite", "file:"+strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(where)+"?mode=ro")
	if err != nil {
		return nil, nil, err
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("opening %s: %w", where, err)
	}
	return SQLStore{DB: db, Name: where}, db, nil
}
