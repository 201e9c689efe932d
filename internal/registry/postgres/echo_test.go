package postgres

import (
	"testing"
	"time"
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
