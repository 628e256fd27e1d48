package policy

import (
	"strings"
	"testing"
	"time"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

func importing(id, hash string) keyOpt {
	return func(k *keyward.AccessKey) {
		k.Annotations = map[string]string{keyward.ImportKeyIDAnnotation: id, keyward.ImportSecretHashAnnotation: hash}
		if id == "" {
			delete(k.Annotations, keyward.ImportKeyIDAnnotation)
		}
		if hash == "" {
			delete(k.Annotations, keyward.ImportSecretHashAnnotation)
		}
	}
}

func TestPlanImport(t *testing.T) {
	cases := []struct {
		name     string
		k        keyward.AccessKey
		secret   SecretState
		heldBy   string
		slot     SlotOutcome
		material MaterialAction
		phase    keyward.KeyPhase
		reason   string
		says     string // in the Ready message
		needSlot bool
	}{
		{"the Secret holds the named key: adopted", key("k", "a", 0, importing("kid", "sha256:h")), SecretImportable, "", SlotGranted,
			MaterialImport, keyward.PhaseActive, keyward.ReasonIssued, "", true},
		{"the Secret is not restored yet: waits, never issued anew", key("k", "a", 0, importing("kid", "sha256:h")), SecretMissing, "", SlotGranted,
			MaterialKeep, keyward.PhasePending, keyward.ReasonImportPending, "waiting for Secret", false},
		{"a look-alike with other material: never adopted", key("k", "a", 0, importing("kid", "sha256:h")), SecretForeign, "", SlotGranted,
			MaterialKeep, keyward.PhasePending, keyward.ReasonImportPending, "does not hold the key", false},
		{"another key holds the ID: waits", key("k", "a", 0, importing("kid", "sha256:h")), SecretImportable, "old/k", SlotGranted,
			MaterialKeep, keyward.PhasePending, keyward.ReasonImportPending, "held by AccessKey old/k", false},
		{"only the key ID named: waits", key("k", "a", 0, importing("kid", "")), SecretForeign, "", SlotGranted,
			MaterialKeep, keyward.PhasePending, keyward.ReasonImportPending, "needs both", false},
		{"only the hash named: waits", key("k", "a", 0, importing("", "sha256:h")), SecretMissing, "", SlotGranted,
			MaterialKeep, keyward.PhasePending, keyward.ReasonImportPending, "needs both", false},
		{"no slot free: Rejected like any new key", key("k", "a", 0, importing("kid", "sha256:h")), SecretImportable, "", SlotDenied,
			MaterialKeep, keyward.PhaseRejected, keyward.ReasonApplicationLimitExceeded, "", true},
		{"an issued key ignores the annotations", key("k", "a", 0, issued(keyward.PhaseActive), importing("kid", "sha256:h")), SecretIntact, "", SlotHeld,
			MaterialKeep, keyward.PhaseActive, keyward.ReasonIssued, "", false},
		{"without import a look-alike is a name conflict", key("k", "a", 0), SecretForeign, "", SlotGranted,
			MaterialKeep, keyward.PhasePending, keyward.ReasonSecretNameConflict, "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := Observation{Key: &c.k, App: app("a", 2), Tenant: enabled, Secret: c.secret, ImportHeldBy: c.heldBy, Now: t0, MaxRequeue: time.Hour}
			if got := NeedsSlot(o); got != c.needSlot {
				t.Fatalf("NeedsSlot = %v", got)
			}
			o.Slot = SlotDecision{Outcome: c.slot, Reason: keyward.ReasonApplicationLimitExceeded, Message: "full"}
			p := PlanKey(o)
			if p.Material != c.material || p.Status.Phase != c.phase || reasonOf(p) != c.reason {
				t.Fatalf("got material %d %s/%s (%s)", p.Material, p.Status.Phase, reasonOf(p), p.Ready().Message)
			}
			if !strings.Contains(p.Ready().Message, c.says) {
				t.Fatalf("message %q does not say %q", p.Ready().Message, c.says)
			}
			if c.reason == keyward.ReasonImportPending && p.RequeueAfter != SecretRetry {
				t.Fatalf("a waiting import looks again after %s, want %s", p.RequeueAfter, SecretRetry)
			}
			if c.material != MaterialImport {
				return
			}
			st := p.Status
			if st.KeyID != "kid" || st.ShortKeyID != "kid" || st.SecretHash != "sha256:h" || st.IssuedAt == nil || st.SecretName != "k" {
				t.Fatalf("the import is not recorded as named: %+v", st)
			}
			if p.Event == nil || p.Event.Reason != keyward.EventImported || p.Event.Type != "Normal" {
				t.Fatalf("event %+v", p.Event)
			}
		})
	}
}

func TestImportStartsALifetimeLikeAnIssue(t *testing.T) {
	tenant := enabled
	tenant.MaxKeyLifetime = 24 * time.Hour
	k := key("k", "a", 0, importing("kid", "sha256:h"))
	p := PlanKey(Observation{Key: &k, App: app("a", 2), Tenant: tenant, Secret: SecretImportable, Slot: SlotDecision{Outcome: SlotGranted}, Now: t0, MaxRequeue: time.Hour})
	if p.Material != MaterialImport || !p.Status.LifetimeLimit.Equal(at(24*time.Hour)) || !p.Status.ExpiresAt.Equal(at(24*time.Hour)) {
		t.Fatalf("material %d lifetimeLimit %v expiresAt %v", p.Material, p.Status.LifetimeLimit, p.Status.ExpiresAt)
	}
}

func TestImportedEventNamesTheImporter(t *testing.T) {
	k := key("k", "a", 0, importing("kid", "sha256:h"))
	k.Annotations[keyward.ImportedByAnnotation] = "admin"
	p := plan(k, func(o *Observation) { o.Secret = SecretImportable })
	if p.Event == nil || p.Event.Actor != "admin" || !strings.HasSuffix(p.EventNote(), "; by admin") {
		t.Fatalf("event %+v note %q", p.Event, p.EventNote())
	}
}
