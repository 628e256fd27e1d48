package policy

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// fuzzBytes hands out the fuzzer's bytes one decision at a time (zero once
// they run out), so every spec, status, tenant and observation the plan can
// see is reachable from the corpus.
type fuzzBytes struct{ b []byte }

func (f *fuzzBytes) next() byte {
	if len(f.b) == 0 {
		return 0
	}
	c := f.b[0]
	f.b = f.b[1:]
	return c
}
func (f *fuzzBytes) bool() bool  { return f.next()&1 == 1 }
func (f *fuzzBytes) n(n int) int { return int(f.next()) % n }

// at is a time relative to the plan's now, by the fuzzer: past, now,
// future, far future, or nil.
func (f *fuzzBytes) at(now time.Time) *metav1.Time {
	offsets := []time.Duration{-1000 * time.Hour, -time.Second, 0, time.Second, time.Hour, 10 * 365 * 24 * time.Hour}
	if f.n(4) == 0 {
		return nil
	}
	t := metav1.NewTime(now.Add(offsets[f.n(len(offsets))]))
	return &t
}

func (f *fuzzBytes) text(choices ...string) string { return choices[f.n(len(choices))] }

// observation builds a whole Observation from fuzz bytes.
func observation(data []byte, rotate, expires string) Observation {
	f := &fuzzBytes{b: data}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	scope := func() keyward.Scope {
		return keyward.Scope{Name: f.text("orders", "reports", "other"), Access: keyward.AccessLevel(f.text("", "ReadOnly", "ReadWrite", "Sideways"))}
	}
	var app *keyward.Application
	if f.n(5) != 0 {
		app = &keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: "t", Name: f.text("billing", "other"), UID: types.UID(f.text("uid-1", "uid-2"))}}
		for i := f.n(3); i > 0; i-- {
			app.Spec.Scopes = append(app.Spec.Scopes, scope())
		}
		if f.n(8) == 0 {
			app.DeletionTimestamp = f.at(now)
		}
	}
	k := &keyward.AccessKey{ObjectMeta: metav1.ObjectMeta{Namespace: "t", Name: "k", Generation: int64(f.n(4))}}
	k.Spec.Application = "billing"
	k.Spec.Revoked = f.n(4) == 0
	k.Spec.State = keyward.KeyState(f.text("", "Active", "Inactive", "Bogus"))
	if expires != "" || f.bool() {
		ts := keyward.Timestamp(expires)
		k.Spec.ExpiresAt = &ts
	}
	if f.bool() {
		k.Annotations = map[string]string{keyward.RotateAnnotation: rotate}
	}
	for i := f.n(3); i > 0; i-- {
		k.Spec.Scopes = append(k.Spec.Scopes, scope())
	}
	if f.bool() {
		k.OwnerReferences = []metav1.OwnerReference{{APIVersion: keyward.GroupVersion.String(), Kind: "Application",
			Name: "billing", UID: types.UID(f.text("uid-1", "uid-2"))}}
	}
	if f.n(8) == 0 {
		k.DeletionTimestamp = f.at(now)
	}
	// Status: never issued, issued, or anything in between a crash left.
	k.Status.Phase = keyward.KeyPhase(f.text("", "Pending", "Active", "Inactive", "Expired", "Revoked", "Rejected"))
	k.Status.IssuedAt = f.at(now)
	if f.bool() {
		k.Status.KeyID, k.Status.SecretHash = "abcdefghijklmnop", "sha256:"+strings.Repeat("a", 64)
	}
	k.Status.ExpiresAt, k.Status.LifetimeLimit = f.at(now), f.at(now)
	if f.bool() {
		k.Status.Rotation = &keyward.RotationStatus{LastRequest: f.text("", rotate, "r0")}
	}
	if f.bool() {
		vu := f.at(now)
		if vu == nil {
			vu = &metav1.Time{Time: now}
		}
		k.Status.PreviousKey = &keyward.PreviousKey{KeyID: "qrstuvwxyz234567", SecretHash: "sha256:" + strings.Repeat("b", 64), ValidUntil: *vu}
	}
	if f.bool() {
		g := keyward.Duration(f.text("0s", "1h", "720h", "garbage", "-1h"))
		k.Spec.Rotation = &keyward.RotationSpec{GracePeriod: &g}
	}
	o := Observation{Key: k, App: app, Now: now, MaxRequeue: 10 * time.Minute,
		Tenant: Tenant{Enabled: f.n(4) != 0, MaxKeysPerOwner: 5, MaxKeys: 100},
		Slot:   SlotDecision{Outcome: SlotOutcome(f.n(4))},
		Secret: SecretState(f.n(4)),
	}
	if f.n(6) == 0 {
		o.Tenant.Invalid = "spec.maxKeyLifetime cannot be read"
	}
	if f.bool() {
		o.Tenant.MaxKeyLifetime = time.Duration(f.n(100)) * time.Hour
	}
	if o.Slot.Outcome == SlotDenied {
		o.Slot.Reason, o.Slot.Message = keyward.ReasonApplicationLimitExceeded, "full"
	}
	switch f.n(6) {
	case 0:
		o.Refusal = &Refusal{Reason: keyward.ReasonSecretNameConflict}
	case 1:
		o.Refusal = &Refusal{Reason: keyward.ReasonSecretInvalid, Fields: []string{"spec.secretTemplate.labels"}}
	}
	return o
}

