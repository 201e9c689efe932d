package webpush

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestNodeHTTPECEDecrypts: a message we encrypt is decrypted by Node's
// http_ece, written by RFC 8188's author and independent of our code, the
// way a browser would decrypt it.
func TestNodeHTTPECEDecrypts(t *testing.T) {
	dir := filepath.Join("testdata", "ece")
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed; run scripts/test-deps.sh (make test-deps), which installs nodejs and npm with apt-get and http_ece with npm")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "http_ece", "package.json")); err != nil {
		t.Fatal("http_ece is not installed in internal/push/webpush/testdata/ece; run scripts/test-deps.sh (make test-deps), or npm ci there")
	}
	ua, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	auth := make([]byte, 16)
	rand.Read(auth)
	plaintext, _ := json.Marshal(Payload{Node: "n1", MessageCount: 2, LastMessageSender: "juliet@example.org", LastMessageBody: "Ärger über “quotes” 🍉"})
	// Unpadded, and padded as a payload with the summary's text is.
	for _, padTo := range []int{0, 512, MaxPlaintext} {
		msg, err := EncryptPadded(plaintext, Subscription{P256DH: ua.PublicKey(), Auth: auth}, padTo)
		if err != nil {
			t.Fatal(err)
		}
		in, _ := json.Marshal(map[string]string{
			"message":    base64.RawURLEncoding.EncodeToString(msg),
			"privateKey": base64.RawURLEncoding.EncodeToString(ua.Bytes()),
			"auth":       base64.RawURLEncoding.EncodeToString(auth),
		})
		cmd := exec.Command(node, "decrypt.js")
		cmd.Dir = dir
		cmd.Stdin = bytes.NewReader(in)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("padded to %d: http_ece could not decrypt our message: %v\n%s", padTo, err, stderr.String())
		}
		if !bytes.Equal(out, plaintext) {
			t.Fatalf("padded to %d: http_ece decrypted %q, we encrypted %q", padTo, out, plaintext)
		}
	}
}
