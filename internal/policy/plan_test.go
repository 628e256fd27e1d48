package policy

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// Rows that used to be decided in the controller: refused Secrets, foreign
// Secrets, the status written with the material, the Event, the wake-up.

func TestPlanStatusOfAFirstIssue(t *testing.T) {
	tenant := enabled
	tenant.MaxKeyLifetime = 24 * time.Hour
	k := key("k", "a", -time.Hour, func(k *keyward.AccessKey) { k.Generation = 3 })
	p := plan(k, func(o *Observation) { o.Tenant = tenant })
	if p.Material != MaterialIssue {
		t.Fatalf("material %d", p.Material)
	}
	p.RecordMaterial("abcdefghijklmnop", "sha256:x")
	st := p.Status
	if st.KeyID != "abcdefghijklmnop" || st.ShortKeyID != "abcdefgh" || st.SecretHash != "sha256:x" || st.SecretName != "k" {
		t.Fatalf("material record %+v", st)
	}
	if !st.IssuedAt.Equal(&metav1.Time{Time: t0}) || !st.LifetimeLimit.Equal(at(24*time.Hour)) || !st.ExpiresAt.Equal(at(24*time.Hour)) {
		t.Fatalf("times %v %v %v", st.IssuedAt, st.LifetimeLimit, st.ExpiresAt)
	}
	if st.ObservedGeneration != 3 || st.Phase != keyward.PhaseActive || p.Ready().Status != metav1.ConditionTrue || p.Ready().ObservedGeneration != 3 {
		t.Fatalf("phase/generation/ready: %+v", st)
	}
	if p.Event == nil || p.Event.Reason != keyward.EventIssued || p.Event.Type != corev1.EventTypeNormal {
		t.Fatalf("event %+v", p.Event)
	}
	if !strings.Contains(p.EventNote(), "abcdefghijklmnop") {
		t.Fatalf("the note names the key ID: %q", p.EventNote())
	}
	if p.RequeueAfter != 24*time.Hour {
		t.Fatalf("wakes in %v, want at expiry", p.RequeueAfter)
	}
}

func TestPlanRotationKeepsThePreviousKeyForTheGracePeriod(t *testing.T) {
	k := key("k", "a", -time.Hour, issued(keyward.PhaseActive), func(k *keyward.AccessKey) {
		k.Annotations = map[string]string{keyward.RotateAnnotation: "2"}
		k.Status.Rotation = &keyward.RotationStatus{LastRequest: "1"}
		k.Spec.Rotation = &keyward.RotationSpec{GracePeriod: keyward.NewDuration(time.Minute)}
	})
	p := plan(k)
	if p.Material != MaterialRotate || p.Status.LastRotatedAt == nil || lastRequest(p) != "2" {
		t.Fatalf("material %d, rotated %v, request %q", p.Material, p.Status.LastRotatedAt, lastRequest(p))
	}
	pk := p.Status.PreviousKey
	if pk == nil || pk.KeyID != "id-k" || !pk.ValidUntil.Equal(at(time.Minute)) {
		t.Fatalf("previous key %+v", pk)
	}
	if p.Event.Reason != keyward.EventRotated {
		t.Fatalf("event %+v", p.Event)
	}
}

