package sqlite_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry"
)

// TestDeletedLongValuesLeaveNoTrace: README (Security): "What is deleted
// (a registration, a push delivered after waiting) is overwritten in the
// pages SQLite writes for the delete, not left in the file until its
// space is reused". A row too long for its page (a WebPush subscription
// of a few KiB as the token, a held push whose summary carries a long
// message body) keeps its tail on overflow pages, which a delete frees
// without writing: they must not keep the token or the message on the
// free list of the file.
func TestDeletedLongValuesLeaveNoTrace(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	s := open(t, path)
	for _, n := range []string{"a", "b", "c"} {
		if _, err := register(s, registry.Registration{Node: n, Type: "web", Token: "00" + n, Secret: "x" + n, Registered: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	token := `{"endpoint":"https://push.example.net/` + strings.Repeat("0123456789abcdef", 240) + `TOKEN-TAIL-OF-JULIET"}`
	if _, err := register(s, registry.Registration{Node: "juliet", Type: "web", Token: token, Secret: "s", Registered: time.Now()}); err != nil {
		t.Fatal(err)
	}
	body := strings.Repeat("meet me at the balcony ", 177) + "BODY-TAIL-OF-JULIET"
	held := registry.HeldPush{Device: "d1", FailedAt: time.Now(), Push: []byte(`{"app":"web","summary":{"LastMessageBody":"` + body + `"}}`)}
	if err := s.KeepPushes(ctx, "owner", time.Minute, false, []registry.HeldPush{held}, nil); err != nil {
		t.Fatal(err)
	}
	// The device unregisters, and the push is delivered.
	if _, err := s.Delete(ctx, "juliet", "web"); err != nil {
		t.Fatal(err)
	}
	if err := s.KeepPushes(ctx, "owner", time.Minute, true, nil, []string{"d1"}); err != nil {
		t.Fatal(err)
	}
	s.Close() // checkpoints the log into the file
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for what, v := range map[string]string{"token": "TOKEN-TAIL-OF-JULIET", "message body": "BODY-TAIL-OF-JULIET"} {
		if bytes.Contains(data, []byte(v)) {
			t.Errorf("the deleted %s is still in %s", what, filepath.Base(path))
		}
	}
}
