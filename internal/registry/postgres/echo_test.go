package postgres

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry"
)

// One ack reaches every write of the node waiting for it, however many
// wait, and only them.
func TestAckedReleasesEveryWaiter(t *testing.T) {
	b := newBarrier(time.Second)
	b.setLive(true)
	var ws []*waiter
	for range 4 {
		ws = append(ws, b.expect("n", 1))
	}
	two := b.expect("n", 2)
	other := b.expect("m", 1)
	b.acked("n")
	for i, w := range ws {
		select {
		case <-w.done:
		default:
			t.Errorf("write %d of n still waits after the ack", i)
		}
	}
	for name, w := range map[string]*waiter{"the one needing two acks": two, "m's": other} {
		select {
		case <-w.done:
			t.Errorf("%s write was released by one ack of n", name)
		default:
		}
	}
	if len(b.waiting["n"]) != 1 || b.waiting["n"][0] != two {
		t.Fatalf("waiting for n: %v, want only the one needing two acks", b.waiting["n"])
	}
	b.acked("n")
	<-two.done
	if _, ok := b.waiting["n"]; ok {
		t.Fatal("n still listed after its last ack")
	}
}

// A write whose wait is registered after the feed went down (between the
// count of the other instances and the commit) cannot be acked: it ends
// at once and is answered unconfirmed, not after ackWait as confirmed.
func TestExpectAfterFeedDownIsCut(t *testing.T) {
	b := newBarrier(time.Hour)
	b.setLive(true)
	b.setLive(false)
	w := b.expect("n", 1)
	if w == nil {
		t.Fatal("no wait for a write the others were counted for")
	}
	select {
	case <-w.done:
	default:
		t.Fatal("a wait registered with the feed down is not released: no ack can come")
	}
	if _, ok := b.waiting["n"]; ok {
		t.Error("a wait registered with the feed down is kept, where nothing will release it")
	}
	if err := b.wait(context.Background(), "n", w, true); !errors.Is(err, registry.ErrUnconfirmed) {
		t.Fatalf("the write's answer: %v, want registry.ErrUnconfirmed", err)
	}
}

// A write whose acks do not come within ackWait (an instance hung, or a
// listener PostgreSQL still counts after its connection died) is
// forgotten with its answer, as is each of a batch's: kept, every write
// while such an instance is counted would stay in memory for as long as
// the process runs.
func TestUnackedWaitsForgotten(t *testing.T) {
	b := newBarrier(time.Millisecond)
	b.setLive(true)
	w := b.expect("n", 1)
	if err := b.wait(context.Background(), "n", w, true); err != nil {
		t.Fatalf("a write not acked within ackWait with the feed up: %v, want nil", err)
	}
	var a acks
	a.expect(&b, "m", 1)
	a.expect(&b, "o", 2)
	if cut := b.waitAll(a, true); len(cut) != 0 {
		t.Fatalf("a batch not acked within ackWait with the feed up: %v cut, want none", cut)
	}
	if len(b.waiting) != 0 {
		t.Fatalf("waits kept after their writes were answered: %v", b.waiting)
	}
}
