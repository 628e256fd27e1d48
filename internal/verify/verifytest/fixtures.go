package verifytest

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
)

// T0 is the fixtures' "now".
var T0 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

// At is T0+d.
func At(d time.Duration) *metav1.Time { m := metav1.NewTime(T0.Add(d)); return &m }

// MustKey generates key material.
func MustKey(t testing.TB) keyformat.Key {
	t.Helper()
	k, err := keyformat.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// App is the Application "billing" of tenant "t" (team payments) with scopes.
func App(scopes ...keyward.Scope) *keyward.Application {
	return &keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: "t", Name: "billing"},
		Spec: keyward.ApplicationSpec{Team: "payments", Scopes: scopes}}
}

// IssuedKey is the Active AccessKey "k1" of tenant "t" (Application billing,
// owner alice) holding material m, issued an hour before T0.
func IssuedKey(m keyformat.Key) *keyward.AccessKey {
	return &keyward.AccessKey{
		ObjectMeta: metav1.ObjectMeta{Namespace: "t", Name: "k1"},
		Spec:       keyward.AccessKeySpec{Application: "billing", Owner: "alice", State: keyward.StateActive},
		Status: keyward.AccessKeyStatus{Phase: keyward.PhaseActive, KeyID: m.ID, SecretHash: keyformat.HashSecret(m.Secret),
			IssuedAt: At(-time.Hour)},
	}
}

// Scope is a scope with its access.
func Scope(name string, a keyward.AccessLevel) keyward.Scope {
	return keyward.Scope{Name: name, Access: a}
}

// World is a store with tenant "t" switched on, its Application "billing"
// (group Administrators; orders:ReadWrite, reports:ReadOnly), tenant "off"
// switched off with an Application "billing" too, and one key in every
// state. The strings are the keys' plaintexts, never to be logged.
type World struct {
	Store *MemStore
	// Active verifies; Revoked, Inactive and Expired are refused for their
	// state; Net allows only 198.51.100.0/24; Scoped holds reports:ReadOnly
	// only; Off belongs to the switched-off tenant; Previous is the
	// rotated-out material of the key "rotated", valid for a minute after T0.
	Active, Revoked, Inactive, Expired, Net, Scoped, Off, Previous string
}

// NewWorld builds the World over a MemStore indexed by index (verify.KeyIDs).
func NewWorld(t testing.TB, index func(client.Object) []string) *World {
	t.Helper()
	app := App(Scope("orders", keyward.ReadWrite), Scope("reports", keyward.ReadOnly))
	app.Spec.Group = "Administrators"
	offApp := App()
	offApp.Namespace = "off"
	w := &World{Store: NewMemStore(index, app, offApp,
		&keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: "t", Name: keyward.TenantSettingsName},
			Spec: keyward.TenantSettingsSpec{APIKeysEnabled: ptr.To(true)}},
		&keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: "off", Name: keyward.TenantSettingsName},
			Spec: keyward.TenantSettingsSpec{APIKeysEnabled: ptr.To(false)}})}
	add := func(name string, mutate func(*keyward.AccessKey)) string {
		m := MustKey(t)
		k := IssuedKey(m)
		k.Name = name
		if mutate != nil {
			mutate(k)
		}
		w.Store.Put(k)
		return m.Plaintext()
	}
	w.Active = add("active", nil)
	w.Revoked = add("revoked", func(k *keyward.AccessKey) { k.Spec.Revoked = true })
	w.Inactive = add("inactive", func(k *keyward.AccessKey) { k.Spec.State = keyward.StateInactive })
	w.Expired = add("expired", func(k *keyward.AccessKey) { k.Status.ExpiresAt = At(-time.Second) })
	w.Net = add("net", func(k *keyward.AccessKey) { k.Spec.AllowedNetworks = []string{"198.51.100.0/24"} })
	w.Scoped = add("scoped", func(k *keyward.AccessKey) { k.Spec.Scopes = []keyward.Scope{Scope("reports", keyward.ReadOnly)} })
	w.Off = add("off", func(k *keyward.AccessKey) { k.Namespace = "off" })
	prev := MustKey(t)
	add("rotated", func(k *keyward.AccessKey) {
		k.Status.PreviousKey = &keyward.PreviousKey{KeyID: prev.ID, SecretHash: keyformat.HashSecret(prev.Secret), ValidUntil: *At(time.Minute)}
	})
	w.Previous = prev.Plaintext()
	return w
}