func TestPlanRefusedSecret(t *testing.T) {
	cases := []struct {
		name   string
		k      keyward.AccessKey
		r      Refusal
		reason string
		field  string
	}{
		{"first issue, name taken", key("k", "a", -time.Hour), Refusal{Reason: keyward.ReasonSecretNameConflict}, keyward.ReasonSecretNameConflict, `"k"`},
		{"first issue, template refused", key("k", "a", -time.Hour), Refusal{Reason: keyward.ReasonSecretInvalid, Fields: []string{"spec.secretTemplate.labels"}}, keyward.ReasonSecretInvalid, "spec.secretTemplate.labels"},
		{"re-issue refused", key("k", "a", -time.Hour, issued(keyward.PhaseActive)), Refusal{Reason: keyward.ReasonSecretNameConflict}, keyward.ReasonSecretNameConflict, "spec.secretTemplate.name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := Observation{Key: &c.k, App: app("a", 2), Tenant: enabled, Slot: SlotDecision{Outcome: SlotGranted}, Now: t0, MaxRequeue: time.Hour}
			p := FoldRefusal(o, c.r)
			if p.Material != MaterialKeep || p.Status.Phase != keyward.PhasePending || reasonOf(p) != c.reason {
				t.Fatalf("got %d %s/%s", p.Material, p.Status.Phase, reasonOf(p))
			}
			if !strings.Contains(p.Ready().Message, c.field) {
				t.Fatalf("message %q does not say what to fix (%s)", p.Ready().Message, c.field)
			}
			if !p.Status.IssuedAt.Equal(c.k.Status.IssuedAt) || p.Status.KeyID != c.k.Status.KeyID {
				t.Fatal("a refused write recorded material")
			}
			want := SecretRetry // a name may be freed by a Secret the manager does not watch
			if c.reason == keyward.ReasonSecretInvalid {
				want = time.Hour // only a spec change cures it: no retry before the cap
			}
			if p.RequeueAfter != want {
				t.Fatalf("retries in %v, want %v", p.RequeueAfter, want)
			}
			p.Status.Conditions[0].ObservedGeneration = c.k.Generation
			refusedKey := c.k.DeepCopy()
			refusedKey.Status = p.Status
			if !IsIssued(&c.k) && !Refused(refusedKey) {
				t.Fatal("the written status is not recognised as refused")
			}
		})
	}
	// A refused rotation stays unanswered.
	k := key("k", "a", -time.Hour, issued(keyward.PhaseActive), func(k *keyward.AccessKey) {
		k.Annotations = map[string]string{keyward.RotateAnnotation: "2"}
		k.Status.Rotation = &keyward.RotationStatus{LastRequest: "1"}
	})
	o := Observation{Key: &k, App: app("a", 2), Tenant: enabled, Secret: SecretIntact, Now: t0, MaxRequeue: time.Hour}
	if p := FoldRefusal(o, Refusal{Reason: keyward.ReasonSecretInvalid}); lastRequest(p) != "1" || p.Status.LastRotatedAt != nil {
		t.Fatalf("a refused rotation was recorded: %q", lastRequest(p))
	}
}

func TestPlanForeignSecretIsAConflictNotAdopted(t *testing.T) {
	foreign := func(o *Observation) { o.Secret = SecretForeign }
	for _, k := range []keyward.AccessKey{key("new", "a", -time.Hour), key("old", "a", -time.Hour, issued(keyward.PhaseActive))} {
		p := plan(k, foreign)
		if p.Material != MaterialKeep || reasonOf(p) != keyward.ReasonSecretNameConflict {
			t.Fatalf("%s: material %d reason %s", k.Name, p.Material, reasonOf(p))
		}
		o := Observation{Key: &k, App: app("a", 2), Tenant: enabled, Secret: SecretForeign}
		if NeedsSlot(o) {
			t.Fatalf("%s: a key blocked by a foreign Secret asks for a slot", k.Name)
		}
	}
	// Revoking never destroys a foreign Secret's material through the plan.
	k := key("k", "a", -time.Hour, func(k *keyward.AccessKey) { k.Spec.Revoked = true })
	if p := plan(k, foreign); p.Material != MaterialKeep {
		t.Fatalf("material %d", p.Material)
	}
}

func TestPlanRevokedDestroysWhateverTheKeyStillHas(t *testing.T) {
	revoked := func(k *keyward.AccessKey) { k.Spec.Revoked = true }
	k := key("k", "a", -time.Hour, issued(keyward.PhaseActive), revoked)
	k.Status.PreviousKey = &keyward.PreviousKey{KeyID: "old", SecretHash: "sha256:old", ValidUntil: *at(time.Hour)}
	p := plan(k)
	if p.Material != MaterialDestroy || p.Status.SecretHash != "" || p.Status.SecretName != "" || p.Status.PreviousKey != nil {
		t.Fatalf("got %d %+v", p.Material, p.Status)
	}
	if p.Status.KeyID != "id-k" {
		t.Fatal("the public key ID is kept for audit")
	}
	// An emptied Secret left behind by a finalizer needs nothing more.
	k.Status.SecretHash, k.Status.PreviousKey = "", nil
	if p := plan(k, func(o *Observation) { o.Secret = SecretMissing }); p.Material != MaterialKeep {
		t.Fatalf("material %d", p.Material)
	}
	if p := plan(k, func(o *Observation) { o.Secret = SecretTampered }); p.Material != MaterialDestroy {
		t.Fatalf("a Secret the key still controls is not destroyed: %d", p.Material)
	}
}

