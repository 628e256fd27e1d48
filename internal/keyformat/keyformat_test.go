package keyformat

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
)

func mustGenerate(t testing.TB) Key {
	t.Helper()
	k, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestRoundTrip(t *testing.T) {
	k := mustGenerate(t)
	s := k.Plaintext()
	if len(s) != Len {
		t.Fatalf("length %d, want %d", len(s), Len)
	}
	got, err := Parse(s)
	if err != nil {
		t.Fatalf("Parse of a generated key: %v", err)
	}
	if got != k {
		t.Fatalf("round trip changed the key (ID %s became %s)", k.ID, got.ID)
	}
}

func TestShape(t *testing.T) {
	// One word for a double-click, recognisable prefix, four parts.
	shape := regexp.MustCompile(`^kw_[a-z2-7]{16}_[a-z2-7]{52}_[a-z2-7]{7}$`)
	for i := 0; i < 100; i++ {
		if s := mustGenerate(t).Plaintext(); !shape.MatchString(s) {
			t.Fatalf("key %d does not have the documented shape", i)
		}
	}
}

func TestSecretCarriesAtLeast256Bits(t *testing.T) {
	if secretBytes*8 < 256 {
		t.Fatalf("secret has %d bits", secretBytes*8)
	}
	if got := len(encoding.EncodeToString(make([]byte, secretBytes))); got != SecretLen {
		t.Fatalf("SecretLen %d, encoding gives %d", SecretLen, got)
	}
	if got := len(encoding.EncodeToString(make([]byte, idBytes))); got != IDLen {
		t.Fatalf("IDLen %d, encoding gives %d", IDLen, got)
	}
}

// Every single-character typo anywhere in the key is refused without a lookup.
func TestChecksumRejectsEveryTypo(t *testing.T) {
	s := mustGenerate(t).Plaintext()
	for i := len(Prefix); i < len(s); i++ {
		if s[i] == '_' {
			continue
		}
		for _, c := range "abcdefghijklmnopqrstuvwxyz234567" {
			if byte(c) == s[i] {
				continue
			}
			typo := s[:i] + string(c) + s[i+1:]
			if _, err := Parse(typo); !errors.Is(err, ErrChecksum) {
				t.Fatalf("typo at position %d: got %v, want ErrChecksum", i, err)
			}
		}
	}
	// Two adjacent characters swapped.
	for i := len(Prefix); i+1 < len(s); i++ {
		if s[i] == s[i+1] || s[i] == '_' || s[i+1] == '_' {
			continue
		}
		swapped := s[:i] + string(s[i+1]) + string(s[i]) + s[i+2:]
		if _, err := Parse(swapped); err == nil {
			t.Fatalf("transposition at %d accepted", i)
		}
	}
}

func TestParseRefusesMalformedKeys(t *testing.T) {
	good := mustGenerate(t).Plaintext()
	cases := map[string]string{
		"empty":            "",
		"other prefix":     "gh_" + good[3:],
		"upper case":       strings.ToUpper(good),
		"truncated":        good[:len(good)-1],
		"extended":         good + "a",
		"hyphen separator": strings.Replace(good, "_", "-", 2),
		"bad alphabet":     good[:10] + "0" + good[11:],
		"whitespace":       " " + good[:len(good)-1],
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse(in)
			if err == nil {
				t.Fatal("accepted")
			}
			if in != "" && strings.Contains(err.Error(), in[len(Prefix):]) {
				t.Fatal("the error quotes the key")
			}
		})
	}
}

func TestNoTwoKeysAlike(t *testing.T) {
	const draws = 100_000
	ids := make(map[string]struct{}, draws)
	secrets := make(map[string]struct{}, draws)
	for i := 0; i < draws; i++ {
		k := mustGenerate(t)
		if _, dup := ids[k.ID]; dup {
			t.Fatalf("key ID repeated after %d draws", i)
		}
		if _, dup := secrets[k.Secret]; dup {
			t.Fatalf("secret repeated after %d draws", i)
		}
		ids[k.ID], secrets[k.Secret] = struct{}{}, struct{}{}
	}
}

