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

// FuzzClientAddr: X-Forwarded-For and X-Real-IP handling never panics; an
// untrusted peer is always the answer; the answer is the peer or an address
// named in the header the peer's entry says its gateway sets; behind an
// X-Real-IP gateway no X-Forwarded-For changes the answer, and behind an
// X-Forwarded-For gateway no X-Real-IP does; with N hops, only the N
// right-most X-Forwarded-For entries matter: whatever a client writes to
// their left (as more entries or as earlier header lines) changes nothing.
func FuzzClientAddr(f *testing.F) {
	f.Add("10.0.0.1", "1.1.1.1, 10.0.0.2", "2.2.2.2", "6.6.6.6")
	f.Add("203.0.113.1", "1.1.1.1", "", "")
	f.Add("10.0.0.1", "[2001:db8::1]:80,garbage,10.1.1.1", "", "x,,y")
	f.Add("::ffff:10.0.0.1", ",,,", "::ffff:1.2.3.4", "1.2.3.4")
	f.Add("10.7.7.7", "6.6.6.6, 1.1.1.1, 10.7.3.4, 10.7.7.9", "2.2.2.2", "")
	f.Add("127.0.0.1", "6.6.6.6", "1.1.1.1", "7.7.7.7")
	f.Add("10.9.1.1", "", "bogus", "1.1.1.1")
	trusted, err := ParseTrustedProxies("10.0.0.0/8,2001:db8:ffff::/48,10.7.0.0/16=xff:2,10.7.7.0/24=xff:3,127.0.0.1=x-real-ip,10.9.0.0/16=x-real-ip")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, peer, xff, realIP, forged string) {
		p, err := netip.ParseAddr(peer)
		if err != nil {
			return
		}
		got := ClientAddr(p, []string{xff}, realIP, trusted)
		entry, ok := trusted.lookup(p)
		if !ok {
			if got != p.Unmap() {
				t.Fatalf("untrusted peer %v, got %v", p, got)
			}
			return
		}
		if got.Is4In6() || !got.IsValid() {
			t.Fatalf("returned %v", got)
		}
		if entry.Header == RealIP {
			if a, ok := ParseHop(strings.TrimSpace(realIP)); (ok && got != a) || (!ok && got != p.Unmap()) {
				t.Fatalf("behind an X-Real-IP gateway: %v (X-Real-IP %q)", got, realIP)
			}
			if again := ClientAddr(p, []string{forged, xff + "," + forged}, realIP, trusted); again != got {
				t.Fatalf("X-Forwarded-For moved a client behind an X-Real-IP gateway from %v to %v", got, again)
			}
			return
		}
		if again := ClientAddr(p, []string{xff}, forged, trusted); again != got {
			t.Fatalf("X-Real-IP moved a client behind an X-Forwarded-For gateway from %v to %v", got, again)
		}
		// The entries the gateways appended: the N right-most.
		var entries []string
		for _, e := range strings.Split(xff, ",") {
			if e = strings.TrimSpace(e); e != "" {
				entries = append(entries, e)
			}
		}
		if got != p.Unmap() {
			named := false
			for _, e := range entries[max(len(entries)-entry.Hops, 0):] {
				if a, ok := ParseHop(e); ok && a == got {
					named = true
				}
			}
			if !named {
				t.Fatalf("%v is not among the %d right-most entries of %q", got, entry.Hops, xff)
			}
		}
		if len(entries) >= entry.Hops {
			if again := ClientAddr(p, []string{forged + "," + xff}, realIP, trusted); again != got {
				t.Fatalf("entries left of the %d right-most moved the client from %v to %v", entry.Hops, got, again)
			}
			if again := ClientAddr(p, []string{forged, xff}, realIP, trusted); again != got {
				t.Fatalf("an earlier header line moved the client from %v to %v", got, again)
			}
		}
		_ = AddrAllowed([]string{xff, realIP, "10.0.0.0/8"}, got)
	})
}

// FuzzParseTrustedProxies: parsing the flag never panics, and what it
// accepts reads back the same from its own String.
func FuzzParseTrustedProxies(f *testing.F) {
	for _, s := range []string{"", "10.0.0.7", "10.0.0.0/24=xff:2", "127.0.0.1=x-real-ip, ::1", "10.0.0.1=xff:99", "a=b=c", "::ffff:10.0.0.0/104=XFF"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tp, err := ParseTrustedProxies(s)
		if err != nil {
			return
		}
		again, err := ParseTrustedProxies(tp.String())
		if err != nil || again.String() != tp.String() {
			t.Fatalf("%q read as %q, which reads as %q (%v)", s, tp, again, err)
		}
		for _, e := range tp {
			if e.Hops < 1 || e.Hops > MaxHops {
				t.Fatalf("hops %d", e.Hops)
			}
		}
	})
}
