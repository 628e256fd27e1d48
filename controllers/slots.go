package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/policy"
)

// slotLedger decides limits from the informer cache alone, with no API
// list on the issue path. The cache lags behind the manager's own writes,
// so the ledger remembers the slots it granted that the cache does not
// show as issued yet (the "expectations" of the ReplicaSet controller), and
// decides one namespace at a time, so that concurrent workers can never
// overshoot a limit. It starts empty after a restart or a leader change:
// then the cache is the truth — keys with status.issuedAt, and Keyward
// Secrets controlled by a key whose issue was never recorded (a crash
// between the Secret write and the status write) — so nothing can
// overshoot or lose a slot.
type slotLedger struct {
	cache cache.Cache // the manager's

	mu         sync.Mutex
	namespaces map[string]*namespaceSlots
}

type namespaceSlots struct {
	mu sync.Mutex
	// granted holds the keys (by name) granted a slot whose issue the
	// cache does not show yet.
	granted map[string]types.UID
}

func newSlotLedger(c cache.Cache) *slotLedger {
	return &slotLedger{cache: c, namespaces: map[string]*namespaceSlots{}}
}

func (l *slotLedger) namespace(ns string) *namespaceSlots {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, ok := l.namespaces[ns]
	if !ok {
		n = &namespaceSlots{granted: map[string]types.UID{}}
		l.namespaces[ns] = n
	}
	return n
}

// decide returns the slot decision for key and, when it is granted,
// records the grant. ok is false when the cache does not hold key (it was
// deleted meanwhile).
func (l *slotLedger) decide(ctx context.Context, key *keyward.AccessKey, tenant policy.Tenant) (policy.SlotDecision, bool, error) {
	n := l.namespace(key.Namespace)
	n.mu.Lock()
	defer n.mu.Unlock()
	slots, err := l.slots(ctx, n, key.Namespace, tenant, key.Name)
	if err != nil {
		return policy.SlotDecision{}, false, err
	}
	d, ok := policy.DecideSlot(slots)
	if ok && (d.Outcome == policy.SlotGranted || d.Outcome == policy.SlotHeld) {
		d.Outcome = policy.SlotGranted
		n.granted[key.Name] = key.UID
	}
	return d, ok, nil
}

// release gives back a slot granted to key that it will not use (its
// Secret was refused, or it no longer needs one). It reports whether key
// held one, so that waiting keys can be woken.
func (l *slotLedger) release(key *keyward.AccessKey) bool {
	n := l.namespace(key.Namespace)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.granted[key.Name] != key.UID {
		return false
	}
	delete(n.granted, key.Name)
	return true
}

// holds reports whether the ledger holds a grant for key.
func (l *slotLedger) holds(key *keyward.AccessKey) bool {
	n := l.namespace(key.Namespace)
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.granted[key.Name] == key.UID
}

// waking returns the keys of ns whose slot decision differs from what
// their status records: waiting keys that would now be granted, or that
// are denied for another reason. It is called when a slot can have freed.
func (l *slotLedger) waking(ctx context.Context, ns string, tenant policy.Tenant) ([]types.NamespacedName, error) {
	n := l.namespace(ns)
	n.mu.Lock()
	defer n.mu.Unlock()
	slots, err := l.slots(ctx, n, ns, tenant, "")
	if err != nil {
		return nil, err
	}
	decisions := policy.AllocateSlots(slots)
	var wake []types.NamespacedName
	for _, k := range slots.Keys {
		d := decisions[k.Name]
		switch {
		case d.Outcome == policy.SlotGranted,
			d.Outcome == policy.SlotDenied && (k.Status.Phase != keyward.PhaseRejected || k.Status.ReadyReason() != d.Reason):
			wake = append(wake, types.NamespacedName{Namespace: ns, Name: k.Name})
		}
	}
	return wake, nil
}

