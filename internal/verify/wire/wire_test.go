package wire

import (
	"net/http"
	"net/netip"
	"testing"
)

func TestClientAddr(t *testing.T) {
	trusted, err := ParseTrustedProxies("10.0.0.0/8, 2001:db8:ffff::/48,192.0.2.1, 10.7.0.0/16=xff:2, 10.7.7.0/24=xff:3, 127.0.0.1=x-real-ip, 10.9.0.0/16=X-Real-IP")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		peer    string
		xff     []string
		realIP  string
		trusted TrustedProxies
		want    string
	}{
		{name: "untrusted peer: headers ignored", peer: "203.0.113.9", xff: []string{"1.1.1.1"}, realIP: "2.2.2.2", trusted: trusted, want: "203.0.113.9"},
		{name: "no trusted proxies at all", peer: "10.0.0.1", xff: []string{"1.1.1.1"}, want: "10.0.0.1"},
		{name: "trusted peer, one hop", peer: "10.0.0.1", xff: []string{"1.1.1.1"}, trusted: trusted, want: "1.1.1.1"},
		{name: "one hop: the right-most entry, whatever the client wrote left of it", peer: "10.0.0.1", xff: []string{"6.6.6.6, 1.1.1.1"}, trusted: trusted, want: "1.1.1.1"},
		{name: "one hop: a client inside a trusted network cannot forge", peer: "10.0.0.1", xff: []string{"6.6.6.6, 10.2.3.4"}, trusted: trusted, want: "10.2.3.4"},
		{name: "two hops: the second from the right", peer: "10.7.0.1", xff: []string{"6.6.6.6, 1.1.1.1, 10.7.3.4"}, trusted: trusted, want: "1.1.1.1"},
		{name: "several header lines are one list", peer: "10.7.0.1", xff: []string{"6.6.6.6, 1.1.1.1", "10.7.3.4"}, trusted: trusted, want: "1.1.1.1"},
		{name: "the narrowest entry decides: three hops", peer: "10.7.7.1", xff: []string{"6.6.6.6, 1.1.1.1, 10.7.3.4, 10.7.7.9"}, trusted: trusted, want: "1.1.1.1"},
		{name: "fewer entries than hops: the left-most", peer: "10.7.0.1", xff: []string{"1.1.1.1"}, trusted: trusted, want: "1.1.1.1"},
		{name: "garbage hop ends the walk at the hop right of it", peer: "10.7.7.1", xff: []string{"1.1.1.1, garbage, 10.2.3.4"}, trusted: trusted, want: "10.2.3.4"},
		{name: "garbage right away: the peer", peer: "10.0.0.1", xff: []string{"nonsense"}, trusted: trusted, want: "10.0.0.1"},
		{name: "garbage left of the hops is never read", peer: "10.0.0.1", xff: []string{"nonsense, 1.1.1.1"}, trusted: trusted, want: "1.1.1.1"},
		{name: "empty entries skipped", peer: "10.0.0.1", xff: []string{" , 1.1.1.1 ,, "}, trusted: trusted, want: "1.1.1.1"},
		{name: "IPv6 hop", peer: "10.0.0.1", xff: []string{"2001:db8::7"}, trusted: trusted, want: "2001:db8::7"},
		{name: "IPv6 hop with port in brackets", peer: "10.0.0.1", xff: []string{"[2001:db8::7]:4711"}, trusted: trusted, want: "2001:db8::7"},
		{name: "IPv4 hop with port", peer: "10.0.0.1", xff: []string{"1.1.1.1:80"}, trusted: trusted, want: "1.1.1.1"},
		{name: "IPv4-mapped hop is IPv4", peer: "10.0.0.1", xff: []string{"::ffff:1.1.1.1"}, trusted: trusted, want: "1.1.1.1"},
		{name: "IPv4-mapped trusted peer", peer: "::ffff:10.0.0.1", xff: []string{"1.1.1.1"}, trusted: trusted, want: "1.1.1.1"},
		{name: "IPv4-mapped untrusted peer is returned as IPv4", peer: "::ffff:203.0.113.9", trusted: trusted, want: "203.0.113.9"},
		{name: "trusted IPv6 proxy", peer: "2001:db8:ffff::1", xff: []string{"6.6.6.6, 1.1.1.1"}, trusted: trusted, want: "1.1.1.1"},
		{name: "single trusted address", peer: "192.0.2.1", xff: []string{"1.1.1.1"}, trusted: trusted, want: "1.1.1.1"},
		{name: "neighbour of a single trusted address is not trusted", peer: "192.0.2.2", xff: []string{"1.1.1.1"}, trusted: trusted, want: "192.0.2.2"},
		{name: "X-Real-IP from an X-Forwarded-For gateway is not read", peer: "10.0.0.1", realIP: "1.1.1.1", trusted: trusted, want: "10.0.0.1"},
		{name: "X-Forwarded-For gateway: X-Real-IP ignored", peer: "10.0.0.1", xff: []string{"1.1.1.1"}, realIP: "2.2.2.2", trusted: trusted, want: "1.1.1.1"},
		{name: "X-Real-IP gateway: X-Real-IP", peer: "127.0.0.1", realIP: "1.1.1.1", trusted: trusted, want: "1.1.1.1"},
		{name: "X-Real-IP gateway: the client's X-Forwarded-For is ignored", peer: "127.0.0.1", xff: []string{"6.6.6.6"}, realIP: "1.1.1.1", trusted: trusted, want: "1.1.1.1"},
		{name: "X-Real-IP gateway (narrower than a trusted /8)", peer: "10.9.1.1", xff: []string{"6.6.6.6"}, realIP: "1.1.1.1", trusted: trusted, want: "1.1.1.1"},
		{name: "X-Real-IP gateway without X-Real-IP: the peer, not X-Forwarded-For", peer: "127.0.0.1", xff: []string{"6.6.6.6"}, trusted: trusted, want: "127.0.0.1"},
		{name: "bad X-Real-IP: the peer", peer: "127.0.0.1", realIP: "bogus", trusted: trusted, want: "127.0.0.1"},
		{name: "zone refused", peer: "10.0.0.1", xff: []string{"fe80::1%eth0"}, trusted: trusted, want: "10.0.0.1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := ClientAddr(netip.MustParseAddr(c.peer), c.xff, c.realIP, c.trusted)
			if got != netip.MustParseAddr(c.want) {
				t.Fatalf("client %v, want %s", got, c.want)
			}
		})
	}
}

