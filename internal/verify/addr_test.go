package verify

import (
	"net/netip"
	"testing"
	"time"
)

func TestClientAddr(t *testing.T) {
	trusted, err := ParseTrustedProxies("10.0.0.0/8, 2001:db8:ffff::/48,192.0.2.1")
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
		{name: "right-most untrusted hop wins over spoofed left hops", peer: "10.0.0.1", xff: []string{"6.6.6.6, 1.1.1.1, 10.2.3.4"}, trusted: trusted, want: "1.1.1.1"},
		{name: "several header lines are one list", peer: "10.0.0.1", xff: []string{"6.6.6.6, 1.1.1.1", "10.2.3.4"}, trusted: trusted, want: "1.1.1.1"},
		{name: "every hop trusted: the left-most", peer: "10.0.0.1", xff: []string{"10.9.9.9,10.2.3.4"}, trusted: trusted, want: "10.9.9.9"},
		{name: "garbage hop ends the walk at the trusted hop right of it", peer: "10.0.0.1", xff: []string{"1.1.1.1, garbage, 10.2.3.4"}, trusted: trusted, want: "10.2.3.4"},
		{name: "garbage right away: the peer", peer: "10.0.0.1", xff: []string{"nonsense"}, trusted: trusted, want: "10.0.0.1"},
		{name: "empty entries skipped", peer: "10.0.0.1", xff: []string{" , 1.1.1.1 ,, "}, trusted: trusted, want: "1.1.1.1"},
		{name: "IPv6 hop", peer: "10.0.0.1", xff: []string{"2001:db8::7"}, trusted: trusted, want: "2001:db8::7"},
		{name: "IPv6 hop with port in brackets", peer: "10.0.0.1", xff: []string{"[2001:db8::7]:4711"}, trusted: trusted, want: "2001:db8::7"},
		{name: "IPv4 hop with port", peer: "10.0.0.1", xff: []string{"1.1.1.1:80"}, trusted: trusted, want: "1.1.1.1"},
		{name: "IPv4-mapped hop is IPv4", peer: "10.0.0.1", xff: []string{"::ffff:1.1.1.1"}, trusted: trusted, want: "1.1.1.1"},
		{name: "IPv4-mapped trusted peer", peer: "::ffff:10.0.0.1", xff: []string{"1.1.1.1"}, trusted: trusted, want: "1.1.1.1"},
		{name: "IPv4-mapped untrusted peer is returned as IPv4", peer: "::ffff:203.0.113.9", trusted: trusted, want: "203.0.113.9"},
		{name: "trusted IPv6 proxy", peer: "2001:db8:ffff::1", xff: []string{"1.1.1.1, 2001:db8:ffff::2"}, trusted: trusted, want: "1.1.1.1"},
		{name: "single trusted address", peer: "192.0.2.1", xff: []string{"1.1.1.1"}, trusted: trusted, want: "1.1.1.1"},
		{name: "neighbour of a single trusted address is not trusted", peer: "192.0.2.2", xff: []string{"1.1.1.1"}, trusted: trusted, want: "192.0.2.2"},
		{name: "X-Real-IP without X-Forwarded-For", peer: "10.0.0.1", realIP: "1.1.1.1", trusted: trusted, want: "1.1.1.1"},
		{name: "X-Forwarded-For wins over X-Real-IP", peer: "10.0.0.1", xff: []string{"1.1.1.1"}, realIP: "2.2.2.2", trusted: trusted, want: "1.1.1.1"},
		{name: "bad X-Real-IP: the peer", peer: "10.0.0.1", realIP: "bogus", trusted: trusted, want: "10.0.0.1"},
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
	if _, err := ParseTrustedProxies("10.0.0.0/8,not-a-cidr"); err == nil {
		t.Fatal("a bad entry must be refused")
	}
	tp, err := ParseTrustedProxies("")
	if err != nil || len(tp) != 0 {
		t.Fatalf("empty: %v %v", tp, err)
	}
	tp, _ = ParseTrustedProxies("::ffff:10.0.0.0/104")
	if !tp.Contains(netip.MustParseAddr("10.1.1.1")) || tp.String() != "10.0.0.0/8" {
		t.Fatalf("mapped CIDR read as %s", tp)
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

func TestLimiter(t *testing.T) {
	l := NewLimiter(1, 3, 2)
	a, b, c := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")
	for i := 0; i < 3; i++ {
		if blocked, _ := l.Blocked(a, t0); blocked {
			t.Fatalf("blocked after %d failures, burst is 3", i)
		}
		l.Fail(a, t0)
	}
	blocked, wait := l.Blocked(a, t0)
	if !blocked || wait != time.Second {
		t.Fatalf("after the burst: blocked %v, retry after %v (want 1s)", blocked, wait)
	}
	if blocked, _ := l.Blocked(b, t0); blocked {
		t.Fatal("another address is not blocked")
	}
	if blocked, _ := l.Blocked(a, t0.Add(time.Second)); blocked {
		t.Fatal("a token refills after 1/rate")
	}
	// IPv6 clients share a bucket per /64.
	l6 := NewLimiter(1, 1, 10)
	l6.Fail(netip.MustParseAddr("2001:db8:1:2::1"), t0)
	if blocked, _ := l6.Blocked(netip.MustParseAddr("2001:db8:1:2:ffff::9"), t0); !blocked {
		t.Fatal("same /64 must share the bucket")
	}
	if blocked, _ := l6.Blocked(netip.MustParseAddr("2001:db8:1:3::1"), t0); blocked {
		t.Fatal("another /64 has its own bucket")
	}
	// Bounded memory: a third client evicts the least recently failing one.
	l.Fail(b, t0)
	l.Fail(c, t0)
	if n := l.Len(); n != 2 {
		t.Fatalf("%d buckets, max 2", n)
	}
	if blocked, _ := l.Blocked(a, t0); blocked {
		t.Fatal("the evicted (least recent) client starts afresh")
	}
	// Off.
	off := NewLimiter(0, 1, 1)
	off.Fail(a, t0)
	off.Fail(a, t0)
	if blocked, _ := off.Blocked(a, t0); blocked {
		t.Fatal("rate 0 turns limiting off")
	}
}
