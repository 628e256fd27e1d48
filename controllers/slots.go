package controllers

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/policy"
	"keyward.dev/keyward/internal/secrets"
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
	reader client.Reader // the manager's cache

	mu         sync.Mutex
	namespaces map[string]*namespaceSlots
}

type namespaceSlots struct {
	mu sync.Mutex
	// granted holds the keys (by name) granted a slot whose issue the
	// cache does not show yet.
	granted map[string]types.UID
}

func newSlotLedger(reader client.Reader) *slotLedger {
	return &slotLedger{reader: reader, namespaces: map[string]*namespaceSlots{}}
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
	var keys keyward.AccessKeyList
	if err := l.reader.List(ctx, &keys, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	for i := range keys.Items {
		k := &keys.Items[i]
		d := decisions[k.Name]
		switch {
		case d.Outcome == policy.SlotGranted,
			d.Outcome == policy.SlotDenied && (k.Status.Phase != keyward.PhaseRejected || readyReason(k) != d.Reason):
			wake = append(wake, types.NamespacedName{Namespace: ns, Name: k.Name})
		}
	}
	return wake, nil
}

// slots gathers what the limits of ns are decided over, from the cache and
// the ledger; n must be locked. Grants the cache now shows as issued, or
// whose key is gone, are dropped from the ledger.
func (l *slotLedger) slots(ctx context.Context, n *namespaceSlots, ns string, tenant policy.Tenant, self string) (policy.Slots, error) {
	// Read-only views of the cache: no copies, so a decision costs
	// O(keys of the namespace) pointer reads, not object copies.
	var keys keyward.AccessKeyList
	if err := l.reader.List(ctx, &keys, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
		return policy.Slots{}, err
	}
	var apps keyward.ApplicationList
	if err := l.reader.List(ctx, &apps, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
		return policy.Slots{}, err
	}
	var secretList corev1.SecretList
	if err := l.reader.List(ctx, &secretList, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
		return policy.Slots{}, err
	}
	withSecret := map[string]bool{}
	for i := range secretList.Items {
		s := &secretList.Items[i]
		if uid, ok := secrets.ControllerUID(s); ok && s.DeletionTimestamp.IsZero() {
			withSecret[uid] = true
		}
	}

	all := make([]*keyward.AccessKey, len(keys.Items))
	seen := make(map[string]types.UID, len(keys.Items))
	for i := range keys.Items {
		k := &keys.Items[i]
		all[i] = k
		seen[k.Name] = k.UID
		if policy.IsIssued(k) {
			delete(n.granted, k.Name)
		}
	}
	for name, uid := range n.granted {
		if seen[name] != uid {
			delete(n.granted, name)
		}
	}
	byName := make(map[string]*keyward.Application, len(apps.Items))
	for i := range apps.Items {
		byName[apps.Items[i].Name] = &apps.Items[i]
	}
	return policy.Slots{
		Keys: all, Apps: byName, Tenant: tenant, Self: self,
		Holds: func(k *keyward.AccessKey) bool { return n.granted[k.Name] == k.UID || withSecret[string(k.UID)] },
	}, nil
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
