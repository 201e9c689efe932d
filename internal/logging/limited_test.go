package logging

import (
	"bytes"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
)

// TestLimited: at most perSecond lines a second; the rest are counted in
// one summary line, written with the first line of a later second.
func TestLimited(t *testing.T) {
	for _, tt := range []struct {
		perSecond, first, want int
	}{
		{perSecond: 10, first: 12, want: 10},
		{perSecond: 1, first: 5, want: 1},
		{perSecond: 3, first: 2, want: 2},
	} {
		var buf bytes.Buffer
		now := time.Unix(1000, 0)
		l := NewLimited(slog.New(slog.NewTextHandler(&buf, nil)), func() time.Time { return now }, slog.LevelWarn, tt.perSecond, "it happened", "not logged")
		for range tt.first {
			l.Log("k", "v")
		}
		if got := strings.Count(buf.String(), "msg=\"it happened\""); got != tt.want {
			t.Errorf("perSecond %d, %d lines in a second: %d written, want %d:\n%s", tt.perSecond, tt.first, got, tt.want, buf.String())
		}
		buf.Reset()
		now = now.Add(time.Second)
		l.Log("k", "v")
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		if dropped := tt.first - tt.want; dropped > 0 {
			if len(lines) != 2 || !strings.Contains(lines[0], "msg=\"not logged\" count="+strconv.Itoa(dropped)) || !strings.Contains(lines[1], "it happened") {
				t.Errorf("perSecond %d, the next second: %q", tt.perSecond, lines)
			}
		} else if len(lines) != 1 || !strings.Contains(lines[0], "level=WARN msg=\"it happened\" k=v") {
			t.Errorf("perSecond %d, the next second: %q", tt.perSecond, lines)
		}
	}
}

// blockingWriter blocks every write that contains block until release is
// closed, as a log pipe nobody reads does.
type blockingWriter struct {
	block   string
	entered chan struct{}
	release chan struct{}
	once    sync.Once // the summary may come again, from the timer
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	if strings.Contains(string(p), w.block) {
		w.once.Do(func() { close(w.entered) })
		<-w.release
	}
	return len(p), nil
}

// A line Limited does not write (over this second's share) must not wait
// for another line's write: with the log stalled, every caller of Log
// would otherwise stop on Limited's lock, those whose line is suppressed
// too.
func TestLimitedSuppressedLineDoesNotWaitForWrite(t *testing.T) {
	w := &blockingWriter{block: "not logged", entered: make(chan struct{}), release: make(chan struct{})}
	defer close(w.release)
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	l := NewLimited(slog.New(slog.NewTextHandler(w, nil)), clock, slog.LevelWarn, 1, "it happened", "not logged")
	l.Log() // written
	l.Log() // suppressed, counted
	mu.Lock()
	now = now.Add(time.Second)
	mu.Unlock()
	go l.Log() // writes the summary, which blocks
	<-w.entered
	done := make(chan struct{})
	go func() {
		l.Log() // this second's share is taken by the line above: suppressed
		l.Log()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("a suppressed line waited for the blocked write of the summary")
	}
}

// TestLimitedKeyed: once a second's share is used up by one key's flood,
// the first line of each other key is still written, and of no key more
// than once past the share.
func TestLimitedKeyed(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1000, 0)
	l := NewLimited(slog.New(slog.NewTextHandler(&buf, nil)), func() time.Time { return now }, slog.LevelWarn, 3, "it happened", "not logged")
	for range 100 {
		l.LogKey("busy", "app", "busy")
	}
	for range 5 {
		l.LogKey("other", "app", "other")
	}
	if got := strings.Count(buf.String(), "app=busy"); got != 3 {
		t.Errorf("the busy key: %d lines, want 3", got)
	}
	if got := strings.Count(buf.String(), "app=other"); got != 1 {
		t.Errorf("the other key: %d lines, want 1:\n%s", got, buf.String())
	}
	for i := range 2 * maxKeys {
		l.LogKey(strconv.Itoa(i), "app", i)
	}
	// busy's lines used the share; other and 30 more keys make maxKeys.
	if got, want := strings.Count(buf.String(), "it happened"), 3+maxKeys-1; got != want {
		t.Errorf("%d lines in a second of %d keys, want %d", got, 2*maxKeys+2, want)
	}
	buf.Reset()
	now = now.Add(time.Second)
	l.LogKey("other", "app", "other")
	if !strings.Contains(buf.String(), "msg=\"not logged\" count="+strconv.Itoa(97+4+maxKeys+2)) {
		t.Errorf("the next second: %q", buf.String())
	}
}

// TestLimitedSummaryAfterFloodEnds: the lines not written in a flood are
// counted in the log once it ends, though no line of the kind follows:
// before, the summary waited for the next such line, and a flood of
// refused pushes that stopped left ten lines and no count of the rest.
func TestLimitedSummaryAfterFloodEnds(t *testing.T) {
	var buf logbuf.Buffer
	now := time.Unix(1000, 0)
	l := NewLimited(slog.New(slog.NewTextHandler(&buf, nil)), func() time.Time { return now }, slog.LevelInfo, 10, "push rejected", "push rejections not logged")
	for range 250 {
		l.Log("reason", "wrong secret")
	}
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(buf.String(), `msg="push rejections not logged" count=240`); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the 240 lines not written never counted:\n%s", buf.String())
		}
	}
}

// TestLimitedSummaryOfOneLine: a flood that stops after a single line
// over the share still gets its count, from the timer: one refused push
// not logged is one an operator must be told of.
func TestLimitedSummaryOfOneLine(t *testing.T) {
	var buf logbuf.Buffer
	now := time.Unix(1000, 0)
	l := NewLimited(slog.New(slog.NewTextHandler(&buf, nil)), func() time.Time { return now }, slog.LevelInfo, 1, "push rejected", "push rejections not logged")
	l.Log()
	l.Log()
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(buf.String(), `msg="push rejections not logged" count=1`); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the line not written never counted:\n%s", buf.String())
		}
	}
}

// TestLimitedKeyedEachWindow: a key's first line past the share is
// written in every window, not only in the first window the key came in.
func TestLimitedKeyedEachWindow(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1000, 0)
	l := NewLimited(slog.New(slog.NewTextHandler(&buf, nil)), func() time.Time { return now }, slog.LevelWarn, 1, "it happened", "not logged")
	for range 3 {
		l.LogKey("busy", "app", "busy")
		l.LogKey("other", "app", "other")
		now = now.Add(time.Second)
	}
	if got := strings.Count(buf.String(), "app=other"); got != 3 {
		t.Fatalf("the other key: %d lines in 3 seconds, want 3:\n%s", got, buf.String())
	}
}
