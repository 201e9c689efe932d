package push

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/url"
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

// TestFitKeepsAllThatFits guards how much of a summary survives a payload
// limit: every text is cut to the same, largest number of bytes that
// fits (found here by trying each in turn), so nothing is cut that had
// room and a short sender keeps what it has while a long body gives way.
func TestFitKeepsAllThatFits(t *testing.T) {
	tests := []struct {
		name         string
		sender, body string
		limit        int
		minBody      int // bytes of the body kept at least
	}{
		{"one byte over", "alice", strings.Repeat("a", 1001), 1000, 960},
		{"far over", "bob", strings.Repeat("ä", 3000), 1500, 1400},
		{"escaped characters", "carol", strings.Repeat("<", 900), 3000, 490},
		{"both long", strings.Repeat("s", 800), strings.Repeat("b", 800), 1000, 470},
		{"fits already", "dave", "hello", 100, 5},
		{"nothing fits", "erin", "hello", 10, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var sender, body string
			encode := func() []byte {
				out, _ := json.Marshal(map[string]string{"sender": sender, "body": body})
				return out
			}
			fits := func(b []byte) bool { return len(b) <= tt.limit }
			var want []byte
			for n := max(len(tt.sender), len(tt.body)); n >= 0; n-- {
				sender, body = Truncate(tt.sender, n), Truncate(tt.body, n)
				if want = encode(); fits(want) {
					break
				}
			}
			sender, body = tt.sender, tt.body
			got := Fit(encode, fits, &sender, &body)
			if string(got) != string(want) {
				t.Errorf("Fit gave %d bytes (body %d), the most that fits is %d bytes:\n%s\n%s", len(got), len(body), len(want), got, want)
			}
			if string(got) != string(encode()) {
				t.Error("texts left other than the result says")
			}
			if len(body) < tt.minBody {
				t.Errorf("kept %d bytes of the body, want at least %d", len(body), tt.minBody)
			}
		})
	}
}

// RedactURL replaces the URL net/http quotes in its errors, which carries
// the device token or the subscription, so that neither reaches the logs
// nor the registry's last error.
func TestRedactURL(t *testing.T) {
	const token = "0123456789abcdef"
	var err error = &url.Error{Op: "Post", URL: "https://api.push.apple.com/3/device/" + token, Err: io.ErrUnexpectedEOF}
	got := RedactURL(err, "https://api.push.apple.com/3/device/…")
	if strings.Contains(got.Error(), token) || !errors.Is(got, io.ErrUnexpectedEOF) {
		t.Fatalf("RedactURL: %v", got)
	}
}

// A backend that does not say whether its pushes carry the summary's
// text is taken to carry it: held pushes keep their text for it.
func TestCarriesSummaryTextByDefault(t *testing.T) {
	if !CarriesSummaryText(silentBackend{}) {
		t.Fatal("a backend that does not say is taken to carry no summary text")
	}
}

type silentBackend struct{}

func (silentBackend) Send(context.Context, Notification) error { return nil }

// Only a backend that says so has tokens that name where its pushes go:
// pushes naming a token of their own are refused for it alone.
func TestTokensNameEndpoints(t *testing.T) {
	if TokensNameEndpoints(silentBackend{}) {
		t.Fatal("a backend that does not say has tokens naming endpoints")
	}
	if TokensNameEndpoints(endpointBackend{false}) || !TokensNameEndpoints(endpointBackend{true}) {
		t.Fatal("TokensNameEndpoints does not take the backend's word")
	}
}

type endpointBackend struct{ names bool }

func (endpointBackend) Send(context.Context, Notification) error { return nil }
func (b endpointBackend) TokensNameEndpoints() bool              { return b.names }
