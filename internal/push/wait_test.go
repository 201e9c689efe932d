package push

import (
	"context"
	"strings"
	"testing"
	"time"
)

// Wait gives the slot back while it sleeps and takes one again after,
// through the Waiting its context carries; the context's other values
// and its end are its parent's.
func TestWaitPausesAndResumes(t *testing.T) {
	type key struct{}
	var calls []string
	w := WaitingFuncs{
		PauseFunc:  func() { calls = append(calls, "pause") },
		ResumeFunc: func(context.Context) error { calls = append(calls, "resume"); return nil },
	}
	parent, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "v"))
	defer cancel()
	ctx := WithWaiting(parent, w)
	if err := Wait(ctx, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 2 || calls[0] != "pause" || calls[1] != "resume" {
		t.Fatalf("calls %v, want pause then resume", calls)
	}
	if v := ctx.Value(key{}); v != "v" {
		t.Fatalf("the parent's value: %v", v)
	}
	cancel()
	if ctx.Err() == nil || Wait(ctx, time.Hour) == nil {
		t.Fatal("the parent's end did not end the waiting context")
	}
	// A context without a Waiting: Wait only sleeps.
	calls = nil
	if err := Wait(context.Background(), time.Millisecond); err != nil || calls != nil {
		t.Fatalf("%v, calls %v", err, calls)
	}
}

// A detached context never ends and keeps the push values of its parent,
// and only those.
func TestDetach(t *testing.T) {
	type other struct{}
	w := WaitingFuncs{PauseFunc: func() {}, ResumeFunc: func(context.Context) error { return nil }}
	var answered bool
	parent := WithAnswerHook(WithWaiting(context.WithValue(context.Background(), other{}, "x"), w), func(Answer) { answered = true })
	parent, cancel := context.WithCancel(parent)
	cancel()
	ctx := Detach(parent)
	if ctx.Done() != nil || ctx.Err() != nil {
		t.Fatal("the detached context ends with its parent")
	}
	if _, ok := ctx.Value(waitingKey{}).(Waiting); !ok {
		t.Fatal("the Waiting is lost")
	}
	if fn := AnswerHook(ctx); fn == nil {
		t.Fatal("the answer hook is lost")
	} else if fn(Answer{}); !answered {
		t.Fatal("the answer hook is another")
	}
	if ctx.Value(other{}) != nil {
		t.Fatal("a value a push does not read came along")
	}
	if Detach(context.Background()) != context.Background() {
		t.Fatal("a context without push values should detach to Background")
	}
}

// Detach keeps what Value finds in its parent, the innermost Waiting and
// answer hook, whichever order they were set in, whatever other contexts
// lie between, and a nil one set over another (which hides it) as none.
func TestDetachKeepsTheInnermost(t *testing.T) {
	type other struct{}
	var got []string
	waiting := func(name string) Waiting {
		return WaitingFuncs{PauseFunc: func() { got = append(got, name) }, ResumeFunc: func(context.Context) error { return nil }}
	}
	hook := func(name string) func(Answer) { return func(Answer) { got = append(got, name) } }
	noise := func(ctx context.Context) context.Context {
		ctx, cancel := context.WithCancel(context.WithoutCancel(context.WithValue(ctx, other{}, "x")))
		t.Cleanup(cancel)
		return ctx
	}
	bg := context.Background()
	for _, tc := range []struct {
		name       string
		ctx        context.Context
		wait, hook string // what the detached context's carry, "" for none
	}{
		{"none", noise(noise(bg)), "", ""},
		{"waiting only", noise(WithWaiting(noise(bg), waiting("w"))), "w", ""},
		{"hook only", noise(WithAnswerHook(noise(bg), hook("h"))), "", "h"},
		{"hook over waiting", WithAnswerHook(noise(WithWaiting(bg, waiting("w"))), hook("h")), "w", "h"},
		{"waiting over hook", WithWaiting(noise(WithAnswerHook(bg, hook("h"))), waiting("w")), "w", "h"},
		{"two waitings", WithWaiting(noise(WithAnswerHook(WithWaiting(bg, waiting("outer")), hook("h"))), waiting("inner")), "inner", "h"},
		{"two hooks", WithAnswerHook(WithWaiting(noise(WithAnswerHook(bg, hook("outer"))), waiting("w")), hook("inner")), "w", "inner"},
		{"nil waiting over one", WithWaiting(noise(WithWaiting(WithAnswerHook(bg, hook("h")), waiting("w"))), nil), "", "h"},
		{"nil hook over one", WithAnswerHook(noise(WithAnswerHook(WithWaiting(bg, waiting("w")), hook("h"))), nil), "w", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := Detach(tc.ctx)
			got = nil
			if w, ok := ctx.Value(waitingKey{}).(Waiting); ok {
				w.Pause()
			} else {
				got = append(got, "")
			}
			if fn := AnswerHook(ctx); fn != nil {
				fn(Answer{})
			} else {
				got = append(got, "")
			}
			if len(got) != 2 || got[0] != tc.wait || got[1] != tc.hook {
				t.Fatalf("Waiting and hook %q, want %q and %q", got, tc.wait, tc.hook)
			}
			if ctx.Value(other{}) != nil || ctx.Done() != nil {
				t.Fatal("the detached context carries another value, or ends")
			}
		})
	}
}

// bounded records how a push waiting for a push service gave its slot up.
type bounded struct {
	WaitingFuncs
	calls *[]string
}

func (b bounded) PauseElsewhere() { *b.calls = append(*b.calls, "pause elsewhere") }

// Elsewhere gives a Bounded's slot up whatever its bound, and a plain
// Waiting's as Wait does.
func TestElsewherePauses(t *testing.T) {
	var calls []string
	w := WaitingFuncs{
		PauseFunc:  func() { calls = append(calls, "pause") },
		ResumeFunc: func(context.Context) error { calls = append(calls, "resume"); return nil },
	}
	for _, tt := range []struct {
		name string
		w    Waiting
		want string
	}{
		{"plain", w, "pause fn resume"},
		{"bounded", bounded{w, &calls}, "pause elsewhere fn resume"},
	} {
		calls = nil
		Elsewhere(WithWaiting(context.Background(), tt.w), func() error {
			calls = append(calls, "fn")
			return nil
		})
		if got := strings.Join(calls, " "); got != tt.want {
			t.Errorf("%s: calls %q, want %q", tt.name, got, tt.want)
		}
	}
}
