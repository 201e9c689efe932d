package apnsmock

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
)

func ecdsaKey() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

// TokenKey makes a provider token signing key, as Apple's p8 file holds it
// (PKCS#8 PEM), and returns it with its public half for Config.TokenKey.
func TokenKey() (p8 []byte, pub *ecdsa.PublicKey, err error) {
	k, err := ecdsaKey()
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), &k.PublicKey, nil
}
