package keyformat

import (
	"strings"
	"testing"
)

// FuzzParse: Parse never panics on any input; whatever it accepts has the
// documented length and prefix and round-trips through Plaintext; its errors
// never quote the input.
func FuzzParse(f *testing.F) {
	k, _ := Generate()
	good := k.Plaintext()
	for _, s := range []string{good, "", "kw_", Prefix + strings.Repeat("a", Len-len(Prefix)),
		good[:Len-1], good + "a", strings.ToUpper(good), strings.Replace(good, "_", "-", 1),
		"kw_" + strings.Repeat("_", Len-3), "\x00kw_", string([]byte{0xff, 0xfe})} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		pk, err := Parse(s)
		if err != nil {
			if err != ErrMalformed && err != ErrChecksum {
				t.Fatalf("unexpected error type %T", err)
			}
			if s != "" && len(s) > 8 && strings.Contains(err.Error(), s) {
				t.Fatal("the error quotes the input")
			}
			return
		}
		if len(s) != Len || !strings.HasPrefix(s, Prefix) {
			t.Fatalf("accepted a key of length %d", len(s))
		}
		if pk.Plaintext() != s {
			t.Fatal("an accepted key does not round-trip")
		}
		if strings.Contains(pk.String(), pk.Secret) {
			t.Fatal("String shows the secret")
		}
	})
}

// FuzzGenerateRoundTrip: for a generated key, Parse(Plaintext) gives the
// same key back, and changing any one character (position and replacement
// chosen by the fuzzer) is refused. The fuzzer also drives the key's bytes,
// so the property is checked over arbitrary IDs and secrets, not only
// random ones.
func FuzzGenerateRoundTrip(f *testing.F) {
	f.Add([]byte{}, uint16(0), byte('a'))
	f.Add([]byte("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"), uint16(3), byte('_'))
	f.Add([]byte{0xff, 0x00, 0x10}, uint16(Len-1), byte('7'))
	f.Add([]byte{1}, uint16(20), byte('Z'))
	f.Fuzz(func(t *testing.T, seed []byte, pos uint16, repl byte) {
		// A key from the fuzzer's bytes (padded/cut to the random parts' size).
		buf := make([]byte, idBytes+secretBytes)
		copy(buf, seed)
		k := Key{ID: encoding.EncodeToString(buf[:idBytes]), Secret: encoding.EncodeToString(buf[idBytes:])}
		if len(seed) == 0 {
			var err error
			if k, err = Generate(); err != nil {
				t.Fatal(err)
			}
		}
		s := k.Plaintext()
		got, err := Parse(s)
		if err != nil {
			t.Fatalf("Parse refuses a well-formed key: %v", err)
		}
		if got != k {
			t.Fatalf("round trip changed the key (ID %s became %s)", k.ID, got.ID)
		}
		if !SecretMatches(got.Secret, HashSecret(k.Secret)) {
			t.Fatal("the parsed secret does not match the stored hash")
		}
		i := int(pos) % Len
		if s[i] == repl {
			return
		}
		mutated := s[:i] + string([]byte{repl}) + s[i+1:]
		if _, err := Parse(mutated); err == nil {
			t.Fatalf("a one-character change at position %d was accepted", i)
		}
	})
}
