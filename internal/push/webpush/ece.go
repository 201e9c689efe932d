package webpush

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Sizes from RFC 8188 and RFC 8291.
const (
	saltLen   = 16
	keyLen    = 65 // uncompressed P-256 point
	authLen   = 16
	tagLen    = 16
	headerLen = saltLen + 4 + 1 + keyLen // salt, rs, idlen, keyid

	// recordSize is the "rs" we announce: one record holds the whole
	// message, and 4096 is what every push service must accept (RFC 8030
	// section 7.2), so no plaintext that fits can overflow it.
	recordSize = 4096
	// MaxPlaintext is the most a push message can carry in the one record
	// RFC 8291 allows, within the 4096 bytes every push service accepts:
	// 4096 - header - padding delimiter - tag.
	MaxPlaintext = 4096 - headerLen - 1 - tagLen
)

// encrypt encrypts plaintext for the user agent's key uaPublic and
// authentication secret auth, as RFC 8291 (aes128gcm, one record) with the
// application server's ephemeral key asPrivate and salt, padded with zeros
// after the delimiter to padTo bytes of plaintext when it is shorter
// (RFC 8188 section 2). Callers pass a fresh key and random salt for
// every message; tests pass the RFC's fixed ones.
func encrypt(plaintext []byte, uaPublic *ecdh.PublicKey, auth []byte, asPrivate *ecdh.PrivateKey, salt []byte, padTo int) ([]byte, error) {
	if len(plaintext) > MaxPlaintext {
		return nil, fmt.Errorf("webpush: payload of %d bytes exceeds %d", len(plaintext), MaxPlaintext)
	}
	padTo = min(max(padTo, len(plaintext)), MaxPlaintext)
	if len(salt) != saltLen || len(auth) != authLen {
		return nil, errors.New("webpush: salt and auth secret must be 16 bytes")
	}
	asPublic := asPrivate.PublicKey().Bytes()
	gcm, nonce, err := contentKeys(asPrivate, uaPublic, uaPublic.Bytes(), asPublic, auth, salt)
	if err != nil {
		return nil, err
	}
	out := make([]byte, headerLen, headerLen+padTo+1+tagLen)
	copy(out, salt)
	binary.BigEndian.PutUint32(out[saltLen:], recordSize)
	out[saltLen+4] = keyLen
	copy(out[saltLen+5:], asPublic)
	record := make([]byte, padTo+1)
	copy(record, plaintext)
	record[len(plaintext)] = 0x02 // last (and only) record; zeros follow
	return gcm.Seal(out, nonce, record, nil), nil
}

// Decrypt reverses the encryption for the user agent holding uaPrivate and
// auth: what a browser does with a push message. The push service mocks use
// it to check what we sent.
func Decrypt(body []byte, uaPrivate *ecdh.PrivateKey, auth []byte) ([]byte, error) {
	if len(body) < headerLen+tagLen+1 {
		return nil, errors.New("webpush: message shorter than the aes128gcm header")
	}
	salt := body[:saltLen]
	rs := binary.BigEndian.Uint32(body[saltLen:])
	if int(body[saltLen+4]) != keyLen {
		return nil, fmt.Errorf("webpush: keyid of %d bytes, want the 65-byte sender key", body[saltLen+4])
	}
	asPublic := body[saltLen+5 : headerLen]
	record := body[headerLen:]
	if uint32(len(record)) > rs {
		return nil, fmt.Errorf("webpush: record of %d bytes exceeds rs %d (one record only)", len(record), rs)
	}
	asKey, err := ecdh.P256().NewPublicKey(asPublic)
	if err != nil {
		return nil, fmt.Errorf("webpush: sender key: %w", err)
	}
	gcm, nonce, err := contentKeys(uaPrivate, asKey, uaPrivate.PublicKey().Bytes(), asPublic, auth, salt)
	if err != nil {
		return nil, err
	}
	plain, err := gcm.Open(nil, nonce, record, nil)
	if err != nil {
		return nil, fmt.Errorf("webpush: decrypting: %w", err)
	}
	// Strip padding: zeros after the delimiter, which must be 0x02 in the
	// last record.
	i := len(plain) - 1
	for i >= 0 && plain[i] == 0 {
		i--
	}
	if i < 0 || plain[i] != 0x02 {
		return nil, errors.New("webpush: bad padding delimiter")
	}
	return plain[:i], nil
}

// contentKeys derives the AES-GCM key and nonce of RFC 8291 section 3.4
// from our private key and the peer's public key; uaPublic and asPublic
// are the two public keys as the key_info names them, whoever holds which.
func contentKeys(priv *ecdh.PrivateKey, peer *ecdh.PublicKey, uaPublic, asPublic, auth, salt []byte) (cipher.AEAD, []byte, error) {
	secret, err := priv.ECDH(peer)
	if err != nil {
		return nil, nil, fmt.Errorf("webpush: ECDH: %w", err)
	}
	keyInfo := make([]byte, 0, 14+2*keyLen)
	keyInfo = append(append(append(keyInfo, "WebPush: info\x00"...), uaPublic...), asPublic...)
	ikm, err := hkdf.Key(sha256.New, secret, auth, string(keyInfo), 32)
	if err != nil {
		return nil, nil, err
	}
	prk, err := hkdf.Extract(sha256.New, ikm, salt)
	if err != nil {
		return nil, nil, err
	}
	cek, err := hkdf.Expand(sha256.New, prk, "Content-Encoding: aes128gcm\x00", 16)
	if err != nil {
		return nil, nil, err
	}
	nonce, err := hkdf.Expand(sha256.New, prk, "Content-Encoding: nonce\x00", 12)
	if err != nil {
		return nil, nil, err
	}
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, nil, err
	}
	return gcm, nonce, nil
}

// Encrypt encrypts plaintext for a subscription with a fresh ephemeral key
// and random salt, as every push message must be.
func Encrypt(plaintext []byte, s Subscription) ([]byte, error) {
	return EncryptPadded(plaintext, s, 0)
}

// EncryptPadded is Encrypt with the plaintext padded to padTo bytes (at
// most MaxPlaintext) when it is shorter: the push service, which sees
// the message's length, then learns no more of the text inside than
// which size it was padded to.
func EncryptPadded(plaintext []byte, s Subscription, padTo int) ([]byte, error) {
	asPrivate, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("webpush: ephemeral key: %w", err)
	}
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	return encrypt(plaintext, s.P256DH, s.Auth, asPrivate, salt, padTo)
}