// FuzzPlanKey: PlanKey never panics on any key, Application, tenant, slot,
// Secret state and refusal, and its plan holds the invariants that keep
// keys safe: a revoked key never gets material and keeps no hash; a key
// never issued gets material only with a granted slot; no material without
// the key's own Application, a usable switched-on tenant and a Secret name
// of its own; material only for a key that ends up Active, Inactive or
// Expired; a rotation only for a new request; and a status that can always
// be written (a phase, a Ready condition, a bounded message).
func FuzzPlanKey(f *testing.F) {
	f.Add([]byte{}, "r1", "")
	f.Add([]byte{1, 1, 0, 1, 1, 1, 2, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, "r2", "2030-01-01T00:00:00Z")
	f.Add([]byte{3, 2, 1, 0, 0, 1, 2, 1, 4, 5, 6, 1, 0, 1, 0, 1, 1, 3, 2, 1, 0, 0, 0, 0}, "", "2020-01-01T00:00:00Z")
	f.Add([]byte{255, 254, 253, 252, 251, 250, 249, 248, 247, 246, 245, 244, 243, 242, 241, 240}, strings.Repeat("x", 300), "not a time")
	f.Add([]byte{1, 0, 1, 2, 0, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2}, "r0", "9999-12-31T23:00:00-05:00")
	f.Fuzz(func(t *testing.T, data []byte, rotate, expires string) {
		o := observation(data, rotate, expires)
		k := o.Key.DeepCopy()
		p := PlanKey(o)
		if !equalKeys(k, o.Key) {
			t.Fatal("PlanKey changed the key it was given")
		}
		writes := p.Material.Writes()
		if k.Spec.Revoked {
			if writes || p.Status.Phase != keyward.PhaseRevoked || p.Status.SecretHash != "" || p.Status.PreviousKey != nil {
				t.Fatalf("revoked key: material %v, phase %s, hash kept %v, previous kept %v",
					p.Material, p.Status.Phase, p.Status.SecretHash != "", p.Status.PreviousKey != nil)
			}
		}
		if !IsIssued(k) && o.Slot.Outcome != SlotGranted && writes {
			t.Fatalf("a key never issued got material (%v) with slot outcome %v", p.Material, o.Slot.Outcome)
		}
		if writes && (ApplicationOf(k, o.App) == nil || !o.Tenant.Enabled || o.Tenant.Invalid != "") {
			t.Fatalf("material (%v) without the key's Application or a usable, switched-on tenant", p.Material)
		}
		if writes && (o.Secret == SecretForeign || o.Refusal != nil) {
			t.Fatalf("material (%v) into a Secret name the key does not own or the API server refused", p.Material)
		}
		if writes && p.Status.Phase != keyward.PhaseActive && p.Status.Phase != keyward.PhaseInactive && p.Status.Phase != keyward.PhaseExpired {
			t.Fatalf("material (%v) for a key planned %s", p.Material, p.Status.Phase)
		}
		if p.Material == MaterialRotate {
			if k.Annotations[keyward.RotateAnnotation] == "" || (k.Status.Rotation != nil && RotationRecord(k.Annotations[keyward.RotateAnnotation]) == k.Status.Rotation.LastRequest) {
				t.Fatal("a rotation without a new request")
			}
		}
		if p.Material == MaterialDestroy && !k.Spec.Revoked {
			t.Fatal("material destroyed for a key not revoked")
		}
		if p.Status.Phase == keyward.PhaseActive && (k.Spec.Revoked || k.Spec.State == keyward.StateInactive) {
			t.Fatalf("Active although revoked %v, state %s", k.Spec.Revoked, k.Spec.State)
		}
		if p.Status.Phase == "" {
			t.Fatal("no phase")
		}
		c := p.Ready()
		if c == nil || c.Reason == "" || len(c.Message) > MaxMessage {
			t.Fatal("no Ready condition with a reason and a bounded message")
		}
		if p.RequeueAfter < 0 || (o.MaxRequeue > 0 && p.RequeueAfter > o.MaxRequeue) {
			t.Fatalf("wake-up %v outside [0, %v]", p.RequeueAfter, o.MaxRequeue)
		}
	})
}

func equalKeys(a, b *keyward.AccessKey) bool {
	return a.Spec.Revoked == b.Spec.Revoked && a.Status.SecretHash == b.Status.SecretHash && a.Status.Phase == b.Status.Phase &&
		len(a.Annotations) == len(b.Annotations) && (a.Spec.ExpiresAt == nil) == (b.Spec.ExpiresAt == nil)
}

// FuzzAllocateSlots: over any namespace the fuzzer builds (issued,
// granted, waiting, revoked, refused and deleted keys of several
// Applications and owners), AllocateSlots never panics and holds the
// limits: every key that holds a slot keeps it, being deleted or not; a key
// being deleted never takes a slot it did not hold; a slot is granted only
// where the keys holding or granted one stay within every limit; and
// DecideSlot answers what AllocateSlots answers.
func FuzzAllocateSlots(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{3, 1, 1, 0, 0, 2, 1, 0, 1, 3, 0, 0, 1, 1, 2, 2, 0, 1, 0, 3, 1, 1, 1, 0})
	f.Add([]byte{7, 0, 3, 1, 1, 1, 1, 0, 3, 2, 1, 1, 0, 1, 3, 1, 1, 1, 1, 0, 0, 2, 1, 1, 3, 3, 3, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		fb := &fuzzBytes{b: data}
		now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
		apps := map[string]*keyward.Application{}
		for _, a := range []string{"a", "b"} {
			apps[a] = &keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: "t", Name: a},
				Spec: keyward.ApplicationSpec{MaxAccessKeys: int32(fb.n(4))}} // 0: the default
		}
		tenant := Tenant{Enabled: true, MaxKeysPerOwner: int32(1 + fb.n(4)), MaxKeys: int32(1 + fb.n(6))}
		held := map[string]bool{}
		var keys []*keyward.AccessKey
		for i := range 1 + fb.n(12) {
			k := &keyward.AccessKey{ObjectMeta: metav1.ObjectMeta{Namespace: "t", Name: fmt.Sprintf("k%02d", i),
				CreationTimestamp: metav1.NewTime(now.Add(-time.Duration(fb.n(4)) * time.Second))}}
			k.Spec.Application = fb.text("a", "b", "gone")
			k.Spec.Owner = fb.text("alice", "bob", "")
			k.Spec.Revoked = fb.n(6) == 0
			if fb.n(3) == 0 {
				k.Status.IssuedAt = &metav1.Time{Time: now.Add(-time.Hour)}
				k.Status.Phase = keyward.KeyPhase(fb.text("Active", "Inactive", "Expired", "Revoked", "Rejected"))
			}
			if fb.n(4) == 0 {
				k.DeletionTimestamp = &metav1.Time{Time: now}
				k.Finalizers = []string{"example.com/hold"}
			}
			held[k.Name] = fb.n(6) == 0
			keys = append(keys, k)
		}
		s := Slots{Keys: keys, Apps: apps, Tenant: tenant, Holds: func(k *keyward.AccessKey) bool { return held[k.Name] }}
		got := AllocateSlots(s)
		usedApp, usedOwner, used := map[string]int32{}, map[string]int32{}, int32(0)
		heldApp, heldOwner, heldAll := map[string]int32{}, map[string]int32{}, int32(0)
		for _, k := range keys {
			d := got[k.Name]
			holds := IsIssued(k) || held[k.Name]
			if holds != (d.Outcome == SlotHeld) {
				t.Fatalf("%s (issued %v, held %v, deleting %v): %v", k.Name, IsIssued(k), held[k.Name], !k.DeletionTimestamp.IsZero(), d.Outcome)
			}
			if !k.DeletionTimestamp.IsZero() && !holds && d.Outcome != SlotNotCandidate {
				t.Fatalf("%s is being deleted without a slot and got %v", k.Name, d.Outcome)
			}
			if d.Outcome == SlotHeld {
				heldApp[k.Spec.Application]++
				heldOwner[k.Spec.Owner]++
				heldAll++
			}
			if d.Outcome == SlotHeld || d.Outcome == SlotGranted {
				usedApp[k.Spec.Application]++
				usedOwner[k.Spec.Owner]++
				used++
			}
		}
		for _, k := range keys {
			if got[k.Name].Outcome != SlotGranted {
				continue
			}
			a, o := k.Spec.Application, k.Spec.Owner
			if usedApp[a] > max(heldApp[a], maxAccessKeys(apps[a])) || usedOwner[o] > max(heldOwner[o], tenant.MaxKeysPerOwner) || used > max(heldAll, tenant.MaxKeys) {
				t.Fatalf("%s granted beyond a limit: app %s %d/%d, owner %q %d/%d, tenant %d/%d",
					k.Name, a, usedApp[a], maxAccessKeys(apps[a]), o, usedOwner[o], tenant.MaxKeysPerOwner, used, tenant.MaxKeys)
			}
		}
		for _, k := range keys {
			s.Self = k.Name
			want := AllocateSlots(s)[k.Name]
			if d, ok := DecideSlot(s); !ok || d != want {
				t.Fatalf("%s: DecideSlot = %+v, %v; AllocateSlots = %+v", k.Name, d, ok, want)
			}
		}
	})
}

