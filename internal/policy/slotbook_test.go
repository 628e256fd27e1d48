package policy

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// slotHistory drives a SlotBook and the objects AllocateSlots decides over
// through the same changes, the way the manager observes them: keys
// created, issued, refused, reassigned, revoked, deleted (with and without
// a finalizer) and gone; grants and releases; Secrets of unrecorded issues;
// Applications resized, narrowed, replaced and deleted; tenant limits
// changed.
type slotHistory struct {
	t       *testing.T
	f       *fuzzBytes
	now     time.Time
	book    *SlotBook
	keys    map[types.UID]*keyward.AccessKey
	apps    map[string]*keyward.Application
	granted map[types.UID]bool
	secrets map[string]types.UID
	tenant  Tenant
	serial  int
	// freed is what the book reported for the last change of a key, its
	// grant or its Secret; subject is that key (nil for other changes).
	freed   bool
	subject *keyward.AccessKey
}

func newSlotHistory(t *testing.T, data []byte) *slotHistory {
	h := &slotHistory{t: t, f: &fuzzBytes{b: data}, now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC), book: NewSlotBook(),
		keys: map[types.UID]*keyward.AccessKey{}, apps: map[string]*keyward.Application{}, granted: map[types.UID]bool{},
		secrets: map[string]types.UID{}, tenant: Tenant{Enabled: true, MaxKeysPerOwner: 3, MaxKeys: 5}}
	for _, a := range []string{"a", "b"} {
		h.putApp(&keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: "t", Name: a, UID: types.UID("app-" + a)},
			Spec: keyward.ApplicationSpec{MaxAccessKeys: 2, Scopes: []keyward.Scope{{Name: "orders"}}}})
	}
	return h
}

func (h *slotHistory) putApp(a *keyward.Application) {
	h.apps[a.Name] = a
	h.book.ObserveApplication(a)
}

// put records a new version of k (a copy: the book may keep the pointer).
func (h *slotHistory) put(k *keyward.AccessKey) {
	k = k.DeepCopy()
	h.keys[k.UID] = k
	if IsIssued(k) {
		delete(h.granted, k.UID)
	}
	h.freed, h.subject = h.book.ObserveKey(k), k
}

func (h *slotHistory) pick() *keyward.AccessKey {
	if len(h.keys) == 0 {
		return nil
	}
	uids := make([]string, 0, len(h.keys))
	for uid := range h.keys {
		uids = append(uids, string(uid))
	}
	sort.Strings(uids)
	return h.keys[types.UID(uids[h.f.n(len(uids))])].DeepCopy()
}

func (h *slotHistory) nameFree(name string) bool {
	for _, k := range h.keys {
		if k.Name == name {
			return false
		}
	}
	return true
}

