package policy

import (
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// t0 is a fixed "now" with whole seconds, like creation timestamps.
var t0 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) *metav1.Time { m := metav1.NewTime(t0.Add(d)); return &m }

type keyOpt func(*keyward.AccessKey)

func key(name, app string, created time.Duration, opts ...keyOpt) keyward.AccessKey {
	k := keyward.AccessKey{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "t", CreationTimestamp: *at(created)},
		Spec:       keyward.AccessKeySpec{Application: app, Owner: "alice", State: keyward.StateActive},
	}
	for _, o := range opts {
		o(&k)
	}
	return k
}

func issued(phase keyward.KeyPhase) keyOpt {
	return func(k *keyward.AccessKey) {
		k.Status.IssuedAt = at(-time.Hour)
		k.Status.Phase = phase
		k.Status.KeyID = "id-" + k.Name
		k.Status.SecretHash = "sha256:" + k.Name
	}
}

func owner(o string) keyOpt { return func(k *keyward.AccessKey) { k.Spec.Owner = o } }

func expires(d time.Duration) keyOpt {
	return func(k *keyward.AccessKey) {
		k.Spec.ExpiresAt = keyward.NewTimestamp(at(d).Time)
		k.Status.ExpiresAt = at(d)
	}
}

func app(name string, max int32, scopes ...keyward.Scope) *keyward.Application {
	return &keyward.Application{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "t"},
		Spec: keyward.ApplicationSpec{MaxAccessKeys: max, Scopes: scopes}}
}

var enabled = Tenant{Enabled: true, MaxKeysPerOwner: 5, MaxKeys: 1000, ExpiryWarning: 720 * time.Hour}

// ---------------------------------------------------------------- slots

func alloc(keys []keyward.AccessKey, apps map[string]*keyward.Application, t Tenant) map[string]SlotDecision {
	ptrs := make([]*keyward.AccessKey, len(keys))
	for i := range keys {
		ptrs[i] = &keys[i]
	}
	return AllocateSlots(Slots{Keys: ptrs, Apps: apps, Tenant: t})
}

func outcomes(d map[string]SlotDecision) map[string]SlotOutcome {
	out := map[string]SlotOutcome{}
	for k, v := range d {
		out[k] = v.Outcome
	}
	return out
}

func TestAllocateSlotsOldestFirstThenName(t *testing.T) {
	apps := map[string]*keyward.Application{"a": app("a", 2)}
	// Listed in an arbitrary order; c and b share a creation second.
	keys := []keyward.AccessKey{
		key("d", "a", -10*time.Second),
		key("c", "a", -20*time.Second),
		key("b", "a", -20*time.Second),
		key("e", "a", -30*time.Second),
	}
	got := alloc(keys, apps, enabled)
	want := map[string]SlotOutcome{"e": SlotGranted, "b": SlotGranted, "c": SlotDenied, "d": SlotDenied}
	if fmt.Sprint(outcomes(got)) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", outcomes(got), want)
	}
	if got["c"].Reason != keyward.ReasonApplicationLimitExceeded {
		t.Fatalf("reason %q", got["c"].Reason)
	}
}

func TestAllocateSlotsIsIndependentOfOrder(t *testing.T) {
	apps := map[string]*keyward.Application{"a": app("a", 3)}
	var keys []keyward.AccessKey
	for i := 0; i < 20; i++ {
		keys = append(keys, key(fmt.Sprintf("k%02d", i), "a", -time.Duration(i%4)*time.Second))
	}
	first := fmt.Sprint(outcomes(alloc(keys, apps, enabled)))
	for shift := 1; shift < len(keys); shift++ {
		rotated := append(append([]keyward.AccessKey{}, keys[shift:]...), keys[:shift]...)
		if got := fmt.Sprint(outcomes(alloc(rotated, apps, enabled))); got != first {
			t.Fatalf("order %d changed the outcome:\n%s\n%s", shift, got, first)
		}
	}
}

func TestAllocateSlotsIssuedKeysKeepTheirSlot(t *testing.T) {
	apps := map[string]*keyward.Application{"a": app("a", 1)}
	keys := []keyward.AccessKey{
		key("old-waiting", "a", -time.Hour),
		key("issued-1", "a", -time.Minute, issued(keyward.PhaseExpired)),
		key("issued-2", "a", -time.Minute, issued(keyward.PhaseInactive)),
	}
	got := alloc(keys, apps, enabled)
	if got["issued-1"].Outcome != SlotHeld || got["issued-2"].Outcome != SlotHeld {
		t.Fatalf("issued keys lost their slot after the limit was lowered: %v", outcomes(got))
	}
	if got["old-waiting"].Outcome != SlotDenied {
		t.Fatalf("a waiting key took a slot above the limit: %v", outcomes(got))
	}
}

func TestAllocateSlotsFreedSlotGoesToOldestRejected(t *testing.T) {
	apps := map[string]*keyward.Application{"a": app("a", 2)}
	keys := []keyward.AccessKey{
		key("active", "a", -time.Hour, issued(keyward.PhaseActive)),
		key("young", "a", -time.Minute),
		key("old", "a", -30*time.Minute),
	}
	got := alloc(keys, apps, enabled)
	if got["old"].Outcome != SlotGranted || got["young"].Outcome != SlotDenied {
		t.Fatalf("got %v", outcomes(got))
	}
}

