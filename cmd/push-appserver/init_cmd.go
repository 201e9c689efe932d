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
	"path/filepath"
	"strings"

	"github.com/push-appserver/push-appserver/deploy"
)

// initFile is one file init writes.
type initFile struct {
	name, text string
	mode       fs.FileMode
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
	if err := initFiles(*jid, *domain, *address, *dir, stdout); err != nil {
		fmt.Fprintf(stderr, "push-appserver init: %v\n", err)
		return 1
	}
	return 0
}

func initFiles(jid, domain, address, dir string, stdout io.Writer) error {
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
	// The XMPP servers' files hold the secret too.
	files := []initFile{
		{"push-appserver.toml", setup.Config, 0o640},
		{"component-secret", secret + "\n", 0o600},
		{"prosody-push-appserver.cfg.lua", setup.Prosody, 0o600},
		{"ejabberd-push-appserver.yml", setup.Ejabberd, 0o600},
	}
	for _, f := range files {
		switch _, err := os.Lstat(filepath.Join(dir, f.name)); {
		case err == nil:
			return fmt.Errorf("%s exists already; init writes only new files", filepath.Join(dir, f.name))
		case !errors.Is(err, fs.ErrNotExist):
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	for _, f := range files {
		if err := writeNew(filepath.Join(dir, f.name), f.text, f.mode); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, `wrote in %[1]s:
  push-appserver.toml             push-appserver's configuration (component %[2]s at %[3]s; apps log pushes until you configure APNS or FCM)
  component-secret                the component secret, read by push-appserver.toml
  prosody-push-appserver.cfg.lua  for Prosody: Include it at the end of prosody.cfg.lua
  ejabberd-push-appserver.yml     for ejabberd: include_config_file it from ejabberd.yml
The XMPP server's file holds the same secret: keep it readable by that server only.
Then: push-appserver check-config -config %[1]s/push-appserver.toml
`, dir, jid, address)
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		fmt.Fprintf(stdout, "The XMPP server is not on this machine: in its file, let it take components on %s, not on loopback alone.\n", host)
	}
	return nil
}

// writeNew writes text to a file that must not exist, with mode.
func writeNew(path, text string, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
