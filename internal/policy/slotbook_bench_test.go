package policy

import (
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// benchNamespace is one namespace of n keys over 10 Applications and 100
// owners: all but the last `waiting` issued, those waiting (the keys a burst
// is issuing at the moment, oldest first). Limits leave room, as in the
// issuance benchmark, unless full says the tenant is at maxKeys (then every
// waiting key is denied).
func benchNamespace(n, waiting int, full bool) (*SlotBook, Slots, []*keyward.AccessKey) {
	b := NewSlotBook()
	apps := map[string]*keyward.Application{}
	for i := range 10 {
		a := &keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: "t", Name: fmt.Sprintf("app-%d", i), UID: types.UID(fmt.Sprintf("app-%d", i))},
			Spec: keyward.ApplicationSpec{MaxAccessKeys: int32(n)}}
		apps[a.Name] = a
		b.ObserveApplication(a)
	}
	t := Tenant{Enabled: true, MaxKeysPerOwner: int32(n), MaxKeys: int32(n)}
	if full {
		t.MaxKeys = int32(n - waiting)
	}
	start := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	keys := make([]*keyward.AccessKey, n)
	for i := range n {
		k := &keyward.AccessKey{ObjectMeta: metav1.ObjectMeta{Namespace: "t", Name: fmt.Sprintf("key-%06d", i), UID: types.UID(fmt.Sprintf("uid-%d", i)),
			CreationTimestamp: metav1.NewTime(start.Add(time.Duration(i) * time.Millisecond))},
			Spec: keyward.AccessKeySpec{Application: fmt.Sprintf("app-%d", i%10), Owner: fmt.Sprintf("owner-%d", i%100)}}
		if i < n-waiting {
			k.Status.IssuedAt = &metav1.Time{Time: start}
			k.Status.Phase = keyward.PhaseActive
		}
		keys[i] = k
		b.ObserveKey(k)
	}
	return b, Slots{Keys: keys, Apps: apps, Tenant: t}, keys
}

// BenchmarkSlotDecision is one slot decision for the newest waiting key of
// a namespace of 1k, 10k and 100k keys, with 8 keys being issued beside it
// (room left), or with the tenant full and 1000 keys denied before it. Its
// cost stays flat whatever the namespace's size.
func BenchmarkSlotDecision(b *testing.B) {
	for _, full := range []bool{false, true} {
		for _, n := range []int{1000, 10000, 100000} {
			waiting := 8
			name := fmt.Sprintf("room/keys=%d", n)
			if full {
				waiting, name = 1000, fmt.Sprintf("full/keys=%d", n)
			}
			book, s, keys := benchNamespace(n, waiting, full)
			self := keys[n-1]
			b.Run(name, func(b *testing.B) {
				for b.Loop() {
					if _, ok := book.Decide(self, s.Tenant); !ok {
						b.Fatal("not found")
					}
				}
			})
		}
	}
}

// BenchmarkSlotDecisionByRecount is the same decision made the way the
// manager made it before the SlotBook: one pass over the namespace
// (DecideSlot, the reference the SlotBook is tested against).
func BenchmarkSlotDecisionByRecount(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		_, s, keys := benchNamespace(n, 8, false)
		s.Self = keys[n-1].Name
		b.Run(fmt.Sprintf("room/keys=%d", n), func(b *testing.B) {
			for b.Loop() {
				DecideSlot(s)
			}
		})
	}
}

// BenchmarkSlotBookObserve is the cost of keeping the book up to date: a
// waiting key of a namespace of N keys is issued (it leaves the queue and
// holds a slot), then observed waiting again.
func BenchmarkSlotBookObserve(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		book, _, keys := benchNamespace(n, 8, false)
		waiting := keys[n-1].DeepCopy()
		issued := waiting.DeepCopy()
		issued.Status.IssuedAt = &metav1.Time{Time: time.Now()}
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			for b.Loop() {
				book.ObserveKey(issued)
				book.ObserveKey(waiting)
			}
		})
	}
}
