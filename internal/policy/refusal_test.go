package policy

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// A refusal is recorded in status.secretRefusal for the generation it was
// made for, and read from there.
func TestRefusalIsRecordedExplicitly(t *testing.T) {
	k := key("k", "a", -time.Hour, func(k *keyward.AccessKey) { k.Generation = 4 })
	o := Observation{Key: &k, App: app("a", 2), Tenant: enabled, Slot: SlotDecision{Outcome: SlotGranted}, Now: t0, MaxRequeue: time.Hour}
	p := FoldRefusal(o, Refusal{Reason: keyward.ReasonSecretInvalid, Fields: []string{"spec.secretTemplate.labels"}})
	want := &keyward.SecretRefusal{Reason: keyward.ReasonSecretInvalid, Fields: []string{"spec.secretTemplate.labels"}, Generation: 4}
	if !equality.Semantic.DeepEqual(p.Status.SecretRefusal, want) {
		t.Fatalf("status.secretRefusal = %+v, want %+v", p.Status.SecretRefusal, want)
	}
	k.Status = p.Status
	// The field decides, not the condition: a Ready reason alone no longer
	// says refused once the field is gone from a newer status.
	if r, ok := RefusalOf(&k); !ok || r.Reason != keyward.ReasonSecretInvalid {
		t.Fatalf("RefusalOf = %+v, %v", r, ok)
	}
	k.Generation = 5
	if Refused(&k) {
		t.Fatal("a refusal outlived the spec it was made for")
	}
	// Issued (after a spec change) the field goes.
	o = Observation{Key: &k, App: app("a", 2), Tenant: enabled, Slot: SlotDecision{Outcome: SlotGranted}, Now: t0, MaxRequeue: time.Hour}
	if p := PlanKey(o); p.Material != MaterialIssue || p.Status.SecretRefusal != nil {
		t.Fatalf("material %v, secretRefusal %+v", p.Material, p.Status.SecretRefusal)
	}
}

// A key written before status.secretRefusal existed (Pending, its Ready
// reason a refusal) is read as refused once, keeps its message, and the
// status planned for it carries the field from then on.
func TestLegacyRefusalIsUpgradedOnce(t *testing.T) {
	for _, reason := range []string{keyward.ReasonSecretInvalid, keyward.ReasonSecretNameConflict} {
		k := key("k", "a", -time.Hour, func(k *keyward.AccessKey) {
			k.Generation = 2
			k.Status.ObservedGeneration = 2
			k.Status.Phase = keyward.PhasePending
			k.Status.Conditions = []metav1.Condition{{Type: keyward.ConditionReady, Status: metav1.ConditionFalse, Reason: reason,
				Message: "the API server refused the key's Secret; fix [spec.secretTemplate.labels spec.secretTemplate.annotations] (labels must be valid Kubernetes labels, annotations at most 256 KiB together)"}}
		})
		if !Refused(&k) {
			t.Fatalf("%s: a legacy refusal is not read", reason)
		}
		o := Observation{Key: &k, App: app("a", 2), Tenant: enabled, Now: t0, MaxRequeue: time.Hour}
		if reason == keyward.ReasonSecretNameConflict {
			o.Secret = SecretForeign // still taken
		}
		p := PlanKey(o)
		r := p.Status.SecretRefusal
		if p.Material != MaterialKeep || r == nil || r.Reason != reason || r.Generation != 2 {
			t.Fatalf("%s: material %v, secretRefusal %+v", reason, p.Material, r)
		}
		if reason == keyward.ReasonSecretInvalid {
			if p.Ready().Message != k.Status.Conditions[0].Message || len(r.Fields) != 2 {
				t.Fatalf("the fields to fix were lost: %q, %v", p.Ready().Message, r.Fields)
			}
		}
		k.Status = p.Status
		if again := PlanKey(o); !equality.Semantic.DeepEqual(again.Status, p.Status) {
			t.Fatalf("%s: the upgraded status is not a fixed point", reason)
		}
	}
	// Only a Pending key of the current generation was refused.
	k := key("k", "a", -time.Hour, func(k *keyward.AccessKey) {
		k.Generation, k.Status.ObservedGeneration = 3, 2
		k.Status.Phase = keyward.PhasePending
		k.Status.Conditions = []metav1.Condition{{Type: keyward.ConditionReady, Reason: keyward.ReasonSecretInvalid}}
	})
	if Refused(&k) {
		t.Fatal("a legacy refusal of an older generation stands")
	}
}

// Every object that shows why a tenant's keys are stopped gives the same
// reason, worded for itself.
func TestTenantReasonsAreShared(t *testing.T) {
	off := Tenant{MaxKeys: 10}
	invalid := Tenant{Enabled: true, Invalid: "spec.maxKeyLifetime is unreadable"}
	a := app("a", 3)
	for _, tc := range []struct {
		t      Tenant
		reason string
	}{{off, keyward.ReasonAPIKeysDisabled}, {invalid, keyward.ReasonInvalidTenantSettings}} {
		k := key("k", "a", 0)
		p := PlanKey(Observation{Key: &k, App: a, Tenant: tc.t, Now: t0})
		ar, _ := ApplicationCondition(tc.t, a, keyward.KeyCounts{})
		tr, _ := TenantSettingsCondition(tc.t)
		if reasonOf(p) != tc.reason || ar != tc.reason || tr != tc.reason {
			t.Fatalf("key %s, application %s, tenant %s; want %s", reasonOf(p), ar, tr, tc.reason)
		}
		if NeedsSlot(Observation{Key: &k, App: a, Tenant: tc.t}) || Competes(&k, a, tc.t, true) {
			t.Fatal("a key of a stopped tenant competes for a slot")
		}
	}
	if r, m := ApplicationCondition(enabled, a, keyward.KeyCounts{Total: 5, Pending: 1, Rejected: 2}); r != keyward.ReasonReconciled || m != "2 of at most 3 keys hold a slot" {
		t.Fatalf("%s: %s", r, m)
	}
	if r, _ := TenantSettingsCondition(enabled); r != keyward.ReasonEnabled {
		t.Fatal(r)
	}
}