func TestAllocateSlotsOwnerLimitAcrossApplications(t *testing.T) {
	apps := map[string]*keyward.Application{"a": app("a", 10), "b": app("b", 10)}
	tenant := enabled
	tenant.MaxKeysPerOwner = 2
	keys := []keyward.AccessKey{
		key("bob-1", "a", -3*time.Minute, owner("bob"), issued(keyward.PhaseActive)),
		key("bob-2", "b", -2*time.Minute, owner("bob")),
		key("bob-3", "a", -1*time.Minute, owner("bob")),
		key("carol", "a", -1*time.Minute, owner("carol")),
		key("nobody", "a", -1*time.Minute, owner("")),
	}
	got := alloc(keys, apps, tenant)
	want := map[string]SlotOutcome{"bob-1": SlotHeld, "bob-2": SlotGranted, "bob-3": SlotDenied, "carol": SlotGranted, "nobody": SlotGranted}
	if fmt.Sprint(outcomes(got)) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", outcomes(got), want)
	}
	if got["bob-3"].Reason != keyward.ReasonOwnerLimitExceeded {
		t.Fatalf("reason %q", got["bob-3"].Reason)
	}
}

func TestAllocateSlotsNonCandidates(t *testing.T) {
	apps := map[string]*keyward.Application{"a": app("a", 1, keyward.Scope{Name: "s", Access: keyward.ReadOnly})}
	deleting := key("deleting", "a", -5*time.Hour)
	deleting.DeletionTimestamp = at(0)
	keys := []keyward.AccessKey{
		deleting,
		key("revoked", "a", -4*time.Hour, func(k *keyward.AccessKey) { k.Spec.Revoked = true }),
		key("orphan", "missing", -3*time.Hour),
		key("too-wide", "a", -2*time.Hour, func(k *keyward.AccessKey) {
			k.Spec.Scopes = []keyward.Scope{{Name: "s", Access: keyward.ReadWrite}}
		}),
		key("fits", "a", -time.Hour),
	}
	got := alloc(keys, apps, enabled)
	for _, n := range []string{"deleting", "revoked", "orphan", "too-wide"} {
		if got[n].Outcome != SlotNotCandidate {
			t.Errorf("%s: %v", n, got[n].Outcome)
		}
	}
	if got["fits"].Outcome != SlotGranted {
		t.Errorf("the only candidate did not get the free slot: %v", got["fits"].Outcome)
	}
}

// A key being deleted (a finalizer keeps it) holds the slot it held until
// it is gone, and takes none it did not hold.
func TestAllocateSlotsDeletingKeys(t *testing.T) {
	deleting := func(k *keyward.AccessKey) { k.DeletionTimestamp = at(0); k.Finalizers = []string{"example.com/hold"} }
	cases := []struct {
		name    string
		first   keyward.AccessKey
		held    bool // the ledger holds a grant for first (or it controls a Secret)
		want    SlotOutcome
		waiting SlotOutcome
	}{
		{"issued, deleting", key("first", "a", -time.Hour, issued(keyward.PhaseActive), deleting), false, SlotHeld, SlotDenied},
		{"issued, revoked, deleting", key("first", "a", -time.Hour, issued(keyward.PhaseRevoked), deleting), false, SlotHeld, SlotDenied},
		{"granted, not recorded, deleting", key("first", "a", -time.Hour, deleting), true, SlotHeld, SlotDenied},
		{"never held, deleting", key("first", "a", -time.Hour, deleting), false, SlotNotCandidate, SlotGranted},
		{"rejected, deleting", key("first", "a", -time.Hour, deleting, func(k *keyward.AccessKey) { k.Status.Phase = keyward.PhaseRejected }), false, SlotNotCandidate, SlotGranted},
		{"issued, not deleting", key("first", "a", -time.Hour, issued(keyward.PhaseActive)), false, SlotHeld, SlotDenied},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			keys := []*keyward.AccessKey{&c.first, ptr.To(key("second", "a", 0))}
			s := Slots{Keys: keys, Apps: map[string]*keyward.Application{"a": app("a", 1)}, Tenant: enabled,
				Holds: func(k *keyward.AccessKey) bool { return c.held && k.Name == "first" }}
			got := AllocateSlots(s)
			if got["first"].Outcome != c.want || got["second"].Outcome != c.waiting {
				t.Fatalf("got %v, want first %v, second %v", outcomes(got), c.want, c.waiting)
			}
			if c.waiting == SlotDenied && got["second"].Reason != keyward.ReasonApplicationLimitExceeded {
				t.Fatalf("reason %q", got["second"].Reason)
			}
			s.Self = "second"
			if d, ok := DecideSlot(s); !ok || d != got["second"] {
				t.Fatalf("DecideSlot = %+v, %v; AllocateSlots = %+v", d, ok, got["second"])
			}
		})
	}
}

