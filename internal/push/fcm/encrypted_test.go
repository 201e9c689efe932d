package fcm_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/push-appserver/push-appserver/internal/push"
)

// An encrypted notification reaches FCM as data fields, the ciphertext and
// IV as they came (the keys Siskin reads on iOS: account, encrypted, iv).
func TestEncryptedData(t *testing.T) {
	m, o := setup(t)
	b := newBackend(t, o)
	enc := &push.Encrypted{Payload: "c2VjcmV0IG1lc3NhZ2U=", IV: "MTIzNDU2Nzg5MDEy"}
	if err := b.Send(context.Background(), push.Notification{App: "fcm", Node: "n", Token: token, Priority: push.PriorityHigh, Encrypted: enc, Account: "juliet@example.org"}); err != nil {
		t.Fatal(err)
	}
	data := m.Requests()[0].Message["data"].(map[string]any)
	if data["encrypted"] != enc.Payload || data["iv"] != enc.IV || data["account"] != "juliet@example.org" {
		t.Fatalf("data %v", data)
	}
}

// More than FCM's 4 KiB of data is a clear error, and nothing is sent.
func TestEncryptedTooLarge(t *testing.T) {
	m, o := setup(t)
	b := newBackend(t, o)
	enc := &push.Encrypted{Payload: strings.Repeat("QUJD", 1100), IV: "MTIzNDU2Nzg5MDEy"}
	err := b.Send(context.Background(), push.Notification{App: "fcm", Node: "n", Token: token, Priority: push.PriorityHigh, Encrypted: enc})
	if !errors.Is(err, push.ErrPayloadTooLarge) {
		t.Fatalf("4400 bytes of data: %v, want ErrPayloadTooLarge", err)
	}
	if n := len(m.Requests()); n != 0 {
		t.Fatalf("FCM got %d requests", n)
	}
}
