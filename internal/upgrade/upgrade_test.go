package upgrade

import (
	"log/slog"
	"testing"
	"time"
)

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