func TestDeletingStatus(t *testing.T) {
	k := key("k", "a", 0, issued(keyward.PhaseActive))
	k.Generation = 3
	k.DeletionTimestamp = at(0)
	k.Finalizers = []string{"example.com/hold", "backup.example.com/keep"}
	SetConditions(&k.Status.Conditions, 2, Done, keyward.ReasonIssued, "issued", t0.Add(-time.Hour))
	st := DeletingStatus(&k, t0)
	c := meta.FindStatusCondition(st.Conditions, keyward.ConditionReady)
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != keyward.ReasonDeleting || c.ObservedGeneration != 3 {
		t.Fatalf("Ready %+v", c)
	}
	for _, f := range k.Finalizers {
		if !strings.Contains(c.Message, f) {
			t.Fatalf("message %q does not name %s", c.Message, f)
		}
	}
	if meta.FindStatusCondition(st.Conditions, ConditionReconciling) == nil {
		t.Fatal("not Reconciling while finalizers keep it")
	}
	if st.Phase != keyward.PhaseActive || st.KeyID != k.Status.KeyID || st.IssuedAt == nil || st.ObservedGeneration != 3 {
		t.Fatalf("the recorded phase and material record changed: %+v", st)
	}
	if k.Status.Phase != keyward.PhaseActive || readyOf(k.Status).Reason != keyward.ReasonIssued {
		t.Fatal("DeletingStatus changed the key it was given")
	}
	// Idempotent: once written, the same status again (a later clock too).
	k.Status = st
	if again := DeletingStatus(&k, t0.Add(time.Hour)); !equality.Semantic.DeepEqual(again, st) {
		t.Fatalf("a second call changed the status:\n%+v\n%+v", again, st)
	}
	// Bounded, whatever the finalizers.
	k.Finalizers = nil
	for i := 0; i < 100; i++ {
		k.Finalizers = append(k.Finalizers, fmt.Sprintf("example.com/%s-%d", strings.Repeat("f", 50), i))
	}
	if m := readyOf(DeletingStatus(&k, t0)).Message; len(m) > MaxMessage {
		t.Fatalf("message of %d bytes", len(m))
	}
}

func readyOf(st keyward.AccessKeyStatus) *metav1.Condition {
	return meta.FindStatusCondition(st.Conditions, keyward.ConditionReady)
}

func TestAllocateSlotsDefaultLimitIsTwo(t *testing.T) {
	apps := map[string]*keyward.Application{"a": app("a", 0)}
	keys := []keyward.AccessKey{key("1", "a", -3*time.Second), key("2", "a", -2*time.Second), key("3", "a", -time.Second)}
	got := alloc(keys, apps, enabled)
	if got["3"].Outcome != SlotDenied || got["2"].Outcome != SlotGranted {
		t.Fatalf("got %v", outcomes(got))
	}
}

// ---------------------------------------------------------------- lifecycle

// plan plans k with the observation a test needs (by default: its
// Application exists, the tenant is on, a slot is free, and an issued key's
// Secret is intact).
func plan(k keyward.AccessKey, mutate ...func(*Observation)) Plan {
	o := Observation{Key: &k, App: app("a", 2), Tenant: enabled, Slot: SlotDecision{Outcome: SlotGranted}, Secret: SecretMissing, Now: t0, MaxRequeue: 24 * time.Hour}
	if IsIssued(&k) {
		o.Slot, o.Secret = SlotDecision{Outcome: SlotHeld}, SecretIntact
	}
	for _, m := range mutate {
		m(&o)
	}
	return PlanKey(o)
}

func reasonOf(p Plan) string { return p.Ready().Reason }

func lastRequest(p Plan) string {
	if p.Status.Rotation == nil {
		return ""
	}
	return p.Status.Rotation.LastRequest
}

