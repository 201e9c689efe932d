package webpush_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/webpush"
	"github.com/push-appserver/push-appserver/internal/testutil/webpushmock"
)

// TestPaddedSummaryRefusedSentUnpadded: the padding of a payload that
// carries the summary's text can take it past what a push service that
// takes less than RFC 8030's 4,096 bytes accepts (Mozilla's bridge to
// FCM, for Firefox on Android: about 3,015 bytes of body), where the
// same text padded finer fits. Refused with 413, the push goes again
// with its text padded to a multiple of 32 bytes, and only when that is
// refused too without its text: the padding must not cost the device a
// text it could have had.
func TestPaddedSummaryRefusedSentUnpadded(t *testing.T) {
	mock, b, pub := setup(t, webpush.Options{IncludeSummary: true})
	mock.SetMaxBody(3015)
	sub := subscribe(t, mock, pub)
	s := summary()
	// 2,048 bytes of text whose quotes JSON escapes: about 2,660
	// bytes of JSON, 2,760 of body unpadded, 3,175 padded to 3,072.
	s.LastMessageBody = strings.Repeat(`"say`, 512)
	got, _, ms := sendSummary(t, mock, b, sub, s)
	if got.LastMessageBody != s.LastMessageBody {
		t.Fatalf("the device read a body of %d bytes after %d requests (sizes %v), want the %d sent: it fits the service unpadded",
			len(got.LastMessageBody), len(ms), sizes(ms), len(s.LastMessageBody))
	}
}

// TestPaddedSummaryRefusedKeepsLengthHidden: a push service that refuses
// the padded payload of a summary with 413 (one that takes less than
// RFC 8030's 4,096 bytes, or one that refuses it to see what comes
// next) gets the text again in a payload that still hides its length:
// two messages a few bytes apart arrive as bodies of one size, as the
// padding promises, and both with their text. Sent unpadded, the retry
// told such a service every message's exact length.
func TestPaddedSummaryRefusedKeepsLengthHidden(t *testing.T) {
	mock, b, pub := setup(t, webpush.Options{IncludeSummary: true})
	mock.SetMaxBody(3015)
	sub := subscribe(t, mock, pub)
	var bodies, plains []int
	for i, quotes := range []int{560, 570} {
		s := summary()
		// 2,048 bytes of text (what a payload carries at most), some
		// of them quotes that JSON escapes: plaintexts of about 2,700
		// bytes, 10 apart.
		s.LastMessageBody = strings.Repeat(`"`, quotes) + strings.Repeat("a", 2048-quotes)
		got, last, ms := sendSummary(t, mock, b, sub, s)
		if got.LastMessageBody != s.LastMessageBody {
			t.Fatalf("message %d: the device read a body of %d bytes (sizes %v), want the %d sent: it fits the service",
				i, len(got.LastMessageBody), sizes(ms), len(s.LastMessageBody))
		}
		bodies, plains = append(bodies, last.Size), append(plains, len(last.Plaintext))
	}
	// Both plaintexts are past 2,560 bytes, so padded to 3,072 they are
	// refused, and a few bytes apart.
	if plains[0] <= 2560 || plains[1]-plains[0] != 10 {
		t.Fatalf("plaintexts of %v bytes, want two past 2,560 and 10 apart", plains)
	}
	if bodies[0] != bodies[1] {
		t.Fatalf("the service saw bodies of %v bytes for texts of %v: their lengths, which padding is there to hide", bodies, plains)
	}
}

// sendSummary pushes summary s to sub and returns the payload the device
// read from the last request the mock took, that request, and every one
// it took so far.
func sendSummary(t *testing.T, mock *webpushmock.Server, b *webpush.Backend, sub webpushmock.Subscription, s *push.Summary) (webpush.Payload, webpushmock.Message, []webpushmock.Message) {
	t.Helper()
	if err := b.Send(context.Background(), push.Notification{Node: "n1", Token: sub.JSON, Priority: push.PriorityHigh, Summary: s}); err != nil {
		t.Fatal(err)
	}
	ms := mock.Messages()
	last := ms[len(ms)-1]
	var got webpush.Payload
	if err := json.Unmarshal(last.Plaintext, &got); err != nil {
		t.Fatalf("payload %q: %v", last.Plaintext, err)
	}
	return got, last, ms
}

func sizes(ms []webpushmock.Message) []int {
	var out []int
	for _, m := range ms {
		out = append(out, m.Size)
	}
	return out
}
