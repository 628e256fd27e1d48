package policy

import (
	"strings"
	"testing"
	"time"

	"k8s.io/utils/ptr"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// Decisions that keep one tenant's hostile input to itself (issue 14).

func TestPreviousKeyNeverOutlivesTheKey(t *testing.T) {
	k := key("k", "a", -time.Hour, issued(keyward.PhaseActive))
	k.Spec.Rotation = &keyward.RotationSpec{GracePeriod: keyward.NewDuration(720 * time.Hour)}

	k.Status.LifetimeLimit = at(time.Hour) // the tenant's maxKeyLifetime, fixed at issue
	if pk := PreviousKeyAfter(&k, true, t0); pk == nil || !pk.ValidUntil.Equal(at(time.Hour)) {
		t.Fatalf("grace must end at the lifetime limit, got %+v", pk)
	}

	k.Spec.ExpiresAt = keyward.NewTimestamp(t0.Add(10 * time.Minute))
	pk := PreviousKeyAfter(&k, true, t0)
	if pk == nil || !pk.ValidUntil.Equal(at(10*time.Minute)) {
		t.Fatalf("grace must end at the key's expiry, got %+v", pk)
	}

	// Moving the expiry earlier cuts a running grace period too.
	k.Status.PreviousKey = pk
	k.Spec.ExpiresAt = keyward.NewTimestamp(t0.Add(time.Minute))
	if got := PreviousKeyAfter(&k, false, t0); got == nil || !got.ValidUntil.Equal(at(time.Minute)) {
		t.Fatalf("got %+v", got)
	}
	if PreviousKeyAfter(&k, false, t0.Add(time.Minute)) != nil {
		t.Fatal("the previous key verifies past the key's expiry")
	}
}

func TestGracePeriodIsBoundedAndFailsClosed(t *testing.T) {
	k := key("k", "a", 0)
	for value, want := range map[string]time.Duration{
		"10m": 10 * time.Minute, "720h": 720 * time.Hour, "876000h": keyward.MaxGracePeriod,
		"1d": 0, "-1s": 0, "": 0, "9999999999h": 0,
	} {
		d := keyward.Duration(value)
		k.Spec.Rotation = &keyward.RotationSpec{GracePeriod: &d}
		if got := GracePeriod(&k); got != want {
			t.Errorf("gracePeriod %q: got %s, want %s", value, got, want)
		}
	}
}

func TestUnreadableExpiryIsPendingInvalidSpec(t *testing.T) {
	for _, value := range []string{"2030-01-01T00:00:00+25:00", "2030-01-01t00:00:00z", "9999-12-31T23:00:00-05:00", "1969-12-31T23:59:59Z", "soon"} {
		for _, k := range []keyward.AccessKey{key("new", "a", -time.Hour), key("issued", "a", -time.Hour, issued(keyward.PhaseActive))} {
			ts := keyward.Timestamp(value)
			k.Spec.ExpiresAt = &ts
			d := PlanKey(Observation{Key: &k, App: app("a", 2), Tenant: enabled, Slot: SlotDecision{Outcome: SlotGranted}, Now: t0})
			if d.Status.Phase != keyward.PhasePending || reasonOf(d) != keyward.ReasonInvalidSpec || d.Material != MaterialKeep {
				t.Errorf("%s key, expiresAt %q: got %s/%s material %d", k.Name, value, d.Status.Phase, reasonOf(d), d.Material)
			}
			if !strings.Contains(d.Ready().Message, "spec.expiresAt") || strings.Contains(d.Ready().Message, value) {
				t.Errorf("the message names the field without echoing the value: %q", d.Ready().Message)
			}
		}
	}
}

func TestUnreadableTenantLifetimeStopsThatTenantOnly(t *testing.T) {
	bad := keyward.Duration("30d")
	ts := &keyward.TenantSettings{}
	ts.Name = keyward.TenantSettingsName
	ts.Spec.APIKeysEnabled = ptr.To(true)
	ts.Spec.MaxKeyLifetime = &bad
	tenant := TenantFrom(ts, false)
	if tenant.Invalid == "" || !strings.Contains(tenant.Invalid, "spec.maxKeyLifetime") {
		t.Fatalf("Invalid = %q", tenant.Invalid)
	}
	k := key("k", "a", -time.Hour)
	d := PlanKey(Observation{Key: &k, App: app("a", 2), Tenant: tenant, Slot: SlotDecision{Outcome: SlotGranted}, Now: t0})
	if d.Status.Phase != keyward.PhasePending || reasonOf(d) != keyward.ReasonInvalidTenantSettings || d.Material != MaterialKeep {
		t.Fatalf("got %s/%s material %d", d.Status.Phase, reasonOf(d), d.Material)
	}

	warn := keyward.Duration("forever")
	ts.Spec.MaxKeyLifetime, ts.Spec.ExpiryWarning = nil, &warn
	if got := TenantFrom(ts, false); got.Invalid != "" || got.ExpiryWarning != 720*time.Hour {
		t.Fatalf("an unreadable warning window falls back to the default: %+v", got)
	}
}

func TestKeysWithoutOwnerShareOneOwnerLimit(t *testing.T) {
	apps := map[string]*keyward.Application{"a": app("a", 100)}
	tenant := enabled
	tenant.MaxKeysPerOwner = 2
	var keys []keyward.AccessKey
	for i, name := range []string{"k0", "k1", "k2", "k3"} {
		keys = append(keys, key(name, "a", time.Duration(i)*time.Second-time.Hour, owner("")))
	}
	got := outcomes(alloc(keys, apps, tenant))
	if got["k0"] != SlotGranted || got["k1"] != SlotGranted || got["k2"] != SlotDenied || got["k3"] != SlotDenied {
		t.Fatalf("got %v", got)
	}
}

func TestTenantKeyLimit(t *testing.T) {
	apps := map[string]*keyward.Application{"a": app("a", 100), "b": app("b", 100)}
	tenant := enabled
	tenant.MaxKeys = 3
	tenant.MaxKeysPerOwner = 100
	keys := []keyward.AccessKey{
		key("old", "a", -2*time.Hour, issued(keyward.PhaseActive)),
		key("x", "a", -time.Hour, owner("x")),
		key("y", "b", -time.Hour+time.Second, owner("y")),
		key("z", "b", -time.Hour+2*time.Second, owner("z")),
	}
	d := alloc(keys, apps, tenant)
	if d["x"].Outcome != SlotGranted || d["y"].Outcome != SlotGranted || d["z"].Outcome != SlotDenied {
		t.Fatalf("got %v", outcomes(d))
	}
	if d["z"].Reason != keyward.ReasonTenantLimitExceeded || !strings.Contains(d["z"].Message, "maxKeys") {
		t.Fatalf("got %q: %q", d["z"].Reason, d["z"].Message)
	}
	if ev := transitionEvent("", decision{phase: keyward.PhaseRejected, reason: keyward.ReasonTenantLimitExceeded}); ev != keyward.EventLimitExceeded {
		t.Fatalf("event %q", ev)
	}
}
