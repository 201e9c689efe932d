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
// same text unpadded fits. Refused with 413, the push goes again with
// its text unpadded, and only when that is refused too without its
// text: the padding must not cost the device a text it could have had.
func TestPaddedSummaryRefusedSentUnpadded(t *testing.T) {
	mock, b, pub := setup(t, webpush.Options{IncludeSummary: true})
	mock.SetMaxBody(3015)
	sub := subscribe(t, mock, pub)
	s := summary()
	// 2,048 bytes of text whose quotes JSON escapes: about 2,660
	// bytes of JSON, 2,760 of body unpadded, 3,175 padded to 3,072.
	s.LastMessageBody = strings.Repeat(`"say`, 512)
	if err := b.Send(context.Background(), push.Notification{Node: "n1", Token: sub.JSON, Priority: push.PriorityHigh, Summary: s}); err != nil {
		t.Fatal(err)
	}
	ms := mock.Messages()
	last := ms[len(ms)-1]
	var got webpush.Payload
	if err := json.Unmarshal(last.Plaintext, &got); err != nil {
		t.Fatalf("payload %q: %v", last.Plaintext, err)
	}
	if got.LastMessageBody != s.LastMessageBody {
		t.Fatalf("the device read a body of %d bytes after %d requests (sizes %v), want the %d sent: it fits the service unpadded",
			len(got.LastMessageBody), len(ms), sizes(ms), len(s.LastMessageBody))
	}
}

func sizes(ms []webpushmock.Message) []int {
	var out []int
	for _, m := range ms {
		out = append(out, m.Size)
	}
	return out
}