func TestHash(t *testing.T) {
	k := mustGenerate(t)
	h := HashSecret(k.Secret)
	if !regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).MatchString(h) {
		t.Fatalf("hash %q is not sha256:<hex>", h)
	}
	if strings.Contains(h, k.Secret) {
		t.Fatal("the hash contains the secret")
	}
	if !SecretMatches(k.Secret, h) {
		t.Fatal("the secret does not match its own hash")
	}
	other := mustGenerate(t)
	if SecretMatches(other.Secret, h) || SecretMatches(k.Secret, "") || SecretMatches(k.Secret, h[:len(h)-1]) {
		t.Fatal("a wrong secret or hash matched")
	}
}

// Printing a Key by accident (a log line, %v of a struct, a test failure)
// never shows the secret.
func TestFormattingRedactsTheSecret(t *testing.T) {
	k := mustGenerate(t)
	wrapper := struct{ Material Key }{k}
	asJSON, err := json.Marshal(wrapper)
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{
		fmt.Sprintf("%v", k), fmt.Sprintf("%s", k), fmt.Sprintf("%+v", k), fmt.Sprintf("%#v", k),
		fmt.Sprintf("%v", wrapper), fmt.Sprintf("%+v", &wrapper), fmt.Sprint(k), k.String(), string(asJSON),
	} {
		if strings.Contains(out, k.Secret) {
			t.Fatalf("formatting printed the secret")
		}
		if !strings.Contains(out, k.ID) {
			t.Fatalf("formatting lost the key ID: %s", out)
		}
	}
}

func BenchmarkParseAndMatch(b *testing.B) {
	k := mustGenerate(b)
	s, h := k.Plaintext(), HashSecret(k.Secret)
	b.ReportAllocs()
	for b.Loop() {
		p, err := Parse(s)
		if err != nil || !SecretMatches(p.Secret, h) {
			b.Fatal("no match")
		}
	}
}

// TestSecretMatchesIsTheHashComparison: the allocation-free comparison
// answers what comparing HashSecret's result would.
func TestSecretMatchesIsTheHashComparison(t *testing.T) {
	a, _ := Generate()
	b, _ := Generate()
	for _, c := range []struct{ secret, hash string }{
		{a.Secret, HashSecret(a.Secret)},
		{a.Secret, HashSecret(b.Secret)},
		{a.Secret, ""},
		{a.Secret, HashSecret(a.Secret)[:70]},
		{a.Secret, HashSecret(a.Secret) + "0"},
		{"", HashSecret("")},
		{a.Secret, strings.ToUpper(HashSecret(a.Secret))},
		{a.Secret, DecoyHash},
	} {
		want := subtle.ConstantTimeCompare([]byte(HashSecret(c.secret)), []byte(c.hash)) == 1
		if got := SecretMatches(c.secret, c.hash); got != want {
			t.Fatalf("SecretMatches %v, the hash comparison %v", got, want)
		}
	}
}

func TestMatchMaterial(t *testing.T) {
	cur, _ := Generate()
	prev, _ := Generate()
	other, _ := Generate()
	current := Material{ID: cur.ID, Hash: HashSecret(cur.Secret)}
	previous := Material{ID: prev.ID, Hash: HashSecret(prev.Secret)}
	for _, c := range []struct {
		name              string
		key               Key
		current, previous Material
		want              Match
	}{
		{"current", cur, current, previous, MatchCurrent},
		{"previous", prev, current, previous, MatchPrevious},
		{"unknown ID", other, current, previous, NoMatch},
		{"wrong secret for the current ID", Key{ID: cur.ID, Secret: other.Secret}, current, previous, NoMatch},
		{"wrong secret for the previous ID", Key{ID: prev.ID, Secret: other.Secret}, current, previous, NoMatch},
		{"current hash destroyed", cur, Material{ID: cur.ID}, previous, NoMatch},
		{"previous hash destroyed", prev, current, Material{ID: prev.ID}, NoMatch},
		{"no previous", prev, current, Material{}, NoMatch},
	} {
		if got := MatchMaterial(c.key, c.current, c.previous); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
