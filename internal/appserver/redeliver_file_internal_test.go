package appserver

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
)

// TestHeldFileBounded guards the held file's bound: of more pushes than
// fit, it holds the first ones (the latest failed, see unwrittenPushes),
// whole, within maxHeldFileBytes, and reads back as written.
func TestHeldFileBounded(t *testing.T) {
	now := time.Now()
	body := strings.Repeat("x", 1000)
	var recs []heldFileRecord
	for i := range 20000 {
		node := "n" + strconv.Itoa(i)
		recs = append(recs, heldFileRecord{Failed: now, Deadline: now.Add(time.Minute), Push: heldPushOf(redeliveryKey{node: node},
			push.Notification{App: "ios", Node: node, Summary: &push.Summary{LastMessageBody: body, HasLastMessageBody: true}}, nil, "s", true)})
	}
	data, n := encodeHeldFile(recs, now)
	if len(data) > maxHeldFileBytes || n == 0 || n == len(recs) {
		t.Fatalf("%d bytes holding %d of %d pushes", len(data), n, len(recs))
	}
	var c heldFileContent
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	if c.Version != heldFileVersion || len(c.Pushes) != n || c.Pushes[n-1].Push.Node != recs[n-1].Push.Node {
		t.Fatalf("read back version %d, %d pushes", c.Version, len(c.Pushes))
	}
	t.Logf("%d of %d pushes of %d bytes in %d bytes", n, len(recs), len(body), len(data))
}
