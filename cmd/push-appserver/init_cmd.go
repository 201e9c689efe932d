package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/push-appserver/push-appserver/deploy"
)

// initFile is one file init writes.
type initFile struct {
	name, text string
	// group is the group of the service that reads the file: it gets
	// the file, readable (0640), where the group exists; elsewhere the
	// file stays its owner's alone (0600).
	group string
}

// lookupGroup returns the ID of a group, false where there is none.
type lookupGroup func(name string) (gid int, ok bool)

func systemGroup(name string) (int, bool) {
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, false
	}
	gid, err := strconv.Atoi(g.Gid)
	return gid, err == nil
}

// runInit writes a new installation's configuration: push-appserver's,
// a component secret from crypto/rand, and the Prosody and ejabberd
// sides of the component with the same secret, so that the two ends
// match from the start.
func runInit(args []string, stdout, stderr io.Writer) int {
	f := newFlags("init", "init -jid push.example.org -domain example.org [-address 127.0.0.1:5347] [-dir .]", stdout, stderr)
	jid := f.String("jid", "", "the component's `JID`, a name users' servers reach over server-to-server XMPP (give it DNS like any XMPP domain)")
	domain := f.String("domain", "", "the users' XMPP `domain` on the server the component connects to, where mod_cloud_notify is enabled")
	address := f.String("address", "127.0.0.1:5347", "the XMPP server's component port, `host:port`")
	dir := f.String("dir", ".", "`directory` to write the files into; none of them may exist")
	rest, code, ok := f.parse(args)
	if !ok {
		return code
	}
	if len(rest) != 0 || *jid == "" || *domain == "" {
		f.usage(stderr)
		return 2
	}
	if err := initFiles(*jid, *domain, *address, *dir, systemGroup, stdout); err != nil {
		fmt.Fprintf(stderr, "push-appserver init: %v\n", err)
		return 1
	}
	return 0
}

func initFiles(jid, domain, address, dir string, group lookupGroup, stdout io.Writer) error {
	for _, name := range []struct{ what, v string }{{"-jid", jid}, {"-domain", domain}} {
		if strings.ContainsAny(name.v, " \t\r\n\"'\\/@{}") {
			return fmt.Errorf("%s %q: a domain name is wanted", name.what, name.v)
		}
	}
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("-address %q: %w", address, err)
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return err
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	secret := hex.EncodeToString(b)
	secretFile := filepath.Join(dir, "component-secret")
	setup, err := deploy.NewSetup(deploy.Values{Domain: domain, Component: jid, Secret: secret}, address, secretFile)
	if err != nil {
		return err
	}
	// The XMPP servers' files hold the secret too. The unit runs as
	// push-appserver, Prosody and ejabberd as users of their own: a file
	// of root's alone would keep each from starting.
	files := []initFile{
		{"push-appserver.toml", setup.Config, "push-appserver"},
		{"component-secret", secret + "\n", "push-appserver"},
		{"prosody-push-appserver.cfg.lua", setup.Prosody, "prosody"},
		{"ejabberd-push-appserver.yml", setup.Ejabberd, "ejabberd"},
	}
	for _, f := range files {
		switch _, err := os.Lstat(filepath.Join(dir, f.name)); {
		case err == nil:
			return fmt.Errorf("%s exists already; init writes only new files", filepath.Join(dir, f.name))
		case !errors.Is(err, fs.ErrNotExist):
			return err
		}
	}
	// The directories missing on the way, outermost first.
	var made []string
	for p := dir; ; p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil || !errors.Is(err, fs.ErrNotExist) || p == filepath.Dir(p) {
			break
		}
		made = append([]string{p}, made...)
	}
	madeDir := len(made) > 0
	for _, p := range made {
		if err := os.Mkdir(p, 0o751); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		// Searchable by others, whatever the umask: Prosody and
		// ejabberd, running as users of their own, Include their files
		// where they are; the files' own modes guard them.
		if err := os.Chmod(p, 0o751); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o751); err != nil {
		return err
	}
	if madeDir {
		if gid, ok := group("push-appserver"); ok {
			if err := os.Chown(dir, -1, gid); err != nil && !errors.Is(err, fs.ErrPermission) {
				return fmt.Errorf("giving %s to group push-appserver: %w", dir, err)
			}
		}
	}
	var private []string
	for _, f := range files {
		path := filepath.Join(dir, f.name)
		// Written for the owner alone, then given to the group: never
		// readable by anyone else on the way. Where the group is not
		// here yet, or we may not give files to it (not root), the file
		// stays its owner's, and init says what to run later.
		gid, ok := group(f.group)
		if !ok {
			gid = -1
		}
		switch err := writeNew(path, f.text, gid); {
		case errors.Is(err, errNoGroup):
			private = append(private, fmt.Sprintf("  chgrp %s %s && chmod 0640 %[2]s", f.group, path))
		case err != nil:
			// The files come as a set (they share the secret), and
			// init writes only new ones: those written before the one
			// that failed (which writeNew removed) go too, or the
			// same init, run again once the disk has room, would
			// refuse for them.
			for _, w := range files {
				if w.name == f.name {
					break
				}
				os.Remove(filepath.Join(dir, w.name))
			}
			return fmt.Errorf("writing %s: %w; init wrote none of its files", path, err)
		}
	}
	fmt.Fprintf(stdout, `wrote in %[1]s:
  push-appserver.toml             push-appserver's configuration (component %[2]s at %[3]s; apps log pushes until you configure APNS or FCM)
  component-secret                the component secret, read by push-appserver.toml
  prosody-push-appserver.cfg.lua  for Prosody: Include it at the end of prosody.cfg.lua, whose modules_enabled needs "cloud_notify"
  ejabberd-push-appserver.yml     for ejabberd: include_config_file it from ejabberd.yml, whose modules need mod_push (Debian's has it)
The XMPP server's file holds the same secret: keep it readable by that server only.
Then: push-appserver check-config -config %[1]s/push-appserver.toml
`, dir, jid, address)
	if len(private) > 0 {
		fmt.Fprintf(stdout, "These files are readable by their owner only (their group is not here yet, or init did not run as root); once the service's user exists (make install makes push-appserver's), as root:\n%s\n", strings.Join(private, "\n"))
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback() && !ip.IsUnspecified()) {
		fmt.Fprintf(stdout, "The XMPP server is not on this machine: in its file, let it take components on %s, not on loopback alone.\n", host)
	}
	return nil
}

// errNoGroup is writeNew's file written, but not given to its group.
var errNoGroup = errors.New("not given to the group")

// writeNew writes text to a file that must not exist, its owner's alone
// (0600), and then, unless gid is -1, gives it to group gid readable
// (0640); it
// changes the file it opened, not whatever the path names by then. When
// there is no group to give it to, or we may not (not root), the file
// stays as written and the error is errNoGroup.
func writeNew(path, text string, gid int) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	// A file not written whole (a full disk) is not left behind; one
	// only not given to its group is whole.
	defer func() {
		if err != nil && !errors.Is(err, errNoGroup) {
			os.Remove(path)
		}
	}()
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	if gid == -1 {
		if err := f.Close(); err != nil {
			return err
		}
		return errNoGroup
	}
	if err := f.Chown(-1, gid); err != nil {
		f.Close()
		if errors.Is(err, fs.ErrPermission) {
			return errNoGroup
		}
		return err
	}
	if err := f.Chmod(0o640); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