func TestApplicationOf(t *testing.T) {
	a := app("a", 2)
	a.UID = types.UID("new")
	k := key("k", "a", -time.Hour)
	if ApplicationOf(&k, a) != a {
		t.Fatal("a key not tied yet belongs to the application of its name")
	}
	k.OwnerReferences = []metav1.OwnerReference{{APIVersion: "keyward.dev/v1alpha1", Kind: "Application", Name: "a", UID: "new"}}
	if ApplicationOf(&k, a) != a || ApplicationReplaced(&k, a) {
		t.Fatal("a key tied to the application's UID")
	}
	k.OwnerReferences[0].UID = "old"
	if ApplicationOf(&k, a) != nil || !ApplicationReplaced(&k, a) {
		t.Fatal("a key of a deleted application was adopted by one created under the same name")
	}
	p := plan(k, func(o *Observation) { o.App = a })
	if p.Status.Phase != keyward.PhasePending || reasonOf(p) != keyward.ReasonApplicationNotFound || !strings.Contains(p.Ready().Message, "created again") {
		t.Fatalf("got %s/%s: %s", p.Status.Phase, reasonOf(p), p.Ready().Message)
	}
	if NeedsSlot(Observation{Key: &k, App: a, Tenant: enabled}) {
		t.Fatal("a key of a replaced application asks for a slot")
	}
	deleting := a.DeepCopy()
	deleting.DeletionTimestamp = at(0)
	if ApplicationOf(&k, deleting) != nil || ApplicationOf(&k, nil) != nil {
		t.Fatal("a missing or deleted application")
	}
	other := k.DeepCopy()
	other.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "a", UID: "x"}}
	if ApplicationOf(other, a) != a {
		t.Fatal("an owner reference of another kind ties the key")
	}
}

func TestRotationRecord(t *testing.T) {
	short := strings.Repeat("x", MaxRotationRecord)
	if RotationRecord(short) != short {
		t.Fatal("a short value is kept as it is")
	}
	long := strings.Repeat("x", 256*1024)
	rec := RotationRecord(long)
	if !strings.HasPrefix(rec, "sha256:") || len(rec) != len("sha256:")+64 {
		t.Fatalf("a long value is kept as %d characters", len(rec))
	}
	k := key("k", "a", -time.Hour, issued(keyward.PhaseActive), func(k *keyward.AccessKey) {
		k.Annotations = map[string]string{keyward.RotateAnnotation: long}
		k.Status.Rotation = &keyward.RotationStatus{LastRequest: rec}
	})
	if p := plan(k); p.Material != MaterialKeep {
		t.Fatal("a long request already acted on rotates again")
	}
	k.Annotations[keyward.RotateAnnotation] = long + "y"
	if p := plan(k); p.Material != MaterialRotate || lastRequest(p) != RotationRecord(long+"y") {
		t.Fatal("a new long request is not acted on")
	}
}

func TestMessagesAreBounded(t *testing.T) {
	long := strings.Repeat("ü", 2000)
	if got := BoundMessage(long); len(got) > MaxMessage || !strings.HasSuffix(got, "…") {
		t.Fatalf("%d bytes", len(got))
	}
	k := key("k", strings.Repeat("a", 253), -time.Hour, owner(strings.Repeat("o", 512)))
	for _, p := range []Plan{
		plan(k, func(o *Observation) { o.App = nil }),
		FoldRefusal(Observation{Key: &k, App: app(k.Spec.Application, 2), Tenant: enabled, Now: t0}, Refusal{Reason: keyward.ReasonSecretInvalid, Fields: []string{strings.Repeat("f", 5000)}}),
	} {
		if len(p.Ready().Message) > MaxMessage {
			t.Fatalf("a message of %d bytes", len(p.Ready().Message))
		}
	}
}

func TestMinimalStatusKeepsTheMaterialRecord(t *testing.T) {
	k := key("k", "a", -time.Hour)
	p := plan(k)
	p.RecordMaterial("abcdefghijklmnop", "sha256:x")
	st := MinimalStatus(p, &k)
	if st.KeyID != "abcdefghijklmnop" || st.SecretHash != "sha256:x" || st.IssuedAt == nil || st.Phase != keyward.PhaseActive {
		t.Fatalf("%+v", st)
	}
	if len(st.Conditions) != 1 || st.Conditions[0].Reason != keyward.ReasonIssued {
		t.Fatalf("conditions %+v", st.Conditions)
	}
}

func TestFoldMetadataRefusalKeepsTheKeyWorking(t *testing.T) {
	k := key("k", "a", -time.Hour, issued(keyward.PhaseActive))
	before := plan(k)
	p := FoldMetadataRefusal(before, []string{"spec.secretTemplate.annotations"})
	if p.Status.Phase != keyward.PhaseActive || !strings.Contains(p.Ready().Message, "spec.secretTemplate.annotations") {
		t.Fatalf("%s: %s", p.Status.Phase, p.Ready().Message)
	}
	if strings.Contains(before.Ready().Message, "refused") {
		t.Fatal("the fold changed the plan it was given")
	}
}

