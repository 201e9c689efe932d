package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/push-appserver/push-appserver/internal/testutil/tmpfs"
)

// An init that fails midway, as on a full disk, leaves none of the
// files it wrote: not an empty XMPP server's file beside a complete
// configuration, and nothing that keeps the same init, run again once
// there is room, from writing them all.
func TestInitFullDiskLeavesNothing(t *testing.T) {
	// Two pages: room for the first files and not for all.
	mnt := tmpfs.Mount(t, 8192)
	dir := filepath.Join(mnt, "etc")
	noGroup := func(string) (int, bool) { return 0, false }
	err := initFiles("push.example.org", "example.org", "127.0.0.1:5347", dir, noGroup, io.Discard)
	if err == nil {
		t.Fatal("init wrote all its files on a file system of 8 KiB")
	}
	t.Logf("init on a full disk: %v", err)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		fi, _ := e.Info()
		t.Errorf("left behind: %s (%d bytes)", e.Name(), fi.Size())
	}
	// Room again: the same init succeeds.
	if err := syscall.Mount("", mnt, "", syscall.MS_REMOUNT, "size=1048576"); err != nil {
		t.Fatal(err)
	}
	if err := initFiles("push.example.org", "example.org", "127.0.0.1:5347", dir, noGroup, io.Discard); err != nil {
		t.Fatalf("init once there is room again: %v", err)
	}
	for _, name := range []string{"push-appserver.toml", "component-secret", "prosody-push-appserver.cfg.lua", "ejabberd-push-appserver.yml"} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v", name, fmt.Sprint(err))
		}
	}
}