// step makes one change.
func (h *slotHistory) step() {
	f := h.f
	h.freed, h.subject = false, nil
	switch f.n(14) {
	case 0, 1, 2: // a key is created
		name := fmt.Sprintf("k%d", f.n(12))
		if !h.nameFree(name) {
			return
		}
		h.serial++
		k := &keyward.AccessKey{ObjectMeta: metav1.ObjectMeta{Namespace: "t", Name: name, UID: types.UID(fmt.Sprintf("uid-%d", h.serial)),
			Generation: 1, CreationTimestamp: metav1.NewTime(h.now.Add(time.Duration(f.n(5)) * time.Second))}}
		k.Spec.Application = f.text("a", "b", "gone")
		k.Spec.Owner = f.text("alice", "bob", "")
		if f.n(5) == 0 {
			k.Spec.Scopes = []keyward.Scope{{Name: f.text("orders", "reports")}}
		}
		if a := h.apps[k.Spec.Application]; a != nil && f.bool() {
			k.OwnerReferences = []metav1.OwnerReference{{APIVersion: keyward.GroupVersion.String(), Kind: "Application", Name: a.Name, UID: a.UID}}
		}
		h.put(k)
	case 3: // issued (its status recorded)
		if k := h.pick(); k != nil && !IsIssued(k) {
			k.Status.IssuedAt = &metav1.Time{Time: h.now}
			k.Status.Phase = keyward.PhaseActive
			decided := h.granted[k.UID]
			h.put(k)
			h.contract(decided)
		}
	case 4: // granted by the manager, or released
		if k := h.pick(); k != nil && !IsIssued(k) {
			if h.granted[k.UID] {
				delete(h.granted, k.UID)
				h.freed, h.subject = h.book.Release(k.UID), k
			} else {
				d, _ := h.book.Decide(k, h.tenant)
				h.granted[k.UID] = true
				h.book.Grant(k.UID)
				h.subject = k
				h.contract(d.Outcome == SlotGranted)
			}
		}
	case 5: // its Secret refused, or its spec changed since
		if k := h.pick(); k != nil && !IsIssued(k) {
			if f.bool() {
				k.Status.Phase = keyward.PhasePending
				k.Status.SecretRefusal = &keyward.SecretRefusal{Reason: f.text(keyward.ReasonSecretNameConflict, keyward.ReasonSecretInvalid), Generation: k.Generation}
			} else {
				k.Generation++
			}
			h.put(k)
		}
	case 6: // reassigned
		if k := h.pick(); k != nil {
			k.Spec.Owner = f.text("alice", "bob", "")
			h.put(k)
		}
	case 7: // revoked
		if k := h.pick(); k != nil {
			k.Spec.Revoked = true
			h.put(k)
		}
	case 8: // deleted: a finalizer keeps it, or it is gone
		if k := h.pick(); k != nil {
			if f.bool() && k.DeletionTimestamp.IsZero() {
				k.DeletionTimestamp = &metav1.Time{Time: h.now}
				h.put(k)
			} else {
				delete(h.keys, k.UID)
				delete(h.granted, k.UID)
				h.freed, h.subject = h.book.ForgetKey(k.UID), k
			}
		}
	case 9: // a Secret of an unrecorded issue appears or goes
		if k := h.pick(); k != nil {
			if h.secrets[k.SecretName()] == k.UID {
				delete(h.secrets, k.SecretName())
				h.freed, h.subject = h.book.ObserveSecret(k.SecretName(), ""), k
			} else {
				decided := h.granted[k.UID] || IsIssued(k)
				h.secrets[k.SecretName()] = k.UID
				h.freed, h.subject = h.book.ObserveSecret(k.SecretName(), k.UID), k
				h.contract(decided)
			}
		}
	case 10: // an Application resized or narrowed
		a := h.apps[f.text("a", "b")]
		if a == nil {
			return
		}
		a = a.DeepCopy()
		a.Spec.MaxAccessKeys = int32(f.n(4))
		if f.bool() {
			a.Spec.Scopes = []keyward.Scope{{Name: f.text("orders", "reports")}}
		}
		h.putApp(a)
	case 11: // an Application deleted, or created again under its name
		name := f.text("a", "b", "gone")
		if a := h.apps[name]; a != nil && f.bool() {
			delete(h.apps, name)
			h.book.ForgetApplication(name, a.UID)
		} else {
			h.serial++
			h.putApp(&keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: "t", Name: name, UID: types.UID(fmt.Sprintf("app-%d", h.serial))},
				Spec: keyward.ApplicationSpec{MaxAccessKeys: int32(1 + f.n(3)), Scopes: []keyward.Scope{{Name: "orders"}}}})
		}
	case 12: // the tenant's limits change
		h.tenant.MaxKeysPerOwner, h.tenant.MaxKeys = int32(1+f.n(4)), int32(1+f.n(7))
	case 13: // the tenant is switched off or on
		h.tenant.Enabled = !h.tenant.Enabled
	}
}

// contract leaves a change out of the check that the book reports every
// change that can let another key in, unless the manager made it: a key
// takes a slot only by a grant the book decided (its issue and its Secret
// follow that grant). A key taking a slot the rule did not give it (only a
// test does that) can push an earlier key out of one limit and so leave
// room in another; the decisions are still checked.
func (h *slotHistory) contract(decided bool) {
	if !decided {
		h.subject = nil
	}
}

// reference is what AllocateSlots decides over: the same objects.
func (h *slotHistory) reference(self string) Slots {
	keys := make([]*keyward.AccessKey, 0, len(h.keys))
	for _, k := range h.keys {
		keys = append(keys, k)
	}
	return Slots{Keys: keys, Apps: h.apps, Tenant: h.tenant, Self: self, Holds: func(k *keyward.AccessKey) bool {
		return h.granted[k.UID] || h.secrets[k.SecretName()] == k.UID
	}}
}

