// Package keyformat generates, formats and parses Keyward access keys.
//
// A key reads
//
//	kw_<id>_<secret>_<checksum>
//
// where id is the public key ID (16 characters, 80 random bits), secret is
// 52 characters carrying 256 random bits, and checksum is a CRC-32 of
// everything before it (7 characters). Every part uses the lowercase base32
// alphabet, so the whole key is one "word": a double-click selects it, and
// the fixed prefix lets secret scanners find leaked keys. The checksum lets a
// verifier refuse a mistyped key without looking anything up.
//
// Only a hash of the secret (HashSecret) is stored outside the key's Secret.
// Errors from Parse never quote the key they were given.
package keyformat

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
)

// Prefix starts every key.
const Prefix = "kw_"

// Sizes of the random parts, in bytes, and of the encoded parts, in characters.
const (
	idBytes     = 10 // 80 bits: unique per cluster, public
	secretBytes = 32 // 256 bits of secret
	IDLen       = 16 // base32 of idBytes
	SecretLen   = 52 // base32 of secretBytes, unpadded
	checksumLen = 7  // base32 of a CRC-32, unpadded
	// Len is the length of a whole key.
	Len = len(Prefix) + IDLen + 1 + SecretLen + 1 + checksumLen
)

// HashPrefix starts every stored hash.
const HashPrefix = "sha256:"

var encoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Key is a parsed access key. Plaintext gives it back in full; treat that
// as a secret. Every other way of turning a Key into text (String, fmt,
// loggers that call String, JSON) shows only the key ID.
type Key struct {
	// ID is the public key ID, safe to show and log.
	ID string
	// Secret is the secret part. Never log it.
	Secret string `json:"-"`
}

// Errors of Parse. None of them carries any part of the key.
var (
	ErrMalformed = errors.New("not a Keyward access key (expected kw_<id>_<secret>_<checksum>)")
	ErrChecksum  = errors.New("the access key's checksum does not match: it was mistyped or altered")
)

// Generate draws a new key from crypto/rand.
func Generate() (Key, error) {
	buf := make([]byte, idBytes+secretBytes)
	if _, err := rand.Read(buf); err != nil {
		return Key{}, err
	}
	return Key{ID: encoding.EncodeToString(buf[:idBytes]), Secret: encoding.EncodeToString(buf[idBytes:])}, nil
}

// Plaintext is the full key, checksum included: what goes into the Secret.
func (k Key) Plaintext() string {
	body := Prefix + k.ID + "_" + k.Secret
	return body + "_" + checksum(body)
}

// String shows the key ID only, so that a Key handed to a logger (zap and
// klog call String) or to fmt never prints the secret.
func (k Key) String() string { return Prefix + k.ID + "_<redacted>" }

// GoString keeps %#v from printing the secret.
func (k Key) GoString() string { return "keyformat.Key{ID:" + k.ID + ", Secret:<redacted>}" }

// Format keeps every fmt verb, including %+v inside structs, from printing
// the secret.
func (k Key) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, k.String()) }

// Parse checks the shape and checksum of s and splits it into ID and secret.
func Parse(s string) (Key, error) {
	if len(s) != Len || !strings.HasPrefix(s, Prefix) {
		return Key{}, ErrMalformed
	}
	rest := s[len(Prefix):]
	id, rest := rest[:IDLen], rest[IDLen:]
	if rest[0] != '_' || rest[1+SecretLen] != '_' {
		return Key{}, ErrMalformed
	}
	secret, sum := rest[1:1+SecretLen], rest[2+SecretLen:]
	if !inAlphabet(id) || !inAlphabet(secret) || !inAlphabet(sum) {
		return Key{}, ErrMalformed
	}
	if subtle.ConstantTimeCompare([]byte(checksum(s[:len(s)-checksumLen-1])), []byte(sum)) != 1 {
		return Key{}, ErrChecksum
	}
	return Key{ID: id, Secret: secret}, nil
}

// HashSecret is what status stores of a secret: "sha256:<hex>". The secret
// carries 256 random bits, so a plain SHA-256 cannot be brute-forced and
// needs no salt or slow KDF.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return HashPrefix + hex.EncodeToString(sum[:])
}

// hashLen is the length of HashSecret's result.
const hashLen = len(HashPrefix) + 2*sha256.Size

// DecoyHash is a well-formed hash no secret has: comparing a secret with it
// costs what comparing with a real hash costs, so that an answer about an
// ID nobody holds takes as long as one about a wrong secret.
const DecoyHash = HashPrefix + "0000000000000000000000000000000000000000000000000000000000000000"

// SecretMatches reports, in constant time, whether secret hashes to hash
// (HashSecret(secret) == hash). The verifier calls it on every request, so
// it writes the hash into a buffer on the stack rather than into a string.
// The length of hash is not secret.
func SecretMatches(secret, hash string) bool {
	sum := sha256.Sum256([]byte(secret))
	var buf [hashLen]byte
	copy(buf[:], HashPrefix)
	hex.Encode(buf[len(HashPrefix):], sum[:])
	if len(hash) != hashLen {
		return false
	}
	var v byte
	for i := 0; i < hashLen; i++ {
		v |= buf[i] ^ hash[i]
	}
	return subtle.ConstantTimeByteEq(v, 0) == 1
}

// Material is one key material as an AccessKey's status records it: its
// ID and the hash of its secret ("" once the hash is destroyed).
type Material struct {
	ID, Hash string
}

// Match says which of a key's materials a presented key is.
type Match int

const (
	NoMatch Match = iota
	MatchCurrent
	MatchPrevious
)

// MatchMaterial reports which of a key's materials k is: the one with k's
// ID and a hash, if k's secret hashes to it. Whatever the answer, one hash
// is compared in constant time, so the time taken does not tell which IDs
// exist. Whether a previous material is still within its grace period is
// the caller's question.
func MatchMaterial(k Key, current, previous Material) Match {
	switch {
	case current.ID == k.ID && current.Hash != "":
		if SecretMatches(k.Secret, current.Hash) {
			return MatchCurrent
		}
	case previous.ID == k.ID && previous.Hash != "":
		if SecretMatches(k.Secret, previous.Hash) {
			return MatchPrevious
		}
	default:
		SecretMatches(k.Secret, DecoyHash)
	}
	return NoMatch
}

func checksum(body string) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], crc32.ChecksumIEEE([]byte(body)))
	return encoding.EncodeToString(b[:])
}

func inAlphabet(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '2' || c > '7') {
			return false
		}
	}
	return true
}
