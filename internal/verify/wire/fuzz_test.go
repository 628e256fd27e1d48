package wire

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"keyward.dev/keyward/internal/keyformat"
)

// FuzzParseKey: parsing never panics, accepts only well-formed keys, and
// what it accepts round-trips.
func FuzzParseKey(f *testing.F) {
	k, _ := keyformat.Generate()
	for _, s := range []string{k.Plaintext(), "", "kw_", "kw_" + strings.Repeat("a", keyformat.Len-3), "Bearer kw_x", k.Plaintext() + " "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		pk, err := keyformat.Parse(s)
		if err != nil {
			return
		}
		if pk.Plaintext() != s {
			t.Fatal("an accepted key does not round-trip")
		}
		if strings.Contains(pk.String(), pk.Secret) {
			t.Fatal("String shows the secret")
		}
	})
}

// FuzzKeyFrom: reading the key from headers never panics and returns a
// trimmed value taken from one of the headers.
func FuzzKeyFrom(f *testing.F) {
	f.Add("Bearer kw_abc", "", "")
	f.Add("bearer   x ", "y", "z")
	f.Add("Basic Zm9v", "kw_k", "")
	f.Add("", "", "custom")
	f.Fuzz(func(t *testing.T, authz, apiKey, custom string) {
		h := http.Header{}
		h.Set("Authorization", authz)
		h.Set("X-API-Key", apiKey)
		h.Set("X-Custom", custom)
		got := KeyFrom(h, "X-Custom")
		if got != strings.TrimSpace(got) {
			t.Fatalf("untrimmed key")
		}
		if got != "" && !strings.Contains(authz, got) && !strings.Contains(apiKey, got) && !strings.Contains(custom, got) {
			t.Fatalf("key from nowhere")
		}
	})
}

// FuzzClientAddr: X-Forwarded-For handling never panics; an untrusted peer
// is always the answer; the answer is the peer or an address named in the
// headers; an answer other than the peer only comes through a trusted peer.
func FuzzClientAddr(f *testing.F) {
	f.Add("10.0.0.1", "1.1.1.1, 10.0.0.2", "2.2.2.2")
	f.Add("203.0.113.1", "1.1.1.1", "")
	f.Add("10.0.0.1", "[2001:db8::1]:80,garbage,10.1.1.1", "")
	f.Add("::ffff:10.0.0.1", ",,,", "::ffff:1.2.3.4")
	trusted, _ := ParseTrustedProxies("10.0.0.0/8,2001:db8:ffff::/48")
	f.Fuzz(func(t *testing.T, peer, xff, realIP string) {
		p, err := netip.ParseAddr(peer)
		if err != nil {
			return
		}
		got := ClientAddr(p, []string{xff}, realIP, trusted)
		if !trusted.Contains(p) {
			if got != p.Unmap() {
				t.Fatalf("untrusted peer %v, got %v", p, got)
			}
			return
		}
		if got.Is4In6() {
			t.Fatal("mapped address returned")
		}
		if got != p.Unmap() && !got.IsValid() {
			t.Fatal("invalid address returned")
		}
		_ = AddrAllowed([]string{xff, realIP, "10.0.0.0/8"}, got)
	})
}
