package policy

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

func rotating(k *keyward.AccessKey) {
	k.Annotations = map[string]string{keyward.RotateAnnotation: "2"}
	k.Status.Rotation = &keyward.RotationStatus{LastRequest: "1"}
}

func TestRotationGraceFallsBackToTheTenant(t *testing.T) {
	tenant := enabled
	tenant.RotationGracePeriod = 5 * time.Minute
	cases := []struct {
		name  string
		grace *keyward.Duration // the key's spec.rotation.gracePeriod
		want  time.Duration
	}{
		{"unset: the tenant's", nil, 5 * time.Minute},
		{"0s: none, for a leaked key", keyward.NewDuration(0), 0},
		{"set: the key's", keyward.NewDuration(time.Hour), time.Hour},
		{"unreadable: none (fail closed)", ptrDuration("soon"), 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k := key("k", "a", -time.Hour, issued(keyward.PhaseActive), rotating)
			if c.grace != nil {
				k.Spec.Rotation = &keyward.RotationSpec{GracePeriod: c.grace}
			}
			if got := RotationGrace(&k, tenant); got != c.want {
				t.Fatalf("grace %s, want %s", got, c.want)
			}
			p := plan(k, func(o *Observation) { o.Tenant = tenant })
			pk := p.Status.PreviousKey
			switch {
			case c.want == 0 && pk != nil:
				t.Fatalf("previous key kept: %+v", pk)
			case c.want != 0 && (pk == nil || pk.KeyID != "id-k" || !pk.ValidUntil.Equal(at(c.want))):
				t.Fatalf("previous key %+v, want valid until %s", pk, at(c.want))
			}
		})
	}
}

func ptrDuration(s string) *keyward.Duration { d := keyward.Duration(s); return &d }

func TestTenantRotationGracePeriod(t *testing.T) {
	for value, want := range map[string]time.Duration{
		"": 5 * time.Minute, "0s": 0, "90s": 90 * time.Second, "720h": 720 * time.Hour,
		"876000h": keyward.MaxGracePeriod, "soon": 0,
	} {
		ts := &keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Name: keyward.TenantSettingsName}}
		if value != "" {
			ts.Spec.RotationGracePeriod = ptrDuration(value)
		}
		if got := TenantFrom(ts, true); got.RotationGracePeriod != want || got.Invalid != "" {
			t.Errorf("rotationGracePeriod %q: got %s (invalid %q), want %s", value, got.RotationGracePeriod, got.Invalid, want)
		}
	}
}