func TestParseTrustedProxies(t *testing.T) {
	for _, bad := range []string{"10.0.0.0/8,not-a-cidr", "10.0.0.1=xff:0", "10.0.0.1=xff:17", "10.0.0.1=xff:two", "10.0.0.1=x-forwarded-host",
		"10.0.0.1=", "=xff", "10.0.0.0/8=xff:2,10.0.0.0/8=x-real-ip"} {
		if _, err := ParseTrustedProxies(bad); err == nil {
			t.Errorf("%q must be refused", bad)
		}
	}
	tp, err := ParseTrustedProxies("")
	if err != nil || len(tp) != 0 {
		t.Fatalf("empty: %v %v", tp, err)
	}
	tp, _ = ParseTrustedProxies("::ffff:10.0.0.0/104")
	if !tp.Contains(netip.MustParseAddr("10.1.1.1")) || tp.String() != "10.0.0.0/8" {
		t.Fatalf("mapped CIDR read as %s", tp)
	}
	// The old syntax and every spelling of the new one, written back in
	// the flag's syntax.
	tp, err = ParseTrustedProxies(" 10.0.0.7 , 10.0.0.0/24=XFF:2,10.1.0.0/16=xff, 127.0.0.1=x-real-ip,10.2.0.0/16=x-forwarded-for:3, 10.0.0.7/32")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tp.String(), "10.0.0.7/32,10.0.0.0/24=xff:2,10.1.0.0/16,127.0.0.1/32=x-real-ip,10.2.0.0/16=xff:3"; got != want {
		t.Fatalf("read as %s, want %s", got, want)
	}
}

func TestPeerAddr(t *testing.T) {
	for in, want := range map[string]string{"1.2.3.4:80": "1.2.3.4", "[2001:db8::1]:443": "2001:db8::1", "[::ffff:1.2.3.4]:1": "1.2.3.4"} {
		if got := PeerAddr(in); got != netip.MustParseAddr(want) {
			t.Errorf("PeerAddr(%q) = %v, want %s", in, got, want)
		}
	}
	if PeerAddr("@").IsValid() {
		t.Error("a non-address peer must be the zero address")
	}
}

func TestKeyFrom(t *testing.T) {
	h := http.Header{}
	if KeyFrom(h, "") != "" {
		t.Fatal("no key")
	}
	h.Set("X-API-Key", " k1 ")
	h.Set("Authorization", "Bearer   k2")
	if got := KeyFrom(h, ""); got != "k2" {
		t.Fatalf("bearer first: %q", got)
	}
	h.Set("X-Mine", "k3")
	if got := KeyFrom(h, "X-Mine"); got != "k3" {
		t.Fatalf("flag header first: %q", got)
	}
	h.Set("Authorization", "Basic abc")
	if got := KeyFrom(h, ""); got != "k1" {
		t.Fatalf("basic is not a key, X-API-Key is: %q", got)
	}
}
