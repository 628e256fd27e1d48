package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/policy"
)

// slotLedger decides limits from books of each namespace's slots
// (policy.SlotBook) that the informers' events keep up to date, with no API
// list on the issue path and no pass over a namespace's keys: a decision
// costs the same whatever the tenant's size. The cache lags behind the
// manager's own writes, so the book also holds the slots granted that the
// cache does not show as issued yet (the "expectations" of the ReplicaSet
// controller); decisions are made one namespace at a time, so that
// concurrent workers can never overshoot a limit. It starts empty after a
// restart or a leader change: then the cache is the truth — keys with
// status.issuedAt, and Keyward Secrets controlled by a key whose issue was
// never recorded (a crash between the Secret write and the status write) —
// so nothing can overshoot or lose a slot.
type slotLedger struct {
	keys toolscache.Indexer // the cache's AccessKeys
	// wake is called with a namespace where a change can have freed a slot.
	wake   func(ns string)
	synced []toolscache.InformerSynced

	mu         sync.Mutex
	namespaces map[string]*namespaceSlots
}

type namespaceSlots struct {
	mu   sync.Mutex
	book *policy.SlotBook
	// changed is closed (and replaced) whenever the book observes a key.
	changed chan struct{}
}

// bookLag bounds how long a key waits for the book to observe it before it
// is taken from the cache's index instead.
const bookLag = 2 * time.Second

// newSlotLedger registers the ledger's handlers with the cache's informers
// of AccessKeys, Applications and Keyward Secrets.
func newSlotLedger(ctx context.Context, c cache.Cache, wake func(ns string)) (*slotLedger, error) {
	l := &slotLedger{wake: wake, namespaces: map[string]*namespaceSlots{}}
	keys, err := c.GetInformer(ctx, &keyward.AccessKey{})
	if err != nil {
		return nil, err
	}
	ix, ok := keys.(interface{ GetIndexer() toolscache.Indexer })
	if !ok {
		return nil, fmt.Errorf("the cache's informer for AccessKeys has no indexer")
	}
	l.keys = ix.GetIndexer()
	for obj, h := range map[client.Object]toolscache.ResourceEventHandlerFuncs{
		&keyward.AccessKey{}: {
			AddFunc:    func(o any) { l.observe(o, false) },
			UpdateFunc: func(_, o any) { l.observe(o, false) },
			DeleteFunc: func(o any) { l.observe(o, true) },
		},
		&keyward.Application{}: {
			AddFunc:    func(o any) { l.observe(o, false) },
			UpdateFunc: func(_, o any) { l.observe(o, false) },
			DeleteFunc: func(o any) { l.observe(o, true) },
		},
		&corev1.Secret{}: {
			AddFunc:    func(o any) { l.observe(o, false) },
			UpdateFunc: func(_, o any) { l.observe(o, false) },
			DeleteFunc: func(o any) { l.observe(o, true) },
		},
	} {
		inf, err := c.GetInformer(ctx, obj)
		if err != nil {
			return nil, err
		}
		reg, err := inf.AddEventHandler(h)
		if err != nil {
			return nil, err
		}
		l.synced = append(l.synced, reg.HasSynced)
	}
	return l, nil
}

// observe brings the book of obj's namespace up to date with obj (gone
// says it was deleted), and wakes the namespace's waiting keys when that
// can have freed a slot.
func (l *slotLedger) observe(obj any, gone bool) {
	if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj, gone = d.Obj, true
	}
	o, ok := obj.(client.Object)
	if !ok {
		return
	}
	n := l.namespace(o.GetNamespace())
	n.mu.Lock()
	var freed bool
	switch o := o.(type) {
	case *keyward.AccessKey:
		if gone {
			freed = n.book.ForgetKey(o.UID)
		} else {
			freed = n.book.ObserveKey(o)
		}
		close(n.changed)
		n.changed = make(chan struct{})
	case *keyward.Application:
		if gone {
			freed = n.book.ForgetApplication(o.Name, o.UID)
		} else {
			freed = n.book.ObserveApplication(o)
		}
	case *corev1.Secret:
		var controller types.UID
		if ref, ok := policy.ControllingKey(o); !gone && ok && o.DeletionTimestamp.IsZero() {
			controller = ref.UID
		}
		freed = n.book.ObserveSecret(o.Name, controller)
	}
	n.mu.Unlock()
	if freed {
		l.wake(o.GetNamespace())
	}
}

func (l *slotLedger) namespace(ns string) *namespaceSlots {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, ok := l.namespaces[ns]
	if !ok {
		n = &namespaceSlots{book: policy.NewSlotBook(), changed: make(chan struct{})}
		l.namespaces[ns] = n
	}
	return n
}