// slots gathers what the limits of ns are decided over, from the cache and
// the ledger; n must be locked. Grants the cache now shows as issued, or
// whose key is gone, are dropped from the ledger.
//
// A decision reads pointers into the cache (namespaceView): nothing is
// copied, and beyond one pass over the namespace's keys it costs one map
// lookup per grant of the ledger and per key not yet issued.
func (l *slotLedger) slots(ctx context.Context, n *namespaceSlots, ns string, tenant policy.Tenant, self string) (policy.Slots, error) {
	view, err := l.view(ctx, ns)
	if err != nil {
		return policy.Slots{}, err
	}
	for name, uid := range n.granted {
		if k := view.key(name); k == nil || k.UID != uid || policy.IsIssued(k) {
			delete(n.granted, name)
		}
	}
	// A key whose issue was never recorded holds a slot while it controls
	// a Secret (a crash between the Secret write and the status write),
	// being deleted or not. Grants of keys being deleted stay until the
	// key is gone (above), so that no other key is valid in the slot.
	withSecret := map[types.UID]bool{}
	for _, k := range view.keys {
		if policy.IsIssued(k) || n.granted[k.Name] == k.UID {
			continue
		}
		if view.controlsSecret(k) {
			withSecret[k.UID] = true
		}
	}
	return policy.Slots{
		Keys: view.keys, Apps: view.apps, Tenant: tenant, Self: self,
		Holds: func(k *keyward.AccessKey) bool { return n.granted[k.Name] == k.UID || withSecret[k.UID] },
	}, nil
}

// namespaceView is one namespace's AccessKeys and Applications as the
// informer cache holds them: pointers into the cache, to be read only.
type namespaceView struct {
	ns      string
	keys    []*keyward.AccessKey
	apps    map[string]*keyward.Application
	byName  toolscache.Indexer // AccessKeys
	secrets toolscache.Indexer // Keyward Secrets
}

// view reads ns's objects from the informers' indexers.
func (l *slotLedger) view(ctx context.Context, ns string) (*namespaceView, error) {
	keys, err := indexerOf(ctx, l.cache, &keyward.AccessKey{})
	if err != nil {
		return nil, err
	}
	apps, err := indexerOf(ctx, l.cache, &keyward.Application{})
	if err != nil {
		return nil, err
	}
	secretIndex, err := indexerOf(ctx, l.cache, &corev1.Secret{})
	if err != nil {
		return nil, err
	}
	v := &namespaceView{ns: ns, byName: keys, secrets: secretIndex, apps: map[string]*keyward.Application{}}
	objs, err := keys.ByIndex(toolscache.NamespaceIndex, ns)
	if err != nil {
		return nil, err
	}
	v.keys = make([]*keyward.AccessKey, 0, len(objs))
	for _, o := range objs {
		if k, ok := o.(*keyward.AccessKey); ok {
			v.keys = append(v.keys, k)
		}
	}
	if objs, err = apps.ByIndex(toolscache.NamespaceIndex, ns); err != nil {
		return nil, err
	}
	for _, o := range objs {
		if a, ok := o.(*keyward.Application); ok {
			v.apps[a.Name] = a
		}
	}
	return v, nil
}

// key returns the cached AccessKey name of the namespace, nil if none.
func (v *namespaceView) key(name string) *keyward.AccessKey {
	o, ok, err := v.byName.GetByKey(v.ns + "/" + name)
	if err != nil || !ok {
		return nil
	}
	k, _ := o.(*keyward.AccessKey)
	return k
}

// controlsSecret reports whether k controls the Keyward Secret at its
// Secret name (the only name the manager writes k's material to; it is
// immutable), and that Secret is not being deleted.
func (v *namespaceView) controlsSecret(k *keyward.AccessKey) bool {
	o, ok, err := v.secrets.GetByKey(v.ns + "/" + k.SecretName())
	if err != nil || !ok {
		return false
	}
	s, ok := o.(*corev1.Secret)
	return ok && s.DeletionTimestamp.IsZero() && metav1.IsControlledBy(s, k)
}

// indexerOf returns the indexer of the cache's informer for obj's kind.
func indexerOf(ctx context.Context, c cache.Cache, obj client.Object) (toolscache.Indexer, error) {
	inf, err := c.GetInformer(ctx, obj)
	if err != nil {
		return nil, err
	}
	ix, ok := inf.(interface{ GetIndexer() toolscache.Indexer })
	if !ok {
		return nil, fmt.Errorf("the cache's informer for %T has no indexer", obj)
	}
	return ix.GetIndexer(), nil
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