// FuzzDeletingStatus: the status of a key being deleted, whatever its
// finalizers and prior status, keeps its phase, says Deleting with a
// bounded message, and is a fixed point (writing it again changes nothing).
func FuzzDeletingStatus(f *testing.F) {
	f.Add([]byte{1, 2, 3}, "example.com/hold", 2)
	f.Add([]byte{}, "", 0)
	f.Add([]byte{255, 0, 4}, strings.Repeat("a\u202e\"", 400), 40)
	f.Fuzz(func(t *testing.T, data []byte, finalizer string, n int) {
		o := observation(data, "r", "")
		k := o.Key
		k.DeletionTimestamp = &metav1.Time{Time: o.Now}
		for i := range min(max(n, 0), 64) {
			k.Finalizers = append(k.Finalizers, fmt.Sprintf("%s-%d", finalizer, i))
		}
		st := DeletingStatus(k, o.Now)
		c := meta.FindStatusCondition(st.Conditions, keyward.ConditionReady)
		if c == nil || c.Reason != keyward.ReasonDeleting || c.Status != metav1.ConditionFalse || len(c.Message) > MaxMessage {
			t.Fatalf("Ready %+v", c)
		}
		if st.Phase != k.Status.Phase || st.KeyID != k.Status.KeyID || st.SecretHash != k.Status.SecretHash {
			t.Fatal("the recorded phase or material record changed")
		}
		k.Status = st
		if again := DeletingStatus(k, o.Now.Add(time.Minute)); !equality.Semantic.DeepEqual(again, st) {
			t.Fatal("not a fixed point")
		}
	})
}
