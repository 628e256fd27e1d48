package policy

import (
	"container/heap"

	"github.com/google/btree"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// SlotBook is what the limits of one namespace are decided over, kept up to
// date as its keys, Applications and Secrets change instead of recounted
// for every decision: the slots held per Application, per owner and in the
// whole tenant, and the keys waiting for one, per Application in the order
// they are served (oldest first, then by name).
//
// The rule: keys holding a slot keep it (HoldsSlot); the remaining slots go
// to the waiting keys (Competes) oldest first — creationTimestamp, then
// name — each one granted while its Application's maxAccessKeys, its
// owner's maxKeysPerOwner and the tenant's maxKeys have room, so a waiting
// key is never passed over for one that ranks after it, and the answer is
// the same whichever key asks first. Keys without an owner share one
// owner's limit, so leaving the owner out is no way around
// maxKeysPerOwner. The tests hold the book to the same rule written as one
// pass over the namespace (AllocateSlots, slots_reference_test.go).
//
// A decision costs O(log N) in the keys of
// the namespace, plus one step per waiting key that ranks before the key
// asking in an Application with room (in a burst, the keys being issued
// beside it; keys of full Applications are never visited).
//
// Every change is keyed by the key's UID, so observing the same object
// twice changes nothing. A SlotBook is not safe for concurrent use: the
// caller serialises a namespace's changes and decisions (which is also
// what keeps two decisions from granting one slot twice).
type SlotBook struct {
	keys   map[types.UID]*slotEntry
	byName map[string]*slotEntry
	// apps are the namespace's Applications by name.
	apps map[string]*keyward.Application
	// secrets maps a Keyward Secret's name to the key that controls it
	// (only Secrets not being deleted).
	secrets map[string]types.UID

	heldByApp   map[string]int32
	heldByOwner map[string]int32
	held        int32
	// waiting holds, per Application name, the keys that compete for a
	// slot and hold none, in rank order.
	waiting map[string]*btree.BTreeG[*slotEntry]
	// ofApp holds every key by the Application it names, to judge its keys
	// again when that Application changes.
	ofApp map[string]map[*slotEntry]struct{}
}

// slotEntry is one key as the book last observed it.
type slotEntry struct {
	uid types.UID
	key *keyward.AccessKey // read only: it may be the informer's object
	// granted: the manager granted it a slot whose issue it does not
	// observe yet.
	granted bool
	// What the counts and the waiting sets hold it as (so that a change
	// can be taken back exactly).
	placed, held, waits bool
	app, owner          string
}

func lessRank(a, b *slotEntry) bool {
	if !a.key.CreationTimestamp.Equal(&b.key.CreationTimestamp) {
		return a.key.CreationTimestamp.Before(&b.key.CreationTimestamp)
	}
	if a.key.Name != b.key.Name {
		return a.key.Name < b.key.Name
	}
	return a.uid < b.uid
}

// NewSlotBook returns an empty book.
func NewSlotBook() *SlotBook {
	return &SlotBook{keys: map[types.UID]*slotEntry{}, byName: map[string]*slotEntry{},
		apps: map[string]*keyward.Application{}, secrets: map[string]types.UID{},
		heldByApp: map[string]int32{}, heldByOwner: map[string]int32{},
		waiting: map[string]*btree.BTreeG[*slotEntry]{}, ofApp: map[string]map[*slotEntry]struct{}{}}
}

// Len is how many keys the book holds.
func (b *SlotBook) Len() int { return len(b.keys) }

// HoldsSlot is who holds a slot: a key issued, a key the manager granted
// one whose issue is not recorded yet, or a key that controls the Secret at
// its Secret name (a crash between the Secret write and the status write).
// It keeps the slot while it is being deleted: a finalizer may keep it for
// as long as it likes, and no other key may be valid in its slot meanwhile
// (docs/limits.md).
func HoldsSlot(k *keyward.AccessKey, granted, controlsSecret bool) bool {
	return IsIssued(k) || granted || controlsSecret
}

// ObserveKey records k as it is now. It reports whether the change can let
// another key of the namespace take a slot (one freed, or a waiting key
// that ranked before others left the queue), so that waiting keys are
// woken (Waking).
func (b *SlotBook) ObserveKey(k *keyward.AccessKey) (freed bool) {
	e, ok := b.keys[k.UID]
	if !ok {
		e = &slotEntry{uid: k.UID}
		b.keys[k.UID] = e
	}
	e.key = k
	if IsIssued(k) {
		e.granted = false // the issue is recorded: the grant is done with
	}
	b.byName[k.Name] = e
	return b.judge(e)
}

// ObserveKeyIfAbsent records k unless the book already holds its UID: the
// reconciler's own read of a key may be older than what the book observed.
func (b *SlotBook) ObserveKeyIfAbsent(k *keyward.AccessKey) {
	if _, ok := b.keys[k.UID]; !ok {
		b.ObserveKey(k)
	}
}

// ForgetKey removes the key with uid (it is gone); it reports whether that
// can let another key take a slot.
func (b *SlotBook) ForgetKey(uid types.UID) (freed bool) {
	e, ok := b.keys[uid]
	if !ok {
		return false
	}
	freed = b.unplace(e)
	delete(b.keys, uid)
	if b.byName[e.key.Name] == e {
		delete(b.byName, e.key.Name)
	}
	return freed
}

// ObserveApplication records the Application a as it is now, and judges
// the keys that name it again when what they depend on changed (its
// object, spec or deletion; not its status).
func (b *SlotBook) ObserveApplication(a *keyward.Application) (freed bool) {
	old, had := b.apps[a.Name]
	b.apps[a.Name] = a
	if had && old.UID == a.UID && old.Generation == a.Generation && old.DeletionTimestamp.IsZero() == a.DeletionTimestamp.IsZero() {
		return false
	}
	return b.judgeApp(a.Name)
}

// ForgetApplication removes the Application with name and uid (it is gone).
func (b *SlotBook) ForgetApplication(name string, uid types.UID) (freed bool) {
	if a, ok := b.apps[name]; !ok || a.UID != uid {
		return false
	}
	delete(b.apps, name)
	return b.judgeApp(name)
}

// ObserveSecret records that the key with controller (a UID; "" for none,
// or when the Secret is being deleted) controls the Keyward Secret name.
func (b *SlotBook) ObserveSecret(name string, controller types.UID) (freed bool) {
	old, had := b.secrets[name]
	if had && old == controller {
		return false
	}
	if controller == "" {
		delete(b.secrets, name)
	} else {
		b.secrets[name] = controller
	}
	for _, uid := range []types.UID{old, controller} {
		if e, ok := b.keys[uid]; ok && uid != "" {
			freed = b.judge(e) || freed
		}
	}
	return freed
}

// Grant records that the key with uid was granted a slot: it holds it until
// its issue is recorded, or it is released or gone.
func (b *SlotBook) Grant(uid types.UID) {
	if e, ok := b.keys[uid]; ok && !e.granted {
		e.granted = true
		b.judge(e)
	}
}

// Release takes back the grant of the key with uid; it reports whether it
// had one (and so whether waiting keys may be woken).
func (b *SlotBook) Release(uid types.UID) bool {
	e, ok := b.keys[uid]
	if !ok || !e.granted {
		return false
	}
	e.granted = false
	b.judge(e)
	return true
}

// Granted reports whether the key with uid holds a grant of the manager.
func (b *SlotBook) Granted(uid types.UID) bool {
	e, ok := b.keys[uid]
	return ok && e.granted
}

// Held reports the slots held by the Application name, by owner and in the whole tenant.
func (b *SlotBook) Held(app, owner string) (byApp, byOwner, all int32) {
	return b.heldByApp[app], b.heldByOwner[owner], b.held
}

func (b *SlotBook) controlsSecret(k *keyward.AccessKey) bool {
	uid, ok := b.secrets[k.SecretName()]
	return ok && uid == k.UID
}

// judge places e where its key now belongs: counted as holding a slot,
// waiting for one, or neither.
func (b *SlotBook) judge(e *slotEntry) (freed bool) {
	k := e.key
	held := HoldsSlot(k, e.granted, b.controlsSecret(k))
	waits := !held && Competes(k, b.apps[k.Spec.Application], Tenant{Enabled: true}, false)
	if e.placed && held == e.held && waits == e.waits && e.app == k.Spec.Application && e.owner == k.Spec.Owner {
		return false
	}
	// Others may take a slot when this key stops holding one, or stops
	// waiting without taking one (it may have been served before them), or
	// moves to another Application or owner.
	moved := e.placed && (e.app != k.Spec.Application || e.owner != k.Spec.Owner)
	freed = (e.held && !held) || (e.waits && !waits && !held) || ((e.held || e.waits) && moved)
	b.unplace(e)
	// A key that starts waiting ahead of others may be served before them
	// and push one of them out of a limit, which can leave room in another
	// limit for a key after it. A new key ranks last, so this is rare.
	freed = freed || (waits && !e.waits && b.ranksBeforeAWaitingKey(e))
	e.held, e.waits, e.app, e.owner = held, waits, k.Spec.Application, k.Spec.Owner
	if held {
		b.heldByApp[e.app]++
		b.heldByOwner[e.owner]++
		b.held++
	}
	if waits {
		t, ok := b.waiting[e.app]
		if !ok {
			t = btree.NewG(16, lessRank)
			b.waiting[e.app] = t
		}
		t.ReplaceOrInsert(e)
	}
	set, ok := b.ofApp[e.app]
	if !ok {
		set = map[*slotEntry]struct{}{}
		b.ofApp[e.app] = set
	}
	set[e] = struct{}{}
	e.placed = true
	return freed
}

// unplace takes e out of the counts and the waiting sets. Taking out a key
// that held a slot, or that waited (it may have been served before
// others), can let another key take a slot.
func (b *SlotBook) unplace(e *slotEntry) (freed bool) {
	if !e.placed {
		return false
	}
	if e.held {
		b.heldByApp[e.app]--
		b.heldByOwner[e.owner]--
		b.held--
		if b.heldByApp[e.app] == 0 {
			delete(b.heldByApp, e.app)
		}
		if b.heldByOwner[e.owner] == 0 {
			delete(b.heldByOwner, e.owner)
		}
	}
	if e.waits {
		if t := b.waiting[e.app]; t != nil {
			t.Delete(e)
			if t.Len() == 0 {
				delete(b.waiting, e.app)
			}
		}
	}
	if set := b.ofApp[e.app]; set != nil {
		delete(set, e)
		if len(set) == 0 {
			delete(b.ofApp, e.app)
		}
	}
	freed = e.held || e.waits
	e.held, e.waits, e.placed = false, false, false
	return freed
}

// ranksBeforeAWaitingKey reports whether a waiting key other than e ranks after it.
func (b *SlotBook) ranksBeforeAWaitingKey(e *slotEntry) bool {
	for _, t := range b.waiting {
		if last, ok := t.Max(); ok && last != e && lessRank(e, last) {
			return true
		}
	}
	return false
}

func (b *SlotBook) judgeApp(name string) (freed bool) {
	for e := range b.ofApp[name] {
		freed = b.judge(e) || freed
	}
	return freed
}

// Decide is the slot decision for key (as the reconciler read it): whether
// it holds a slot, may take one, or is denied and why. ok is false when the
// book does not hold the key.
func (b *SlotBook) Decide(k *keyward.AccessKey, t Tenant) (SlotDecision, bool) {
	e, ok := b.keys[k.UID]
	if !ok {
		return SlotDecision{}, false
	}
	if HoldsSlot(k, e.granted, b.controlsSecret(k)) {
		return SlotDecision{Outcome: SlotHeld}, true
	}
	app := b.apps[k.Spec.Application]
	if !Competes(k, app, t, true) {
		return SlotDecision{Outcome: SlotNotCandidate}, true
	}
	s := b.newServer(t)
	s.serve(e, func() bool {
		// Past this point nothing granted before the key can change its
		// answer: the tenant is full, or its Application is (checked first).
		return s.all >= t.MaxKeys || s.usedByApp(k.Spec.Application) >= maxAccessKeys(app)
	}, nil)
	return s.judge(k, app), true
}

// Waking returns the names of the keys whose slot decision differs from
// what their status records: waiting keys that would now be granted, or
// that are denied for another reason. It is asked when a slot can have
// freed, and costs one step per waiting key.
func (b *SlotBook) Waking(t Tenant) []string {
	if _, blocked := t.Blocked(); blocked {
		return nil // no key competes
	}
	var wake []string
	b.newServer(t).serve(nil, nil, func(e *slotEntry, d SlotDecision) {
		k := e.key
		c := meta.FindStatusCondition(k.Status.Conditions, keyward.ConditionReady)
		if d.Outcome == SlotGranted || (d.Outcome == SlotDenied && (k.Status.Phase != keyward.PhaseRejected || c == nil || c.Reason != d.Reason)) {
			wake = append(wake, k.Name)
		}
	})
	return wake
}

// server hands the free slots to the waiting keys in rank order, as
// the rule says, counting what it grants on top of the held slots.
type server struct {
	b              *SlotBook
	tenant         Tenant
	byApp, byOwner map[string]int32 // granted so far
	all            int32            // held and granted so far
	heads          headHeap         // the next waiting key of each Application served
}

func (b *SlotBook) newServer(t Tenant) *server {
	return &server{b: b, tenant: t, byApp: map[string]int32{}, byOwner: map[string]int32{}, all: b.held}
}

// serve runs the allocation over the waiting keys that rank before until
// (all of them when until is nil) until done says nothing more can change
// the answer. With visit, every waiting key is judged and visited. Without
// it, keys of an Application that is full are not looked at (they are all
// denied and take nothing), and serving stops when the tenant is full.
func (s *server) serve(until *slotEntry, done func() bool, visit func(*slotEntry, SlotDecision)) {
	b := s.b
	open := func(app string) bool {
		return visit != nil || s.usedByApp(app) < maxAccessKeys(b.apps[app])
	}
	before := func(e *slotEntry) bool { return until == nil || lessRank(e, until) }
	for name, tree := range b.waiting {
		if first, ok := tree.Min(); ok && open(name) && before(first) {
			s.heads = append(s.heads, first)
		}
	}
	heap.Init(&s.heads)
	for s.heads.Len() > 0 {
		if done != nil && done() {
			return
		}
		if visit == nil && s.all >= s.tenant.MaxKeys {
			return // no slot is left for anyone
		}
		e := heap.Pop(&s.heads).(*slotEntry)
		d := s.judge(e.key, b.apps[e.app])
		if d.Outcome == SlotGranted {
			s.byApp[e.app]++
			s.byOwner[e.owner]++
			s.all++
		}
		if visit != nil {
			visit(e, d)
		}
		if next, ok := after(b.waiting[e.app], e); ok && before(next) && open(e.app) {
			heap.Push(&s.heads, next)
		}
	}
}

// after returns the entry that follows e in t.
func after(t *btree.BTreeG[*slotEntry], e *slotEntry) (next *slotEntry, ok bool) {
	t.AscendGreaterOrEqual(e, func(n *slotEntry) bool {
		if n == e {
			return true
		}
		next, ok = n, true
		return false
	})
	return next, ok
}

func (s *server) usedByApp(app string) int32 { return s.b.heldByApp[app] + s.byApp[app] }

func (s *server) usedByOwner(owner string) int32 { return s.b.heldByOwner[owner] + s.byOwner[owner] }

// judge decides for one waiting key given what is used so far.
func (s *server) judge(k *keyward.AccessKey, app *keyward.Application) SlotDecision {
	return slotFor(k, app, s.tenant, s.usedByApp(k.Spec.Application), s.usedByOwner(k.Spec.Owner), s.all)
}

type headHeap []*slotEntry

func (h headHeap) Len() int           { return len(h) }
func (h headHeap) Less(i, j int) bool { return lessRank(h[i], h[j]) }
func (h headHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *headHeap) Push(x any)        { *h = append(*h, x.(*slotEntry)) }
func (h *headHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
