package upgrade

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// upgraderEnv makes the test binary a process that tries upgrades which
// fail (see TestMain, failingUpgrades): tableflip allows one upgrader a
// process, and this binary's is TestOnlyTheFirstProcessTakesPart's. It
// names a file to which each new process adds a byte as it starts.
const upgraderEnv = "UPGRADE_TEST_UPGRADER"

func TestMain(m *testing.M) {
	if started := os.Getenv(upgraderEnv); started != "" {
		if err := failingUpgrades(started); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// The handover itself runs in TestUpgradeInPlace (internal/e2e), with the
// binary behind real XMPP servers, and a new process that fails in
// TestFailedUpgradeServesOn (cmd/push-appserver): it needs processes of
// their own. Here: a process that was not started by an upgrade, and the
// Processes after its first.
func TestOnlyTheFirstProcessTakesPart(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	first, err := New(logger, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Stop()
	second, err := New(logger, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Stop()

	for name, p := range map[string]*Process{"first": first, "second": second} {
		if p.Inherited() {
			t.Errorf("%s: inherited, but no upgrade started this process", name)
		}
		ln, err := p.Listen("127.0.0.1:0")
		if err != nil {
			t.Fatalf("%s: listen: %v", name, err)
		}
		defer ln.Close()
		// Without a new process there is nobody to tell.
		if err := p.ReleaseComponent(t.Context(), "push.example.org"); err != nil {
			t.Errorf("%s: release: %v", name, err)
		}
		p.OnComponentReleased(func(string) { t.Errorf("%s: released, but there is no old process", name) })
		if err := p.Ready(); err != nil {
			t.Errorf("%s: ready: %v", name, err)
		}
		select {
		case <-p.HandedOver():
			t.Errorf("%s: handed over without an upgrade", name)
		default:
		}
	}
	if second.HandedOver() != nil {
		t.Error("the second Process could be handed over")
	}
	if err := second.Upgrade(); err == nil {
		t.Error("the second Process upgraded")
	}
}

// TestFailedUpgradesLeakNoDescriptor: upgrades whose new process fails
// cost no descriptor of ours, however many of them a process tries. See
// failingUpgrades, which runs in a process of its own.
func TestFailedUpgradesLeakNoDescriptor(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), upgraderEnv+"="+filepath.Join(t.TempDir(), "started"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
}

// failingUpgrades tries upgrades whose new process, this binary again,
// exits at once, and counts the descriptors they leave open. Ours may
// hold the one pipe for all of them (see releasePipe); tableflip v1.2.3
// keeps two pipe ends of its own per new process, which are counted out.
// started is the file each new process marks.
func failingUpgrades(started string) error {
	p, err := New(slog.New(slog.DiscardHandler), 10*time.Second)
	if err != nil {
		return err
	}
	if p.Inherited() {
		// The new process: fails.
		if f, err := os.OpenFile(started, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err == nil {
			f.Write([]byte{1})
		}
		os.Exit(3)
	}
	if err := p.Ready(); err != nil {
		return err
	}
	// The runtime's poller opens descriptors of its own with the first
	// pipe: before counting.
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	r.Close()
	w.Close()
	const attempts, ours, tableflips = 5, 2, 2
	before, err := openFDs()
	if err != nil {
		return err
	}
	// tableflip may not have taken Ready in yet, and refuse an upgrade
	// without starting a process: tried again.
	for i := 0; children(started) < attempts; i++ {
		if i == 100*attempts {
			return fmt.Errorf("%d upgrades tried, %d new processes started", i, children(started))
		}
		if err := p.Upgrade(); err == nil {
			return fmt.Errorf("upgrade %d succeeded, with a new process that exits at once", i+1)
		}
	}
	// tableflip closes some of its ends of a failed new process's pipes
	// after Upgrade returned.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		after, err := openFDs()
		if err != nil {
			return err
		}
		if after-before <= ours+tableflips*attempts {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d descriptors more after %d failed upgrades, want at most %d: our pipe kept for all of them and tableflip's %d per upgrade",
				after-before, attempts, ours+tableflips*attempts, tableflips)
		}
	}
}

// children is how many new processes marked started.
func children(started string) int {
	fi, err := os.Stat(started)
	if err != nil {
		return 0
	}
	return int(fi.Size())
}

func openFDs() (int, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	return len(ents), err
}

// TestEndsWithContainer guards when an upgrade is refused because the
// container would end with this process: as PID 1, as a child of a
// container's init (docker run --init), and in a pod sharing its PID
// namespace (the parent outside it); not on a host, nor under a systemd
// that follows the new process.
func TestEndsWithContainer(t *testing.T) {
	const host, container = "pid:[4026531836]", "pid:[4026532290]"
	for _, c := range []struct {
		name      string
		pid, ppid int
		ns, init  string
		notify    bool
		refused   bool
	}{
		{"host, under a shell", 4242, 4000, host, "systemd", false, false},
		{"host, under systemd", 4242, 1, host, "systemd", true, false},
		{"host, detached", 4242, 1, host, "init", false, false},
		{"container entry point", 1, 0, container, "push-appserver", false, true},
		{"container entry point, NOTIFY_SOCKET", 1, 0, container, "push-appserver", true, true},
		{"under the container's init", 7, 1, container, "tini", false, true},
		{"under the container's init, NOTIFY_SOCKET", 7, 1, container, "catatonit", true, true},
		{"beside a pause process", 12, 0, container, "pause", false, true},
		{"beside a pause process, NOTIFY_SOCKET", 12, 0, container, "pause", true, true},
		{"systemd inside a container", 40, 1, container, "systemd", true, false},
		{"a service of systemd inside a container, without notify", 40, 1, container, "systemd", false, true},
		{"namespace unknown", 4242, 4000, "", "", false, false},
	} {
		if why := endsWithContainer(c.pid, c.ppid, c.ns, c.init, c.notify); (why != "") != c.refused {
			t.Errorf("%s: refused %q, want refused %v", c.name, why, c.refused)
		}
	}
}

// Once a stop has begun (StopNewProcess), no new process is started: an
// upgrade asked for then is refused before anything is handed over.
func TestNoUpgradeOnceStopping(t *testing.T) {
	p := &Process{logger: slog.New(slog.DiscardHandler), stopped: make(chan struct{})}
	if err := p.StopNewProcess(); err != nil {
		t.Fatal(err)
	}
	if w, err := p.releasePipe(); err == nil {
		w.Close()
		t.Fatal("a stopping process made the pipe to a new process")
	}
}