func TestDecidePhases(t *testing.T) {
	noApp := func(o *Observation) { o.App = nil }
	off := func(o *Observation) { o.Tenant.Enabled = false }
	denied := func(o *Observation) {
		o.Slot = SlotDecision{Outcome: SlotDenied, Reason: keyward.ReasonOwnerLimitExceeded, Message: "full"}
	}
	narrowApp := func(o *Observation) { o.App = app("a", 2, keyward.Scope{Name: "s", Access: keyward.ReadOnly}) }
	wantsRW := func(k *keyward.AccessKey) { k.Spec.Scopes = []keyward.Scope{{Name: "s", Access: keyward.ReadWrite}} }
	inactive := func(k *keyward.AccessKey) { k.Spec.State = keyward.StateInactive }
	revoked := func(k *keyward.AccessKey) { k.Spec.Revoked = true }

	cases := []struct {
		name     string
		key      keyward.AccessKey
		obs      []func(*Observation)
		phase    keyward.KeyPhase
		reason   string
		material MaterialAction
	}{
		{"new key is issued", key("k", "a", -time.Hour), nil, keyward.PhaseActive, keyward.ReasonIssued, MaterialIssue},
		{"application missing", key("k", "a", -time.Hour), []func(*Observation){noApp}, keyward.PhasePending, keyward.ReasonApplicationNotFound, MaterialKeep},
		{"tenant off", key("k", "a", -time.Hour), []func(*Observation){off}, keyward.PhasePending, keyward.ReasonAPIKeysDisabled, MaterialKeep},
		{"tenant off keeps issued material", key("k", "a", -time.Hour, issued(keyward.PhaseActive)), []func(*Observation){off}, keyward.PhasePending, keyward.ReasonAPIKeysDisabled, MaterialKeep},
		{"limit full", key("k", "a", -time.Hour), []func(*Observation){denied}, keyward.PhaseRejected, keyward.ReasonOwnerLimitExceeded, MaterialKeep},
		{"scope beyond application", key("k", "a", -time.Hour, wantsRW), []func(*Observation){narrowApp}, keyward.PhaseRejected, keyward.ReasonScopeNotAllowed, MaterialKeep},
		{"scopes narrowed after issue", key("k", "a", -time.Hour, wantsRW, issued(keyward.PhaseActive)), []func(*Observation){narrowApp}, keyward.PhaseRejected, keyward.ReasonScopeNotAllowed, MaterialKeep},
		{"active", key("k", "a", -time.Hour, issued(keyward.PhaseActive)), nil, keyward.PhaseActive, keyward.ReasonIssued, MaterialKeep},
		{"inactive", key("k", "a", -time.Hour, issued(keyward.PhaseActive), inactive), nil, keyward.PhaseInactive, keyward.ReasonInactive, MaterialKeep},
		{"expired", key("k", "a", -time.Hour, issued(keyward.PhaseActive), expires(0)), nil, keyward.PhaseExpired, keyward.ReasonExpired, MaterialKeep},
		{"expired wins over inactive", key("k", "a", -time.Hour, issued(keyward.PhaseActive), expires(-time.Second), inactive), nil, keyward.PhaseExpired, keyward.ReasonExpired, MaterialKeep},
		{"new key with a past expiry", key("k", "a", -time.Hour, func(k *keyward.AccessKey) { k.Spec.ExpiresAt = keyward.NewTimestamp(at(-time.Minute).Time) }), nil, keyward.PhaseExpired, keyward.ReasonExpired, MaterialIssue},
		{"revoked destroys material", key("k", "a", -time.Hour, issued(keyward.PhaseActive), revoked), nil, keyward.PhaseRevoked, keyward.ReasonRevoked, MaterialDestroy},
		{"revoked beats a missing application", key("k", "a", -time.Hour, issued(keyward.PhaseActive), revoked), []func(*Observation){noApp}, keyward.PhaseRevoked, keyward.ReasonRevoked, MaterialDestroy},
		{"revoked before issue has nothing to destroy", key("k", "a", -time.Hour, revoked), nil, keyward.PhaseRevoked, keyward.ReasonRevoked, MaterialKeep},
		{"secret lost", key("k", "a", -time.Hour, issued(keyward.PhaseActive)), []func(*Observation){func(o *Observation) { o.Secret = SecretMissing }}, keyward.PhaseActive, keyward.ReasonIssued, MaterialReissue},
		{"secret edited", key("k", "a", -time.Hour, issued(keyward.PhaseInactive), inactive), []func(*Observation){func(o *Observation) { o.Secret = SecretTampered }}, keyward.PhaseInactive, keyward.ReasonInactive, MaterialReissue},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := plan(c.key, c.obs...)
			if p.Status.Phase != c.phase || reasonOf(p) != c.reason || p.Material != c.material {
				t.Fatalf("got %s/%s/material %d, want %s/%s/material %d (%s)", p.Status.Phase, reasonOf(p), p.Material, c.phase, c.reason, c.material, p.Ready().Message)
			}
			if p.Ready().Message == "" {
				t.Fatal("no message")
			}
		})
	}
}

func TestDecideRevokedAlreadyDestroyedIsIdempotent(t *testing.T) {
	k := key("k", "a", -time.Hour, issued(keyward.PhaseRevoked), func(k *keyward.AccessKey) { k.Spec.Revoked = true })
	k.Status.SecretHash = ""
	d := plan(k, func(o *Observation) { o.Secret = SecretMissing })
	if d.Material != MaterialKeep {
		t.Fatalf("a revoked key with no material left asked for %d", d.Material)
	}
}

func TestDecideRotation(t *testing.T) {
	rotate := func(v string) keyOpt {
		return func(k *keyward.AccessKey) { k.Annotations = map[string]string{keyward.RotateAnnotation: v} }
	}
	recorded := func(v string) keyOpt {
		return func(k *keyward.AccessKey) { k.Status.Rotation = &keyward.RotationStatus{LastRequest: v} }
	}
	// The value present at first issue is recorded, not acted on.
	d := plan(key("k", "a", -time.Hour, rotate("x")))
	if d.Material != MaterialIssue || lastRequest(d) != "x" {
		t.Fatalf("first issue: material %d, request %q", d.Material, lastRequest(d))
	}
	// A new value rotates.
	d = plan(key("k", "a", -time.Hour, issued(keyward.PhaseActive), rotate("y"), recorded("x")))
	if d.Material != MaterialRotate || lastRequest(d) != "y" {
		t.Fatalf("new value: material %d, request %q", d.Material, lastRequest(d))
	}
	// The same value again (a GitOps re-apply) does nothing.
	d = plan(key("k", "a", -time.Hour, issued(keyward.PhaseActive), rotate("y"), recorded("y")))
	if d.Material != MaterialKeep {
		t.Fatalf("re-applied value: material %d", d.Material)
	}
	// Removing the annotation does nothing either.
	d = plan(key("k", "a", -time.Hour, issued(keyward.PhaseActive), recorded("y")))
	if d.Material != MaterialKeep {
		t.Fatalf("removed annotation: material %d", d.Material)
	}
	// A rotation also heals a lost Secret: one new key, not two.
	d = plan(key("k", "a", -time.Hour, issued(keyward.PhaseActive), rotate("z"), recorded("y")),
		func(o *Observation) { o.Secret = SecretMissing })
	if d.Material != MaterialRotate {
		t.Fatalf("rotation with a lost Secret: material %d", d.Material)
	}
}