func TestRotationRenewsTheLifetimeOnlyWhenAsked(t *testing.T) {
	tenant := enabled
	tenant.MaxKeyLifetime = 90 * 24 * time.Hour
	tenant.RotationGracePeriod = 5 * time.Minute
	oldLimit := at(time.Hour) // the limit fixed at first issue, an hour from now
	cases := []struct {
		name      string
		renew     bool
		requested *time.Duration // spec.expiresAt, from t0
		tenant    Tenant
		wantLimit *metav1.Time
		wantExp   *metav1.Time
		wantPhase keyward.KeyPhase
	}{
		{"kept by default", false, nil, tenant, oldLimit, oldLimit, keyward.PhaseActive},
		{"renewed: the tenant's limit from now", true, nil, tenant, at(tenant.MaxKeyLifetime), at(tenant.MaxKeyLifetime), keyward.PhaseActive},
		{"renewed, spec.expiresAt earlier still wins", true, durationPtr(48 * time.Hour), tenant, at(tenant.MaxKeyLifetime), at(48 * time.Hour), keyward.PhaseActive},
		{"renewed, spec.expiresAt past the limit is cut", true, durationPtr(1000 * 24 * time.Hour), tenant, at(tenant.MaxKeyLifetime), at(tenant.MaxKeyLifetime), keyward.PhaseActive},
		{"renewed under a tenant with no limit now", true, nil, enabled, nil, nil, keyward.PhaseActive},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k := key("k", "a", -time.Hour, issued(keyward.PhaseActive), rotating, func(k *keyward.AccessKey) {
				k.Spec.Rotation = &keyward.RotationSpec{RenewLifetime: c.renew}
				k.Status.LifetimeLimit, k.Status.ExpiresAt = oldLimit, oldLimit
				if c.requested != nil {
					k.Spec.ExpiresAt = keyward.NewTimestamp(t0.Add(*c.requested))
					k.Status.ExpiresAt = EffectiveExpiry(at(*c.requested), oldLimit)
				}
			})
			p := plan(k, func(o *Observation) { o.Tenant = c.tenant })
			if p.Material != MaterialRotate || p.Status.Phase != c.wantPhase {
				t.Fatalf("material %d phase %s", p.Material, p.Status.Phase)
			}
			if !timeEqual(p.Status.LifetimeLimit, c.wantLimit) || !timeEqual(p.Status.ExpiresAt, c.wantExp) {
				t.Fatalf("lifetimeLimit %v expiresAt %v, want %v %v", p.Status.LifetimeLimit, p.Status.ExpiresAt, c.wantLimit, c.wantExp)
			}
			if !p.Status.IssuedAt.Equal(k.Status.IssuedAt) {
				t.Fatal("issuedAt moved: it records the first issue")
			}
			// The outgoing material never verifies past its own lifetime.
			if pk := p.Status.PreviousKey; c.tenant.RotationGracePeriod > 0 && (pk == nil || pk.ValidUntil.After(oldLimit.Time)) {
				t.Fatalf("previous key %+v outlives its lifetime %s", pk, oldLimit)
			}
		})
	}
}

func TestRenewalBringsBackAKeyExpiredByItsLifetime(t *testing.T) {
	tenant := enabled
	tenant.MaxKeyLifetime = 24 * time.Hour
	k := key("k", "a", -48*time.Hour, issued(keyward.PhaseExpired), rotating, func(k *keyward.AccessKey) {
		k.Status.LifetimeLimit, k.Status.ExpiresAt = at(-time.Hour), at(-time.Hour)
	})
	if p := plan(k, func(o *Observation) { o.Tenant = tenant }); p.Status.Phase != keyward.PhaseExpired {
		t.Fatalf("without renewal a rotation keeps the expired lifetime, got %s", p.Status.Phase)
	}
	k.Spec.Rotation = &keyward.RotationSpec{RenewLifetime: true}
	p := plan(k, func(o *Observation) { o.Tenant = tenant })
	if p.Status.Phase != keyward.PhaseActive || !p.Status.ExpiresAt.Equal(at(24*time.Hour)) {
		t.Fatalf("renewed: phase %s, expiresAt %v", p.Status.Phase, p.Status.ExpiresAt)
	}
	if p.Status.PreviousKey != nil {
		t.Fatalf("the expired material must not come back as a previous key: %+v", p.Status.PreviousKey)
	}
}

func TestRenewalRefusedKeepsTheLifetime(t *testing.T) {
	tenant := enabled
	tenant.MaxKeyLifetime = 24 * time.Hour
	k := key("k", "a", -time.Hour, issued(keyward.PhaseActive), rotating, func(k *keyward.AccessKey) {
		k.Spec.Rotation = &keyward.RotationSpec{RenewLifetime: true}
		k.Status.LifetimeLimit, k.Status.ExpiresAt = at(time.Hour), at(time.Hour)
	})
	o := Observation{Key: &k, App: app("a", 2), Tenant: tenant, Slot: SlotDecision{Outcome: SlotHeld}, Secret: SecretIntact, Now: t0, MaxRequeue: time.Hour}
	p := FoldRefusal(o, Refusal{Reason: keyward.ReasonSecretInvalid})
	if p.Material != MaterialKeep || !p.Status.LifetimeLimit.Equal(at(time.Hour)) {
		t.Fatalf("a refused rotation renewed the lifetime: %d %v", p.Material, p.Status.LifetimeLimit)
	}
}

func durationPtr(d time.Duration) *time.Duration { return &d }

func timeEqual(a, b *metav1.Time) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Equal(b)
}
