package push

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestTruncate(t *testing.T) {
	for _, tt := range []struct {
		in   string
		n    int
		want string
	}{
		{"héllo wörld", 3, "hé"},
		{"héllo wörld", 2, "h"},
		{"héllo wörld", 1, "h"},
		{"héllo wörld", 0, ""},
		{"héllo wörld", -1, ""},
		{"héllo wörld", 100, "héllo wörld"},
		{"hello", 5, "hello"},
		{"hello", 4, "hell"},
		{"日本語", 3, "日"},
		{"日本語", 5, "日"},
		{"日本語", 6, "日本"},
		{"a😀b", 4, "a"},
		{"a😀b", 5, "a😀"},
		{"", 3, ""},
	} {
		if got := Truncate(tt.in, tt.n); got != tt.want {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}

func FuzzTruncate(f *testing.F) {
	f.Add("héllo wörld", 3)
	f.Add("a😀b", 4)
	f.Fuzz(func(t *testing.T, s string, n int) {
		got := Truncate(s, n)
		if len(got) > max(n, 0) || !strings.HasPrefix(s, got) {
			t.Fatalf("Truncate(%q, %d) = %q", s, n, got)
		}
		if utf8.ValidString(s) {
			if !utf8.ValidString(got) {
				t.Fatalf("Truncate(%q, %d) = %q: split a rune", s, n, got)
			}
			// Nothing more could have been kept.
			if len(got) < len(s) {
				_, size := utf8.DecodeRuneInString(s[len(got):])
				if len(got)+size <= n {
					t.Fatalf("Truncate(%q, %d) = %q: cut too much", s, n, got)
				}
			}
		}
	})
}