func TestNeedsSlot(t *testing.T) {
	base := func(k keyward.AccessKey) Observation {
		return Observation{Key: &k, App: app("a", 2), Tenant: enabled}
	}
	if !NeedsSlot(base(key("k", "a", 0))) {
		t.Fatal("a new key needs a slot")
	}
	off := base(key("k", "a", 0))
	off.Tenant.Enabled = false
	for name, o := range map[string]Observation{
		"issued":       base(key("k", "a", 0, issued(keyward.PhaseActive))),
		"revoked":      base(key("k", "a", 0, func(k *keyward.AccessKey) { k.Spec.Revoked = true })),
		"tenant off":   off,
		"no app":       {Key: &keyward.AccessKey{Spec: keyward.AccessKeySpec{Application: "a"}}, Tenant: enabled},
		"refused":      {Key: &keyward.AccessKey{Spec: keyward.AccessKeySpec{Application: "a"}}, App: app("a", 2), Tenant: enabled, Refusal: &Refusal{}},
		"invalid spec": base(key("k", "a", 0, func(k *keyward.AccessKey) { ts := keyward.Timestamp("x"); k.Spec.ExpiresAt = &ts })),
	} {
		if NeedsSlot(o) {
			t.Errorf("%s: asks for a slot", name)
		}
	}
}

func TestAllocateSlotsRefusedKeysHoldNoSlot(t *testing.T) {
	apps := map[string]*keyward.Application{"a": app("a", 1)}
	refused := key("refused", "a", -time.Hour, func(k *keyward.AccessKey) {
		k.Status.Phase = keyward.PhasePending
		k.Status.SecretRefusal = &keyward.SecretRefusal{Reason: keyward.ReasonSecretNameConflict}
	})
	younger := key("younger", "a", -time.Minute)
	keys := []*keyward.AccessKey{&refused, &younger}
	got := AllocateSlots(Slots{Keys: keys, Apps: apps, Tenant: enabled})
	if got["refused"].Outcome != SlotNotCandidate || got["younger"].Outcome != SlotGranted {
		t.Fatalf("got %v", outcomes(got))
	}
	// Asking again is its retry for a taken name: then it competes, oldest first.
	if got := AllocateSlots(Slots{Keys: keys, Apps: apps, Tenant: enabled, Self: "refused"}); got["refused"].Outcome != SlotGranted {
		t.Fatalf("retry: %v", outcomes(got))
	}
	// A Secret refused as invalid is not tried again for the same spec.
	refused.Status.SecretRefusal.Reason = keyward.ReasonSecretInvalid
	if got := AllocateSlots(Slots{Keys: keys, Apps: apps, Tenant: enabled, Self: "refused"}); got["refused"].Outcome != SlotNotCandidate {
		t.Fatalf("invalid, asking: %v", outcomes(got))
	}
	// A spec change (a new generation) makes it compete again.
	refused.Generation = 2
	if got := AllocateSlots(Slots{Keys: keys, Apps: apps, Tenant: enabled}); got["refused"].Outcome != SlotGranted {
		t.Fatalf("after a spec change: %v", outcomes(got))
	}
}

func TestAllocateSlotsCountsGrantsTheCacheDoesNotShow(t *testing.T) {
	apps := map[string]*keyward.Application{"a": app("a", 2)}
	granted := key("granted", "a", -time.Minute)    // granted, issue not in the cache yet
	crashed := key("crashed", "a", -30*time.Second) // its Secret exists, status never written
	older := key("older", "a", -time.Hour)          // waiting, older than both
	keys := []*keyward.AccessKey{&granted, &crashed, &older}
	holds := func(k *keyward.AccessKey) bool { return k.Name != "older" }
	got := AllocateSlots(Slots{Keys: keys, Apps: apps, Tenant: enabled, Holds: holds})
	if got["granted"].Outcome != SlotHeld || got["crashed"].Outcome != SlotHeld || got["older"].Outcome != SlotDenied {
		t.Fatalf("the ledger's grants were not counted: %v", outcomes(got))
	}
}

func TestAllocateSlotsApplicationReplaced(t *testing.T) {
	a := app("a", 5)
	a.UID = "new"
	k := key("k", "a", 0, func(k *keyward.AccessKey) {
		k.OwnerReferences = []metav1.OwnerReference{{APIVersion: "keyward.dev/v1alpha1", Kind: "Application", Name: "a", UID: "old"}}
	})
	got := AllocateSlots(Slots{Keys: []*keyward.AccessKey{&k}, Apps: map[string]*keyward.Application{"a": a}, Tenant: enabled})
	if got["k"].Outcome != SlotNotCandidate {
		t.Fatalf("got %v", outcomes(got))
	}
}

