package policy

import (
	"strings"
	"testing"
	"time"

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
