package config

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/apns"
	"github.com/push-appserver/push-appserver/internal/push/fcm"
	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
	"github.com/push-appserver/push-appserver/internal/testutil/fcmmock"
)

// tigaseEncrypted is the <encrypted/> payload a Tigase server sends a
// device that enabled push with max-size (the max-payload-size
// register-device answered): Tigase's EncryptedPushNotificationExtension
// cuts the JSON it encrypts to max-size*6/8 bytes, less 49 (its margin
// of 64 and the key the message's body goes under), and sends it
// AES-128-GCM encrypted (16 bytes of tag) in base64.
func tigaseEncrypted(t *testing.T, maxSize int) *push.Encrypted {
	t.Helper()
	ct := make([]byte, maxSize*6/8-49+16)
	iv := make([]byte, 16)
	rand.Read(ct)
	rand.Read(iv)
	return &push.Encrypted{Payload: base64.StdEncoding.EncodeToString(ct), IV: base64.StdEncoding.EncodeToString(iv)}
}

// Every max-payload-size register-device answers is one at which the
// encrypted notifications of a Tigase server that honours it reach APNS
// and FCM with what we add to them (the node, the account, the default
// alert): a larger one is answered modify/not-acceptable, so that each
// long message of such a device's user wakes nothing. A configuration
// asking for more than fits, up to the 4096 once taken, still loads,
// with a warning, and answers what fits.
func TestTigaseMaxPayloadSizeFitsPushServices(t *testing.T) {
	dir := t.TempDir()
	answered := func(size int) (int, []string) {
		text := fmt.Sprintf("[apps.ios]\nkind = \"log\"\n[[component]]\njid = \"push.example.org\"\nsecret = \"s\"\ntigase_providers = { \"tigase:messenger:apns:1\" = \"ios\" }\ntigase_max_payload_size = %d\n", size)
		c, err := Parse(text, dir)
		if err != nil {
			return 0, nil
		}
		return c.Components[0].TigaseMaxPayloadSize, c.Warnings
	}
	if n, _ := answered(3072); n != 3072 {
		t.Fatalf("the default tigase_max_payload_size answers %d", n)
	}
	if n, warnings := answered(4096); n == 0 || len(warnings) == 0 {
		t.Errorf("tigase_max_payload_size = 4096: answered %d, warnings %q; want it loaded, with a warning", n, warnings)
	}
	largest := 0
	for size := 256; size <= 8192; size += 64 {
		largest = max(largest, func() int { n, _ := answered(size); return n }())
	}
	// A Tigase node (tigase- and 64 hex digits) and a long but usual
	// account.
	node := "tigase-" + strings.Repeat("0f", 32)
	account := strings.Repeat("r", 40) + "@" + strings.Repeat("x", 40) + ".example.org"
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	p8, pub, err := apnsmock.TokenKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "k.p8")
	if err := os.WriteFile(keyFile, p8, 0o600); err != nil {
		t.Fatal(err)
	}
	am, err := apnsmock.New(apnsmock.Config{TokenKey: pub, KeyID: "K", TeamID: "T", Topic: "im.example.app"})
	if err != nil {
		t.Fatal(err)
	}
	defer am.Close()
	defaults := Default()
	defaults.Apps = map[string]*App{"ios": {Kind: "apns"}}
	defaults.applyDefaults()
	ios := defaults.Apps["ios"]
	ab, err := apns.New(apns.Options{Topic: "im.example.app", Endpoint: am.URL, CAPath: am.CADir, TokenKeyFile: keyFile, KeyID: "K", TeamID: "T",
		AlertTitle: ios.AlertTitle, AlertBody: ios.AlertBody, Sound: ios.Sound, MutableContent: *ios.MutableContent, PushDeadline: 3 * time.Second}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer ab.Close()

	fm, err := fcmmock.New("chat-app-1234")
	if err != nil {
		t.Fatal(err)
	}
	defer fm.Close()
	sa, err := fm.WriteServiceAccount(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fb, err := fcm.New(fcm.Options{ServiceAccountFile: sa, Endpoint: fm.URL, CAPath: fm.CADir, PushDeadline: 3 * time.Second}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()

	for _, size := range []int{3072, largest} {
		enc := tigaseEncrypted(t, size)
		for _, prio := range []push.Priority{push.PriorityHigh, push.PrioritySilent} {
			n := push.Notification{App: "ios", Node: node, Token: strings.Repeat("ab", 32), Priority: prio, Encrypted: enc, Account: account}
			if err := ab.Send(context.Background(), n); err != nil {
				t.Errorf("tigase_max_payload_size %d (%d bytes of ciphertext in base64), %s push to APNS: %v", size, len(enc.Payload), prio, err)
			}
			n.Token = "fcm-device-token:APA91b"
			if err := fb.Send(context.Background(), n); err != nil {
				t.Errorf("tigase_max_payload_size %d (%d bytes of ciphertext in base64), %s push to FCM: %v", size, len(enc.Payload), prio, err)
			}
		}
	}
}