func TestDecideWakesAtExpiryAndGraceEnd(t *testing.T) {
	k := key("k", "a", -time.Hour, issued(keyward.PhaseActive), expires(time.Hour))
	k.Status.PreviousKey = &keyward.PreviousKey{KeyID: "old", SecretHash: "sha256:old", ValidUntil: *at(10 * time.Minute)}
	d := plan(k)
	if got := d.RequeueAfter; got != 10*time.Minute {
		t.Fatalf("wake in %v, want 10m (grace end)", got)
	}
	k.Status.PreviousKey = nil
	if got := plan(k).RequeueAfter; got != time.Hour {
		t.Fatalf("wake in %v, want 1h (expiry)", got)
	}
}

// ---------------------------------------------------------------- expiry

func TestEffectiveExpiry(t *testing.T) {
	cases := []struct {
		name             string
		requested, limit *metav1.Time
		want             *metav1.Time
	}{
		{"never", nil, nil, nil},
		{"requested only", at(time.Hour), nil, at(time.Hour)},
		{"never under a lifetime gets the maximum", nil, at(24 * time.Hour), at(24 * time.Hour)},
		{"earlier request wins", at(time.Hour), at(24 * time.Hour), at(time.Hour)},
		{"lifetime bounds a later request", at(90 * 24 * time.Hour), at(24 * time.Hour), at(24 * time.Hour)},
	}
	for _, c := range cases {
		got := EffectiveExpiry(c.requested, c.limit)
		if (got == nil) != (c.want == nil) || (got != nil && !got.Equal(c.want)) {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}

func TestLifetimeLimitIsFixedAtIssueForNewKeysOnly(t *testing.T) {
	if LifetimeLimit(t0, enabled) != nil {
		t.Fatal("a tenant without maxKeyLifetime bounds keys")
	}
	tenant := enabled
	tenant.MaxKeyLifetime = 24 * time.Hour
	if got := LifetimeLimit(t0, tenant); !got.Equal(at(24 * time.Hour)) {
		t.Fatalf("got %v", got)
	}
	// A key issued before the lifetime was set keeps no bound: Decide
	// recomputes its expiry from the recorded (nil) limit, not the tenant's.
	k := key("k", "a", -time.Hour, issued(keyward.PhaseActive))
	d := plan(k, func(o *Observation) { o.Tenant = tenant })
	if d.Status.ExpiresAt != nil || d.Status.LifetimeLimit != nil {
		t.Fatalf("an earlier key was bounded by a later lifetime: %v", d.Status.ExpiresAt)
	}
	// A new key gets it.
	d = plan(key("n", "a", -time.Hour), func(o *Observation) { o.Tenant = tenant })
	if !d.Status.ExpiresAt.Equal(at(24 * time.Hour)) {
		t.Fatalf("a new key asking for never got %v", d.Status.ExpiresAt)
	}
}

func TestMovingExpiryIntoTheFutureRestoresButNeverBeyondTheLimit(t *testing.T) {
	k := key("k", "a", -time.Hour, issued(keyward.PhaseExpired), expires(-time.Minute))
	k.Status.LifetimeLimit = at(48 * time.Hour)
	k.Spec.ExpiresAt = keyward.NewTimestamp(at(time.Hour).Time)
	d := plan(k)
	if d.Status.Phase != keyward.PhaseActive || d.Material != MaterialKeep || !d.Status.ExpiresAt.Equal(at(time.Hour)) {
		t.Fatalf("got %s material %d expiry %v", d.Status.Phase, d.Material, d.Status.ExpiresAt)
	}
	k.Spec.ExpiresAt = keyward.NewTimestamp(at(100 * time.Hour).Time)
	if d := plan(k); !d.Status.ExpiresAt.Equal(at(48 * time.Hour)) {
		t.Fatalf("expiry beyond the lifetime limit: %v", d.Status.ExpiresAt)
	}
}

func TestIsExpiredAtTheInstant(t *testing.T) {
	if IsExpired(nil, t0) || IsExpired(at(time.Nanosecond), t0) || !IsExpired(at(0), t0) || !IsExpired(at(-time.Second), t0) {
		t.Fatal("now ≥ expiresAt is expired, and only that")
	}
}

func TestNextWake(t *testing.T) {
	max := 10 * time.Minute
	cases := []struct {
		name    string
		moments []*metav1.Time
		want    time.Duration
	}{
		{"nothing ahead: the cap", nil, max},
		{"past moments are ignored", []*metav1.Time{at(-time.Hour), nil}, max},
		{"earliest ahead", []*metav1.Time{at(time.Minute), at(30 * time.Second), at(time.Hour)}, 30 * time.Second},
		{"capped", []*metav1.Time{at(time.Hour)}, max},
		{"clamped from below", []*metav1.Time{at(time.Millisecond)}, MinRequeue},
	}
	for _, c := range cases {
		if got := NextWake(t0, max, c.moments...); got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}

// ---------------------------------------------------------------- rotation

func TestPreviousKeyAfter(t *testing.T) {
	k := key("k", "a", -time.Hour, issued(keyward.PhaseActive))
	if PreviousKeyAfter(&k, true, t0) != nil {
		t.Fatal("no grace period keeps no previous key")
	}
	k.Spec.Rotation = &keyward.RotationSpec{GracePeriod: keyward.NewDuration(5 * time.Minute)}
	pk := PreviousKeyAfter(&k, true, t0)
	if pk == nil || pk.KeyID != "id-k" || pk.SecretHash != "sha256:k" || !pk.ValidUntil.Equal(at(5*time.Minute)) {
		t.Fatalf("got %+v", pk)
	}
	k.Status.PreviousKey = pk
	if PreviousKeyAfter(&k, false, t0.Add(4*time.Minute)) == nil {
		t.Fatal("dropped before the grace period ended")
	}
	if PreviousKeyAfter(&k, false, t0.Add(5*time.Minute)) != nil {
		t.Fatal("kept after the grace period ended")
	}
}

func TestTransitionEvents(t *testing.T) {
	cases := []struct {
		from keyward.KeyPhase
		d    decision
		want string
	}{
		{"", decision{phase: keyward.PhaseActive, material: MaterialIssue}, "Issued"},
		{keyward.PhaseActive, decision{phase: keyward.PhaseActive, material: MaterialRotate}, "Rotated"},
		{keyward.PhaseActive, decision{phase: keyward.PhaseActive, material: MaterialReissue}, "SecretRecreated"},
		{keyward.PhaseActive, decision{phase: keyward.PhaseActive}, ""},
		{keyward.PhaseActive, decision{phase: keyward.PhaseInactive}, "Deactivated"},
		{keyward.PhaseInactive, decision{phase: keyward.PhaseActive}, "Reactivated"},
		{keyward.PhaseExpired, decision{phase: keyward.PhaseActive}, "Reactivated"},
		{keyward.PhaseActive, decision{phase: keyward.PhaseExpired}, "Expired"},
		{keyward.PhaseActive, decision{phase: keyward.PhaseRevoked, material: MaterialDestroy}, "Revoked"},
		{"", decision{phase: keyward.PhaseRejected, reason: keyward.ReasonApplicationLimitExceeded}, "LimitExceeded"},
		{"", decision{phase: keyward.PhaseRejected, reason: keyward.ReasonOwnerLimitExceeded}, "LimitExceeded"},
		{keyward.PhaseRejected, decision{phase: keyward.PhaseRejected, reason: keyward.ReasonOwnerLimitExceeded}, ""},
		{"", decision{phase: keyward.PhaseRejected, reason: keyward.ReasonScopeNotAllowed}, "ScopeNotAllowed"},
		{"", decision{phase: keyward.PhasePending, reason: keyward.ReasonSecretInvalid}, ""},
	}
	for _, c := range cases {
		if got := transitionEvent(c.from, c.d); got != c.want {
			t.Errorf("%q → %s (material %d): got %q, want %q", c.from, c.d.phase, c.d.material, got, c.want)
		}
	}
}

// ---------------------------------------------------------------- counts

func TestCountKeys(t *testing.T) {
	deleting := key("gone", "a", 0, issued(keyward.PhaseActive))
	deleting.DeletionTimestamp = at(0)
	keys := []keyward.AccessKey{
		key("never", "a", 0, issued(keyward.PhaseActive)),
		key("week", "a", 0, issued(keyward.PhaseActive), expires(7*24*time.Hour)),
		key("year", "a", 0, issued(keyward.PhaseActive), expires(365*24*time.Hour)),
		key("lapsed", "a", 0, issued(keyward.PhaseActive), expires(-time.Second)), // controller not caught up yet
		key("expired", "a", 0, issued(keyward.PhaseExpired), expires(-time.Hour)),
		key("off", "a", 0, issued(keyward.PhaseInactive), expires(time.Hour)),
		key("revoked", "a", 0, issued(keyward.PhaseRevoked)),
		key("rejected", "a", 0, func(k *keyward.AccessKey) { k.Status.Phase = keyward.PhaseRejected }),
		key("new", "a", 0),
		deleting, // counts by its recorded phase until it is gone
	}
	got := CountKeys(keys, t0, 720*time.Hour)
	want := keyward.KeyCounts{Total: 10, Pending: 1, Active: 4, Inactive: 1, Expired: 2, Revoked: 1, Rejected: 1, ExpiringSoon: 1}
	if got != want {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
}

func TestNextCountChange(t *testing.T) {
	keys := []keyward.AccessKey{
		key("far", "a", 0, issued(keyward.PhaseActive), expires(800*time.Hour)),
		key("soon", "a", 0, issued(keyward.PhaseActive), expires(3*time.Hour)),
		key("inactive", "a", 0, issued(keyward.PhaseInactive), expires(time.Minute)),
	}
	// "far" enters the 720h window in 80h; "soon" expires in 3h.
	if got := NextCountChange(keys, t0, 720*time.Hour); !got.Equal(at(3 * time.Hour)) {
		t.Fatalf("got %v", got)
	}
	if got := NextCountChange(keys[:1], t0, 720*time.Hour); !got.Equal(at(80 * time.Hour)) {
		t.Fatalf("got %v", got)
	}
	if NextCountChange(nil, t0, time.Hour) != nil {
		t.Fatal("no keys, no change")
	}
}

// ---------------------------------------------------------------- tenant and scopes

func TestTenantFrom(t *testing.T) {
	def := TenantFrom(nil, false)
	if def.Enabled || def.MaxKeysPerOwner != 5 || def.ExpiryWarning != 720*time.Hour || def.MaxKeyLifetime != 0 {
		t.Fatalf("defaults: %+v", def)
	}
	if !TenantFrom(nil, true).Enabled {
		t.Fatal("the manager flag does not switch tenants without settings on")
	}
	ts := &keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
	if !TenantFrom(ts, true).Enabled {
		t.Fatal("an unset switch does not follow the manager flag")
	}
	ts.Spec = keyward.TenantSettingsSpec{APIKeysEnabled: ptr.To(false), MaxKeyLifetime: keyward.NewDuration(time.Hour),
		MaxKeysPerOwner: 7, ExpiryWarning: keyward.NewDuration(time.Minute)}
	got := TenantFrom(ts, true)
	if got.Enabled || got.MaxKeyLifetime != time.Hour || got.MaxKeysPerOwner != 7 || got.ExpiryWarning != time.Minute {
		t.Fatalf("got %+v", got)
	}
	other := ts.DeepCopy()
	other.Name = "other"
	if TenantFrom(other, true) != TenantFrom(nil, true) {
		t.Fatal("a TenantSettings not named default was honoured")
	}
}

func TestCheckScopes(t *testing.T) {
	a := app("a", 2, keyward.Scope{Name: "devices", Access: keyward.ReadWrite}, keyward.Scope{Name: "reports", Access: keyward.ReadOnly})
	ok := []keyward.Scope{{Name: "devices", Access: keyward.ReadOnly}, {Name: "devices2"}}
	k := key("k", "a", 0, func(k *keyward.AccessKey) { k.Spec.Scopes = ok[:1] })
	if err := CheckScopes(&k, a); err != nil {
		t.Fatal(err)
	}
	k.Spec.Scopes = []keyward.Scope{{Name: "reports", Access: keyward.ReadWrite}}
	if err := CheckScopes(&k, a); err == nil || err.Error() != `scope "reports" asks for ReadWrite but the application allows only ReadOnly` {
		t.Fatalf("got %v", err)
	}
	k.Spec.Scopes = ok[1:]
	if err := CheckScopes(&k, a); err == nil || err.Error() != `scope "devices2" is not among the application's scopes` {
		t.Fatalf("got %v", err)
	}
	k.Spec.Scopes = nil
	if got := EffectiveScopes(&k, a); len(got) != 2 {
		t.Fatalf("an unscoped key gets the application's scopes, got %v", got)
	}
}

// DecideSlot must answer exactly what the full allocation answers for the
// key asking, over many generated namespaces: issued, waiting, refused,
// revoked and deleted keys, several Applications and owners, shared
// creation seconds, tight limits.
func TestDecideSlotAgreesWithAllocateSlots(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for round := 0; round < 500; round++ {
		apps := map[string]*keyward.Application{}
		for _, a := range []string{"a", "b", "c"} {
			apps[a] = app(a, int32(1+rng.IntN(4)))
		}
		tenant := enabled
		tenant.MaxKeysPerOwner = int32(1 + rng.IntN(5))
		tenant.MaxKeys = int32(2 + rng.IntN(12))
		var keys []*keyward.AccessKey
		for i := 0; i < 1+rng.IntN(25); i++ {
			k := key(fmt.Sprintf("k%02d", i), []string{"a", "b", "c", "gone"}[rng.IntN(4)],
				-time.Duration(rng.IntN(6))*time.Second, owner([]string{"alice", "bob", ""}[rng.IntN(3)]))
			switch rng.IntN(8) {
			case 0, 1:
				issued(keyward.PhaseActive)(&k)
			case 2:
				k.Spec.Revoked = true
			case 3:
				k.DeletionTimestamp = at(0)
				if rng.IntN(2) == 0 {
					issued(keyward.PhaseActive)(&k) // being deleted, it keeps its slot
				}
			case 4:
				k.Status.Phase = keyward.PhaseRejected
				k.Status.Conditions = []metav1.Condition{{Type: keyward.ConditionReady, Status: metav1.ConditionFalse,
					Reason: keyward.ReasonSecretNameConflict}}
			}
			keys = append(keys, &k)
		}
		held := map[string]bool{}
		for _, k := range keys {
			held[k.Name] = rng.IntN(10) == 0
		}
		for _, self := range keys {
			s := Slots{Keys: keys, Apps: apps, Tenant: tenant, Self: self.Name,
				Holds: func(k *keyward.AccessKey) bool { return held[k.Name] }}
			want, wantOK := AllocateSlots(s)[self.Name]
			got, ok := DecideSlot(s)
			if got != want || ok != wantOK {
				t.Fatalf("round %d, key %s: DecideSlot = %+v, %v; AllocateSlots = %+v, %v", round, self.Name, got, ok, want, wantOK)
			}
		}
		if _, ok := DecideSlot(Slots{Keys: keys, Apps: apps, Tenant: tenant, Self: "not-there"}); ok {
			t.Fatalf("round %d: a decision for a key that is not there", round)
		}
	}
}

// TestValidScopeNameAgreesWithTheCRD: the controller's and verifier's test
// of a scope name is the CRD's pattern, byte for byte.
func TestValidScopeNameAgreesWithTheCRD(t *testing.T) {
	crd, err := os.ReadFile("../../config/crd/bases/keyward.dev_applications.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s+pattern: (\^\[!#.*)$`).FindSubmatch(crd)
	if m == nil {
		t.Fatal("the Application CRD has no scope-name pattern")
	}
	pattern := regexp.MustCompile(string(m[1]))
	names := []string{"", "orders", "orders:ReadWrite x", "a,b", "a:b", "a b", `a"b`, `a\b`, "é", "reports/2026", "x.y-z_~!#$%&'()*+;<=>?@[]^`{|}"}
	for c := 0; c < 256; c++ {
		names = append(names, string([]byte{byte(c)}), "a"+string([]byte{byte(c)})+"b")
	}
	for _, n := range names {
		if got, want := ValidScopeName(n), pattern.MatchString(n); got != want {
			t.Errorf("ValidScopeName(%q) = %v, the CRD's pattern says %v", n, got, want)
		}
	}
	if ValidScopeName("orders:ReadWrite x") || !ValidScopeName("orders") {
		t.Fatal("the examples")
	}
}

func TestVerifiableUntil(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time { t := metav1.NewTime(now.Add(d)); return &t }
	spec := func(d time.Duration) *keyward.Timestamp {
		ts := keyward.Timestamp(now.Add(d).Format(time.RFC3339))
		return &ts
	}
	bad := keyward.Timestamp("not a time")
	cases := []struct {
		name            string
		asked           *keyward.Timestamp
		limit, recorded *metav1.Time
		want            *metav1.Time
	}{
		{name: "never", want: nil},
		{name: "recorded only", recorded: at(time.Hour), want: at(time.Hour)},
		{name: "asked earlier than recorded", asked: spec(time.Minute), recorded: at(time.Hour), want: at(time.Minute)},
		{name: "asked later than recorded", asked: spec(2 * time.Hour), recorded: at(time.Hour), want: at(time.Hour)},
		{name: "asked, not recorded yet", asked: spec(time.Hour), want: at(time.Hour)},
		{name: "lifetime limit caps what is asked", asked: spec(2 * time.Hour), limit: at(time.Hour), recorded: at(3 * time.Hour), want: at(time.Hour)},
		{name: "unreadable: expired long ago", asked: &bad, recorded: at(time.Hour), want: &metav1.Time{}},
	}
	for _, c := range cases {
		k := &keyward.AccessKey{Spec: keyward.AccessKeySpec{ExpiresAt: c.asked},
			Status: keyward.AccessKeyStatus{LifetimeLimit: c.limit, ExpiresAt: c.recorded}}
		got := VerifiableUntil(k)
		if (got == nil) != (c.want == nil) || (got != nil && !got.Equal(c.want)) {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}

func TestConfirmSecret(t *testing.T) {
	issued := &keyward.AccessKey{Status: keyward.AccessKeyStatus{IssuedAt: &metav1.Time{}, KeyID: "id"}}
	rotating := issued.DeepCopy()
	rotating.Annotations = map[string]string{keyward.RotateAnnotation: "now"}
	revoked := issued.DeepCopy()
	revoked.Spec.Revoked = true
	cases := []struct {
		name   string
		key    *keyward.AccessKey
		cached SecretState
		want   bool
	}{
		{"never issued", &keyward.AccessKey{}, SecretMissing, false},
		{"issued, intact", issued, SecretIntact, false},
		{"issued, missing", issued, SecretMissing, true},
		{"issued, tampered", issued, SecretTampered, true},
		{"issued, foreign", issued, SecretForeign, true},
		{"rotation asked", rotating, SecretIntact, true},
		{"revoked", revoked, SecretMissing, false},
	}
	for _, c := range cases {
		if got := ConfirmSecret(c.key, c.cached); got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}
