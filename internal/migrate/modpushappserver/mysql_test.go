package modpushappserver

import (
	"database/sql"
	"strings"
	"testing"

	_ "github.com/go-sql-driver/mysql"
)

// Prosody's mod_storage_sql on MySQL or MariaDB: the table as Prosody
// creates it there (TEXT columns, MEDIUMTEXT values, utf8mb4 with binary
// collation, a prefix index), read over TCP with a user and a password.
func TestImportMySQLStore(t *testing.T) {
	d := mdb.DB(t)
	db, err := sql.Open("mysql", d.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{
		"CREATE TABLE `prosody` (`host` TEXT NOT NULL, `user` TEXT NOT NULL, `store` TEXT NOT NULL, `key` TEXT NOT NULL," +
			" `type` TEXT NOT NULL, `value` MEDIUMTEXT NOT NULL) CHARACTER SET 'utf8mb4' COLLATE 'utf8mb4_bin'",
		"CREATE INDEX `prosody_index` ON `prosody` (`host`(20), `user`(20), `store`(20), `key`(20))",
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range [][]string{
		{"n1", "type", "string", "apns"}, {"n1", "token", "string", "abcd"}, {"n1", "secret", "string", secret1},
		{"n1", "registered", "string", "2017-03-17T02:10:21Z"},
		{"n2", "type", "string", "apns"}, {"n2", "token", "string", ""}, {"n2", "secret", "string", secret1},
		// Non-string keys go into one JSON row with key "".
		{"ñ3", "", "json", `{"type":"fcm","token":"tök","secret":"` + secret1 + `"}`},
		// Another store of the same component is not ours.
		{"n4", "type", "string", "apns"},
	} {
		store := "push_appserver"
		if r[0] == "n4" {
			store = "roster"
		}
		if _, err := db.Exec("INSERT INTO `prosody` VALUES ('push.example.org', ?, ?, ?, ?, ?)", r[0], store, r[1], r[2], r[3]); err != nil {
			t.Fatal(err)
		}
	}
	src, closer, err := OpenSource(ctx, d.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	if n, err := src.Count(ctx); err != nil || n != 3 {
		t.Fatalf("count: %d %v", n, err)
	}
	dst := openRegistry(t)
	sum, err := Import(ctx, src, dst, Options{Apps: []string{"apns", "fcm"}})
	if err != nil || sum.Imported != 2 || sum.Skipped["empty token: there is no device to push to"] != 1 {
		t.Fatalf("%+v %v", sum, err)
	}
	if r, err := dst.Get(ctx, "n1"); err != nil || r.Secret != secret1 || r.Token != "abcd" || r.Type != "apns" || r.Registered.Year() != 2017 {
		t.Fatalf("n1: %+v %v", r, err)
	}
	if r, err := dst.Get(ctx, "ñ3"); err != nil || r.Secret != secret1 || r.Token != "tök" || r.Type != "fcm" {
		t.Fatalf("ñ3: %+v %v", r, err)
	}

	// A wrong password is refused, and the error does not show it.
	bad := strings.Replace(d.URL, "@127.0.0.1", "x@127.0.0.1", 1)
	if _, _, err := OpenSource(ctx, bad); err == nil || strings.Contains(err.Error(), "x@") || strings.Contains(err.Error(), d.Password) {
		t.Fatalf("wrong password: %v", err)
	}
}

func TestMySQLURL(t *testing.T) {
	for _, tt := range []struct {
		url, net, addr, user, pass, db, err string
	}{
		{url: "mysql://prosody:s%40cret@db.example.org/prosody", net: "tcp", addr: "db.example.org:3306", user: "prosody", pass: "s@cret", db: "prosody"},
		{url: "mariadb://prosody:pw@127.0.0.1:3307/p", net: "tcp", addr: "127.0.0.1:3307", user: "prosody", pass: "pw", db: "p"},
		{url: "mysql://prosody:pw@[::1]/p", net: "tcp", addr: "[::1]:3306", user: "prosody", pass: "pw", db: "p"},
		{url: "mysql://prosody@/p?socket=/run/mysqld/mysqld.sock", net: "unix", addr: "/run/mysqld/mysqld.sock", user: "prosody", db: "p"},
		{url: "mysql://prosody:pw@localhost/p?socket=/run/mysqld/mysqld.sock", net: "unix", addr: "/run/mysqld/mysqld.sock", user: "prosody", pass: "pw", db: "p"},
		{url: "mysql://prosody:pw@db/", err: "names no database"},
		{url: "mysql://prosody:pw@/p", err: "names no host"},
		{url: "mysql://prosody:pw@db/p?socket=/s", err: "both a host and a socket"},
		{url: "mysql://prosody:pw@db/p?charset=latin1", err: "unknown parameter"},
		{url: "mysql://prosody:pw@db/p?tls=maybe", err: "tls="},
		{url: "mysql://prosody:p w%zz@db/p", err: "not a valid MySQL connection URL"},
	} {
		cfg, err := mysqlConfig(tt.url)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) || strings.Contains(err.Error(), "pw") {
				t.Errorf("%s: %v, want an error with %q (and no password)", tt.url, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.url, err)
			continue
		}
		if cfg.Net != tt.net || cfg.Addr != tt.addr || cfg.User != tt.user || cfg.Passwd != tt.pass || cfg.DBName != tt.db {
			t.Errorf("%s: %s %s user %q pass %q db %q", tt.url, cfg.Net, cfg.Addr, cfg.User, cfg.Passwd, cfg.DBName)
		}
	}
}
