package webpush

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"strings"
	"testing"
)

func b64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rfcExample holds the inputs and the result of RFC 8291 section 5 and
// appendix A.
type rfcExample struct {
	plaintext, asPrivate, asPublic, uaPrivate, uaPublic, salt, auth, message []byte
}

func rfc8291(t *testing.T) rfcExample {
	return rfcExample{
		plaintext: []byte("When I grow up, I want to be a watermelon"),
		asPrivate: b64(t, "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"),
		asPublic: b64(t, `BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIg
			Dll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8`),
		uaPrivate: b64(t, "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"),
		uaPublic: b64(t, `BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcx
			aOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4`),
		salt: b64(t, "DGv6ra1nlYgDCS1FRnbzlw"),
		auth: b64(t, "BTBZMqHH6r4Tts7J_aSIgg"),
		message: b64(t, `DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27ml
			mlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPT
			pK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN`),
	}
}

// TestEncryptRFC8291Example: with the RFC's fixed keys and salt our
// encryption gives exactly the message RFC 8291 section 5 shows.
func TestEncryptRFC8291Example(t *testing.T) {
	ex := rfc8291(t)
	as, err := ecdh.P256().NewPrivateKey(ex.asPrivate)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(as.PublicKey().Bytes(), ex.asPublic) {
		t.Fatal("as_public does not belong to as_private")
	}
	ua, err := ecdh.P256().NewPublicKey(ex.uaPublic)
	if err != nil {
		t.Fatal(err)
	}
	got, err := encrypt(ex.plaintext, ua, ex.auth, as, ex.salt, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, ex.message) {
		t.Fatalf("encrypted message differs from RFC 8291:\n got %s\nwant %s",
			base64.RawURLEncoding.EncodeToString(got), base64.RawURLEncoding.EncodeToString(ex.message))
	}
}

// TestDecryptRFC8291Example: the user agent's side recovers the RFC's
// plaintext, and refuses the message under a wrong auth secret or with a
// flipped bit.
func TestDecryptRFC8291Example(t *testing.T) {
	ex := rfc8291(t)
	ua, err := ecdh.P256().NewPrivateKey(ex.uaPrivate)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decrypt(ex.message, ua, ex.auth)
	if err != nil || !bytes.Equal(got, ex.plaintext) {
		t.Fatalf("Decrypt = %q, %v", got, err)
	}
	wrongAuth := bytes.Clone(ex.auth)
	wrongAuth[0] ^= 1
	if _, err := Decrypt(ex.message, ua, wrongAuth); err == nil {
		t.Fatal("decrypted with a wrong auth secret")
	}
	flipped := bytes.Clone(ex.message)
	flipped[len(flipped)-20] ^= 1
	if _, err := Decrypt(flipped, ua, ex.auth); err == nil {
		t.Fatal("decrypted a tampered message")
	}
	if _, err := Decrypt(ex.message[:50], ua, ex.auth); err == nil {
		t.Fatal("decrypted a truncated message")
	}
}

// TestEncryptFreshKeys: Encrypt uses a new key and salt each time and the
// result decrypts; the largest payload fits the 4096 bytes every push
// service takes, one byte more is refused.
func TestEncryptFreshKeys(t *testing.T) {
	ua, err := ecdh.P256().GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	sub := Subscription{P256DH: ua.PublicKey(), Auth: bytes.Repeat([]byte{7}, 16)}
	msg := bytes.Repeat([]byte("x"), MaxPlaintext)
	a, err := Encrypt(msg, sub)
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 4096 {
		t.Fatalf("largest message is %d bytes, want 4096", len(a))
	}
	b, _ := Encrypt(msg, sub)
	if bytes.Equal(a[:headerLen], b[:headerLen]) {
		t.Fatal("two messages share salt and sender key")
	}
	got, err := Decrypt(a, ua, sub.Auth)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := Encrypt(append(msg, 'x'), sub); err == nil {
		t.Fatal("a payload over the limit was encrypted")
	}
}

// BenchmarkEncrypt: one push payload for one subscription, with the fresh
// ephemeral key and salt every message gets.
func BenchmarkEncrypt(b *testing.B) {
	ua, _ := ecdh.P256().GenerateKey(rand.Reader)
	sub := Subscription{P256DH: ua.PublicKey(), Auth: bytes.Repeat([]byte{7}, 16)}
	msg := []byte(`{"node":"e7d1c0f4b91b05b060594403449c9a11","message-count":1,"last-message-body":"New Message!"}`)
	for b.Loop() {
		if _, err := Encrypt(msg, sub); err != nil {
			b.Fatal(err)
		}
	}
}