func TestPlanStandingInvalidSecretIsNotTriedAgain(t *testing.T) {
	k := key("k", "a", -time.Hour, func(k *keyward.AccessKey) { k.Generation = 2 })
	o := Observation{Key: &k, App: app("a", 2), Tenant: enabled, Slot: SlotDecision{Outcome: SlotGranted}, Now: t0, MaxRequeue: time.Hour}
	first := FoldRefusal(o, Refusal{Reason: keyward.ReasonSecretInvalid, Fields: []string{"spec.secretTemplate.labels"}})
	k.Status = first.Status

	again := Observation{Key: &k, App: app("a", 2), Tenant: enabled, Now: t0.Add(time.Minute), MaxRequeue: time.Hour}
	if NeedsSlot(again) {
		t.Fatal("a key refused for its current spec asks for a slot again")
	}
	p := PlanKey(again)
	if p.Material != MaterialKeep || reasonOf(p) != keyward.ReasonSecretInvalid || p.Ready().Message != first.Ready().Message {
		t.Fatalf("got %d %s: %s", p.Material, reasonOf(p), p.Ready().Message)
	}
	// A change of the spec tries again.
	k.Generation = 3
	again.Slot = SlotDecision{Outcome: SlotGranted}
	if !NeedsSlot(again) || PlanKey(again).Material != MaterialIssue {
		t.Fatal("a changed spec is not tried again")
	}
}

// Only a re-issue nobody asked for is written before the status that
// records it: nothing else in the API would show it after a crash.
func TestPlanWritesOnlyTheReissueEventBeforeStatus(t *testing.T) {
	rotate := func(k *keyward.AccessKey) {
		k.Annotations = map[string]string{keyward.RotateAnnotation: "2"}
		k.Status.Rotation = &keyward.RotationStatus{LastRequest: "1"}
	}
	cases := []struct {
		name   string
		k      keyward.AccessKey
		secret SecretState
		reason string
		before bool
	}{
		{"first issue", key("k", "a", -time.Hour), SecretMissing, keyward.EventIssued, false},
		{"Secret deleted", key("k", "a", -time.Hour, issued(keyward.PhaseActive)), SecretMissing, keyward.EventSecretRecreated, true},
		{"Secret edited", key("k", "a", -time.Hour, issued(keyward.PhaseActive)), SecretTampered, keyward.EventSecretRecreated, true},
		{"rotation", key("k", "a", -time.Hour, issued(keyward.PhaseActive), rotate), SecretIntact, keyward.EventRotated, false},
		{"revocation", key("k", "a", -time.Hour, issued(keyward.PhaseActive), func(k *keyward.AccessKey) { k.Spec.Revoked = true }), SecretIntact, keyward.EventRevoked, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := plan(c.k, func(o *Observation) { o.Secret = c.secret })
			if p.Event == nil || p.Event.Reason != c.reason {
				t.Fatalf("event %+v, want %s", p.Event, c.reason)
			}
			if p.Event.BeforeStatus != c.before {
				t.Fatalf("%s: before status %v, want %v", c.reason, p.Event.BeforeStatus, c.before)
			}
		})
	}
}

// TestPlanMarksLegacyScopeNames: a key whose own scopes hold a name the CRD
// now refuses is issued and planned as usual, and marked until renamed.
func TestPlanMarksLegacyScopeNames(t *testing.T) {
	app := func(o *Observation) {
		o.App.Spec.Scopes = []keyward.Scope{{Name: "reports", Access: keyward.ReadOnly}, {Name: "a,b", Access: keyward.ReadOnly}}
	}
	k := key("k", "a", -time.Hour, func(k *keyward.AccessKey) {
		k.Spec.Scopes = []keyward.Scope{{Name: "reports", Access: keyward.ReadOnly}, {Name: "a,b", Access: keyward.ReadOnly}}
	})
	p := plan(k, app)
	c := meta.FindStatusCondition(p.Status.Conditions, keyward.ConditionScopeNames)
	if p.Material != MaterialIssue || c == nil || c.Status != metav1.ConditionFalse || c.Reason != keyward.ReasonInvalidScopeName || !strings.Contains(c.Message, `"a,b"`) {
		t.Fatalf("material %d, condition %+v", p.Material, c)
	}
	k.Spec.Scopes = k.Spec.Scopes[:1]
	k.Status.Conditions = p.Status.Conditions
	if c := meta.FindStatusCondition(plan(k, app).Status.Conditions, keyward.ConditionScopeNames); c != nil {
		t.Fatalf("renamed, still marked: %+v", c)
	}
}