// waitSynced waits until the book has seen everything the cache held when
// it started.
func (l *slotLedger) waitSynced(ctx context.Context) error {
	for _, synced := range l.synced {
		if !synced() && !toolscache.WaitForCacheSync(ctx.Done(), synced) {
			return fmt.Errorf("the slot ledger did not sync: %w", ctx.Err())
		}
	}
	return nil
}

// plan decides the slot of a key that needs one (policy.NeedsSlot) and
// plans the reconcile with that decision, in one step under the
// namespace's lock: a grant is recorded only for a plan that issues, and no
// other worker of the namespace decides between the decision and the
// grant. ok is false when the cache no longer holds the key (it was
// deleted meanwhile).
func (l *slotLedger) plan(ctx context.Context, key *keyward.AccessKey, obs policy.Observation) (plan policy.Plan, ok bool, err error) {
	if err := l.waitSynced(ctx); err != nil {
		return policy.Plan{}, false, err
	}
	n := l.namespace(key.Namespace)
	n.mu.Lock()
	defer n.mu.Unlock()
	d, ok := n.book.Decide(key, obs.Tenant)
	for deadline := time.Now().Add(bookLag); !ok; d, ok = n.book.Decide(key, obs.Tenant) {
		// The book has not observed the key yet (its handler runs a little
		// after the cache's index is updated). Once it has, it has observed
		// every key created before it too, so wait for it: deciding now
		// could pass over an older key the book has not seen either.
		cached, found, err := l.keys.GetByKey(key.Namespace + "/" + key.Name)
		if err != nil {
			return policy.Plan{}, false, err
		}
		if k, _ := cached.(*keyward.AccessKey); !found || k == nil || k.UID != key.UID {
			return policy.Plan{}, false, nil // deleted meanwhile
		} else if time.Now().After(deadline) {
			// Still not observed: take it from the index (its deletion
			// then reaches the book after this, under the same lock).
			n.book.ObserveKeyIfAbsent(k)
			continue
		}
		changed := n.changed
		n.mu.Unlock()
		select {
		case <-changed:
		case <-time.After(time.Until(deadline)):
		case <-ctx.Done():
		}
		n.mu.Lock()
		if ctx.Err() != nil {
			return policy.Plan{}, false, ctx.Err()
		}
	}
	if d.Outcome == policy.SlotHeld {
		d.Outcome = policy.SlotGranted // its own slot: it may be issued into it
	}
	obs.Slot = d
	plan = policy.PlanKey(obs)
	if plan.Material == policy.MaterialIssue {
		n.book.Grant(key.UID)
	}
	return plan, true, nil
}

// release gives back a slot granted to key that it will not use (its
// Secret was refused, or it no longer needs one). It reports whether key
// held one, so that waiting keys can be woken.
func (l *slotLedger) release(key *keyward.AccessKey) bool {
	n := l.namespace(key.Namespace)
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.book.Release(key.UID)
}

// waking returns the keys of ns whose slot decision differs from what
// their status records (policy.SlotBook.Waking). It is called when a slot
// can have freed.
func (l *slotLedger) waking(ctx context.Context, ns string, tenant policy.Tenant) ([]types.NamespacedName, error) {
	if err := l.waitSynced(ctx); err != nil {
		return nil, err
	}
	n := l.namespace(ns)
	n.mu.Lock()
	names := n.book.Waking(tenant)
	n.mu.Unlock()
	wake := make([]types.NamespacedName, len(names))
	for i, name := range names {
		wake[i] = types.NamespacedName{Namespace: ns, Name: name}
	}
	return wake, nil
}

// materialExpectations remembers, per key, the key ID of the material this
// manager last wrote and recorded, until the cache shows it. Until then the
// cached key is stale, and acting on it could write material twice.
type materialExpectations struct {
	mu     sync.Mutex
	byUID  map[types.UID]expectation
	maxAge time.Duration
}

type expectation struct {
	keyID string
	at    time.Time
}

func newMaterialExpectations() *materialExpectations {
	return &materialExpectations{byUID: map[types.UID]expectation{}, maxAge: 30 * time.Second}
}

func (e *materialExpectations) expect(key *keyward.AccessKey, keyID string, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.byUID[key.UID] = expectation{keyID: keyID, at: now}
}

// stale reports whether the cached key does not show yet the material last
// written for it. An expectation older than maxAge is given up (someone
// else wrote status meanwhile), so a lost one cannot stall a key.
func (e *materialExpectations) stale(key *keyward.AccessKey, now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	x, ok := e.byUID[key.UID]
	if !ok {
		return false
	}
	if key.Status.KeyID == x.keyID || now.Sub(x.at) > e.maxAge {
		delete(e.byUID, key.UID)
		return false
	}
	return true
}

func (e *materialExpectations) forget(uid types.UID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.byUID, uid)
}