// check compares every decision and the keys to wake with AllocateSlots.
func (h *slotHistory) check(step int) {
	for _, k := range h.keys {
		want, _ := DecideSlot(h.reference(k.Name))
		got, ok := h.book.Decide(k, h.tenant)
		if !ok || got != want {
			h.t.Fatalf("step %d, key %s: SlotBook.Decide = %+v, %v; AllocateSlots = %+v", step, k.Name, got, ok, want)
		}
	}
	all := AllocateSlots(h.reference(""))
	var want []string
	if _, blocked := h.tenant.Blocked(); !blocked {
		for _, k := range h.keys {
			d := all[k.Name]
			c := readyReasonOf(k)
			if d.Outcome == SlotGranted || (d.Outcome == SlotDenied && (k.Status.Phase != keyward.PhaseRejected || c != d.Reason)) {
				want = append(want, k.Name)
			}
		}
	}
	got := h.book.Waking(h.tenant)
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		h.t.Fatalf("step %d: SlotBook.Waking = %v; from AllocateSlots %v", step, got, want)
	}
	if h.book.Len() != len(h.keys) {
		h.t.Fatalf("step %d: the book holds %d keys, the namespace %d", step, h.book.Len(), len(h.keys))
	}
}

func readyReasonOf(k *keyward.AccessKey) string {
	for _, c := range k.Status.Conditions {
		if c.Type == keyward.ConditionReady {
			return c.Reason
		}
	}
	return ""
}

// runSlotHistory plays the whole history, checking after every change;
// now and then a waiting key records the decision it was given, as its
// reconcile would.
func runSlotHistory(t *testing.T, data []byte) {
	h := newSlotHistory(t, data[:min(len(data), 1000)]) // longer histories add nothing but time
	for i := 0; len(h.f.b) > 0; i++ {
		before := AllocateSlots(h.reference(""))
		h.step()
		if h.subject != nil && !h.freed {
			// A change the book calls no freeing lets no other key in.
			for name, d := range AllocateSlots(h.reference("")) {
				if name != h.subject.Name && d.Outcome == SlotGranted && before[name].Outcome != SlotGranted {
					t.Fatalf("step %d: %s may take a slot after a change of %s the book did not report", i, name, h.subject.Name)
				}
			}
		}
		if k := h.pick(); k != nil && h.f.n(3) == 0 {
			if d, ok := h.book.Decide(k, h.tenant); ok && d.Outcome == SlotDenied {
				k.Status.Phase = keyward.PhaseRejected
				k.Status.Conditions = []metav1.Condition{{Type: keyward.ConditionReady, Reason: d.Reason}}
				h.put(k)
			}
		}
		h.check(i)
	}
}

// The book answers what AllocateSlots answers, for every key, after every
// change of a random history; and it wakes the keys AllocateSlots says
// should change.
func TestSlotBookAgreesWithAllocateSlots(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 97))
	for range 400 {
		data := make([]byte, 300)
		for i := range data {
			data[i] = byte(rng.UintN(256))
		}
		runSlotHistory(t, data)
	}
}

// FuzzSlotBook is TestSlotBookAgreesWithAllocateSlots over histories the
// fuzzer builds.
func FuzzSlotBook(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 1, 0, 0, 2, 1, 1, 0, 3, 0, 4, 1, 8, 0, 1, 12, 2, 3, 0, 0, 5, 1, 9, 0, 10, 1, 2, 1, 11, 0, 0, 13})
	f.Add([]byte{1, 5, 2, 2, 0, 1, 0, 7, 1, 1, 3, 4, 2, 6, 1, 0, 8, 1, 0, 9, 1, 4, 1, 1, 5, 0, 2, 2, 12, 0, 0, 0, 3})
	f.Fuzz(runSlotHistory)
}

// Observing the same object twice, or a change that moves nothing,
// changes nothing and frees nothing.
func TestSlotBookObservationsAreIdempotent(t *testing.T) {
	b := NewSlotBook()
	a := app("a", 1)
	b.ObserveApplication(a)
	held := key("held", "a", -time.Hour, issued(keyward.PhaseActive))
	held.UID = "u1"
	waiting := key("waiting", "a", 0)
	waiting.UID = "u2"
	b.ObserveKey(&held)
	b.ObserveKey(&waiting)
	if b.ObserveKey(&held) || b.ObserveKey(&waiting) {
		t.Fatal("observing a key again freed a slot")
	}
	if byApp, byOwner, all := b.Held("a", "alice"); byApp != 1 || byOwner != 1 || all != 1 {
		t.Fatalf("held %d %d %d", byApp, byOwner, all)
	}
	if d, _ := b.Decide(&waiting, enabled); d.Outcome != SlotDenied {
		t.Fatalf("got %+v", d)
	}
	if !b.ForgetKey("u1") || b.ForgetKey("u1") {
		t.Fatal("a key that held a slot going frees it, once")
	}
	if d, _ := b.Decide(&waiting, enabled); d.Outcome != SlotGranted {
		t.Fatalf("got %+v", d)
	}
}
