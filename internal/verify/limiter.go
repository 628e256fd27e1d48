package verify

import (
	"container/list"
	"math"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiter limits failed verifications (guesses) per client address with a
// token bucket each: every guess takes a token, and a client whose bucket is
// empty gets rate_limited for every request — also with a good key, or
// guessing would go on, merely slower to confirm. IPv6 clients are counted
// per /64, the block one host usually holds. Memory is bounded: at most
// maxClients buckets are kept, the least recently used is dropped first (a
// dropped bucket is full, which is what a client that has not failed for a
// while would have anyway).
type Limiter struct {
	limit      rate.Limit
	burst      int
	maxClients int

	mu      sync.RWMutex
	buckets map[netip.Addr]*list.Element
	lru     *list.List // of *bucket, most recent at the front
}

type bucket struct {
	key     netip.Addr
	limiter *rate.Limiter
}

// NewLimiter allows burst guesses at once and perSecond guesses per second
// after that, keeping at most maxClients buckets. perSecond <= 0 turns
// limiting off.
func NewLimiter(perSecond float64, burst, maxClients int) *Limiter {
	if burst < 1 {
		burst = 1
	}
	if maxClients < 1 {
		maxClients = 1
	}
	return &Limiter{limit: rate.Limit(perSecond), burst: burst, maxClients: maxClients,
		buckets: map[netip.Addr]*list.Element{}, lru: list.New()}
}

// bucketKey is the address a client is counted under.
func bucketKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// Blocked reports whether addr has no guess left at now, and if so how long
// until it has one.
func (l *Limiter) Blocked(addr netip.Addr, now time.Time) (bool, time.Duration) {
	if l == nil || l.limit <= 0 {
		return false, 0
	}
	key := bucketKey(addr)
	l.mu.RLock()
	e, ok := l.buckets[key]
	var lim *rate.Limiter
	if ok {
		lim = e.Value.(*bucket).limiter
	}
	l.mu.RUnlock()
	if !ok {
		return false, 0
	}
	tokens := lim.TokensAt(now)
	if tokens >= 1 {
		return false, 0
	}
	wait := time.Duration(math.Ceil((1 - tokens) / float64(l.limit) * float64(time.Second)))
	return true, wait
}

// Fail records a guess by addr at now.
func (l *Limiter) Fail(addr netip.Addr, now time.Time) {
	if l == nil || l.limit <= 0 {
		return
	}
	key := bucketKey(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.buckets[key]
	if ok {
		l.lru.MoveToFront(e)
	} else {
		if l.lru.Len() >= l.maxClients {
			oldest := l.lru.Back()
			delete(l.buckets, oldest.Value.(*bucket).key)
			l.lru.Remove(oldest)
		}
		e = l.lru.PushFront(&bucket{key: key, limiter: rate.NewLimiter(l.limit, l.burst)})
		l.buckets[key] = e
	}
	e.Value.(*bucket).limiter.AllowN(now, 1)
}

// Len is how many clients have a bucket.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lru.Len()
}
