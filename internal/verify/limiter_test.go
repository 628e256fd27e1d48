package verify

import (
	"net/netip"
	"testing"
	"time"

	"keyward.dev/keyward/internal/verify/verifytest"
)

func TestLimiter(t *testing.T) {
	l := NewLimiter(1, 3, 2)
	a, b, c := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")
	for i := 0; i < 3; i++ {
		if blocked, _ := l.Blocked(a, verifytest.T0); blocked {
			t.Fatalf("blocked after %d failures, burst is 3", i)
		}
		l.Fail(a, verifytest.T0)
	}
	blocked, wait := l.Blocked(a, verifytest.T0)
	if !blocked || wait != time.Second {
		t.Fatalf("after the burst: blocked %v, retry after %v (want 1s)", blocked, wait)
	}
	if blocked, _ := l.Blocked(b, verifytest.T0); blocked {
		t.Fatal("another address is not blocked")
	}
	if blocked, _ := l.Blocked(a, verifytest.T0.Add(time.Second)); blocked {
		t.Fatal("a token refills after 1/rate")
	}
	// IPv6 clients share a bucket per /64.
	l6 := NewLimiter(1, 1, 10)
	l6.Fail(netip.MustParseAddr("2001:db8:1:2::1"), verifytest.T0)
	if blocked, _ := l6.Blocked(netip.MustParseAddr("2001:db8:1:2:ffff::9"), verifytest.T0); !blocked {
		t.Fatal("same /64 must share the bucket")
	}
	if blocked, _ := l6.Blocked(netip.MustParseAddr("2001:db8:1:3::1"), verifytest.T0); blocked {
		t.Fatal("another /64 has its own bucket")
	}
	// Bounded memory: a third client evicts the least recently failing one.
	l.Fail(b, verifytest.T0)
	l.Fail(c, verifytest.T0)
	if n := l.Len(); n != 2 {
		t.Fatalf("%d buckets, max 2", n)
	}
	if blocked, _ := l.Blocked(a, verifytest.T0); blocked {
		t.Fatal("the evicted (least recent) client starts afresh")
	}
	// Off.
	off := NewLimiter(0, 1, 1)
	off.Fail(a, verifytest.T0)
	off.Fail(a, verifytest.T0)
	if blocked, _ := off.Blocked(a, verifytest.T0); blocked {
		t.Fatal("rate 0 turns limiting off")
	}
}
