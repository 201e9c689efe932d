package component_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/xmpp/component"
)

// heapInUse is the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// heldAfter sends a stream that took one push the stanzas of send, a
// stranger's, then one more push, and returns how much the live heap
// grew across them: what the stream's reader keeps of the stranger's
// stanzas once it has read past them.
func heldAfter(t *testing.T, send func(st *stream)) int64 {
	t.Helper()
	f := newFixtureWith(t, 0, secret, func(o *component.Options) { o.MaxStanza = 64 << 10 })
	st := f.srv.accept(t)
	ok, _ := f.svc.Register(context.Background(), appserver.Caller{}, "apns", "ok", "tok")
	st.send(t, publish("warm", "ok", ok.Secret, true))
	if r := st.next(t); r.ID != "warm" || r.Type != "result" {
		t.Fatalf("first push: %+v", r)
	}
	before := heapInUse()
	send(st)
	st.send(t, publish("after", "ok", ok.Secret, true))
	if r := st.next(t); r.ID != "after" || r.Type != "result" {
		t.Fatalf("push after the stranger's stanzas: %+v", r)
	}
	after := heapInUse()
	t.Logf("live heap %d KiB before, %d KiB after", before>>10, after>>10)
	return int64(after) - int64(before)
}

// TestLongNamesNotRetained: anyone on the XMPP network can send our JID
// messages, each within the stanza limit, whose name-space URIs are long
// and all different. The stream's reader keeps the names and name-space
// URIs a stream repeats, so that they allocate nothing; what it keeps of
// such messages must stay small, not a table full of the longest strings
// an outsider chose, held for as long as the stream lasts.
// Long element and attribute names, all different, must not be kept
// either.
func TestLongNamesNotRetained(t *testing.T) {
	const messages, size = 2048, 40 << 10
	for _, tc := range []struct {
		name    string
		message func(i int) string
	}{
		{"name-space URIs", func(i int) string {
			ns := fmt.Sprintf("urn:x:%d:", i) + strings.Repeat(string(rune('a'+i%26)), size+i)
			return `<message from='mallory@example.org/x' to='` + compJID + `' type='` + ns + `'><x xmlns='` + ns + `'/></message>`
		}},
		{"element and attribute names", func(i int) string {
			name := fmt.Sprintf("x%d", i) + strings.Repeat(string(rune('a'+i%26)), size+i)
			return `<message from='mallory@example.org/x' to='` + compJID + `'><` + name + ` ` + name + `='v'/></message>`
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			grown := heldAfter(t, func(st *stream) {
				for i := range messages {
					st.send(t, tc.message(i))
				}
			})
			if grown > 4<<20 {
				t.Fatalf("the stream keeps %d MiB of %d messages from a stranger (%d KiB each) after reading them", grown>>20, messages, size>>10)
			}
		})
	}
}

// TestManyAttributesNotRetained: a message, skipped like any other, may
// carry an element with as many attributes as its size allows. What the
// stream's reader keeps of it once read must not grow with it: a
// stranger's one large message would otherwise cost memory for as long
// as the stream lasts.
func TestManyAttributesNotRetained(t *testing.T) {
	var size int
	grown := heldAfter(t, func(st *stream) {
		var b strings.Builder
		b.WriteString(`<message from='mallory@example.org/x' to='` + compJID + `'><x`)
		for i := 0; b.Len() < 2<<20; i++ {
			fmt.Fprintf(&b, " a%d='%d'", i, i)
		}
		b.WriteString(`/></message>`)
		size = b.Len()
		st.send(t, b.String())
	})
	if grown > 1<<20 {
		t.Fatalf("the stream keeps %d KiB of a %d KiB message from a stranger after reading it", grown>>10, size>>10)
	}
}

// TestStaleAttributesNotRetained: the stream reader reuses one slice for
// each element's attributes. An element with fewer attributes than one
// before it must not leave the earlier element's values alive in the
// slice's spare room: messages that each end in a large attribute, each
// one attribute fewer than the one before (64, 63, ...), would
// otherwise each leave a value of up to a message's size held for as long
// as the stream lasts, 64 of them at most, which the shrink of a slice
// grown past 64 attributes does not reach.
func TestStaleAttributesNotRetained(t *testing.T) {
	const value = 256 << 10
	messages := 0
	grown := heldAfter(t, func(st *stream) {
		for n := 64; n >= 8; n-- {
			var b strings.Builder
			b.WriteString(`<message from='mallory@example.org/x' to='` + compJID + `'><x`)
			for i := range n - 1 {
				fmt.Fprintf(&b, " a%d='%d'", i, i)
			}
			fmt.Fprintf(&b, " a%d='%s'/></message>", n-1, strings.Repeat(string(rune('a'+n%26)), value))
			st.send(t, b.String())
			messages++
		}
	})
	if grown > 2<<20 {
		t.Fatalf("the stream keeps %d MiB of %d messages from a stranger (%d KiB each) after reading them", grown>>20, messages, value>>10)
	}
}
