package verify

import (
	"net/netip"
	"testing"
	"time"

	"k8s.io/utils/ptr"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/policy"
	"keyward.dev/keyward/internal/verify/verifytest"
)

var enabled = policy.Tenant{Enabled: true}

func TestDecide(t *testing.T) {
	cur, prev, other := verifytest.MustKey(t), verifytest.MustKey(t), verifytest.MustKey(t)
	wrongSecret := keyformat.Key{ID: cur.ID, Secret: other.Secret}
	orders := []keyward.Scope{verifytest.Scope("orders", keyward.ReadWrite), verifytest.Scope("reports", keyward.ReadOnly)}

	type tc struct {
		name   string
		req    Request
		key    func(*keyward.AccessKey) // nil: the issued key as is
		noKey  bool
		app    *keyward.Application // nil: verifytest.App(orders...)
		noApp  bool
		tenant *policy.Tenant
		now    time.Duration
		want   Reason
		// reveals: whether identity beyond the key ID is told; default: for authenticated reasons
		reveals *bool
	}
	withPrev := func(until time.Duration) func(*keyward.AccessKey) {
		return func(k *keyward.AccessKey) {
			k.Status.PreviousKey = &keyward.PreviousKey{KeyID: prev.ID, SecretHash: keyformat.HashSecret(prev.Secret), ValidUntil: *verifytest.At(until)}
		}
	}
	expiring := func(d time.Duration) func(*keyward.AccessKey) {
		return func(k *keyward.AccessKey) {
			k.Spec.ExpiresAt, k.Status.ExpiresAt = keyward.NewTimestamp(verifytest.At(d).Time), verifytest.At(d)
		}
	}
	networks := func(n ...string) func(*keyward.AccessKey) {
		return func(k *keyward.AccessKey) { k.Spec.AllowedNetworks = n }
	}
	keyScopes := func(s ...keyward.Scope) func(*keyward.AccessKey) {
		return func(k *keyward.AccessKey) { k.Spec.Scopes = s }
	}
	ip := netip.MustParseAddr
	off := policy.Tenant{Enabled: false}

	cases := []tc{
		{name: "active key", req: Request{Key: cur}, want: ReasonOK},
		{name: "no AccessKey has the ID", req: Request{Key: other}, noKey: true, want: ReasonUnknown},
		{name: "wrong secret for a known ID is unknown too", req: Request{Key: wrongSecret}, want: ReasonUnknown},
		{name: "an ID the key does not hold", req: Request{Key: other}, want: ReasonUnknown},
		{name: "never issued (Pending, no hash)", req: Request{Key: cur}, key: func(k *keyward.AccessKey) {
			k.Status.SecretHash, k.Status.Phase = "", keyward.PhasePending
		}, want: ReasonUnknown},
		{name: "never issued (Rejected, no hash)", req: Request{Key: cur}, key: func(k *keyward.AccessKey) {
			k.Status.SecretHash, k.Status.Phase = "", keyward.PhaseRejected
		}, want: ReasonUnknown},

		{name: "revoked in spec, before the controller acts", req: Request{Key: cur}, key: func(k *keyward.AccessKey) { k.Spec.Revoked = true }, want: ReasonRevoked},
		{name: "revoked phase", req: Request{Key: cur}, key: func(k *keyward.AccessKey) { k.Status.Phase = keyward.PhaseRevoked }, want: ReasonRevoked},
		{name: "revoked wins over a disabled tenant", req: Request{Key: cur}, key: func(k *keyward.AccessKey) { k.Spec.Revoked = true }, tenant: &off, want: ReasonRevoked},
		{name: "revoked, material destroyed: revoked by ID alone", req: Request{Key: cur}, key: func(k *keyward.AccessKey) {
			k.Spec.Revoked, k.Status.Phase, k.Status.SecretHash = true, keyward.PhaseRevoked, ""
		}, want: ReasonRevoked, reveals: ptr.To(false)},
		{name: "previous key of a revoked key, material destroyed", req: Request{Key: prev}, key: func(k *keyward.AccessKey) {
			k.Spec.Revoked, k.Status.Phase, k.Status.SecretHash = true, keyward.PhaseRevoked, ""
		}, want: ReasonUnknown},
		{name: "wrong secret of a revoked key is unknown", req: Request{Key: wrongSecret}, key: func(k *keyward.AccessKey) { k.Spec.Revoked = true }, want: ReasonUnknown},

		{name: "tenant switched off", req: Request{Key: cur}, tenant: &off, want: ReasonTenantDisabled},
		{name: "tenant off and key Pending with material kept", req: Request{Key: cur}, tenant: &off, key: func(k *keyward.AccessKey) {
			k.Status.Phase = keyward.PhasePending
		}, want: ReasonTenantDisabled},

		{name: "deactivated in spec", req: Request{Key: cur}, key: func(k *keyward.AccessKey) { k.Spec.State = keyward.StateInactive }, want: ReasonInactive},
		{name: "Inactive phase (reactivation not yet acted on)", req: Request{Key: cur}, key: func(k *keyward.AccessKey) { k.Status.Phase = keyward.PhaseInactive }, want: ReasonInactive},
		{name: "application missing", req: Request{Key: cur}, noApp: true, want: ReasonInactive},
		{name: "application being deleted", req: Request{Key: cur}, app: func() *keyward.Application {
			a := verifytest.App(orders...)
			a.DeletionTimestamp = verifytest.At(-time.Second)
			return a
		}(), want: ReasonInactive},

		{name: "one nanosecond before expiry", req: Request{Key: cur}, key: expiring(time.Hour), now: time.Hour - 1, want: ReasonOK},
		{name: "the instant of expiry", req: Request{Key: cur}, key: expiring(time.Hour), now: time.Hour, want: ReasonExpired},
		{name: "after expiry, phase still Active", req: Request{Key: cur}, key: expiring(time.Hour), now: 2 * time.Hour, want: ReasonExpired},
		{name: "spec.expiresAt moved into the past, status not yet", req: Request{Key: cur}, key: func(k *keyward.AccessKey) {
			k.Spec.ExpiresAt, k.Status.ExpiresAt = keyward.NewTimestamp(verifytest.At(-time.Minute).Time), verifytest.At(time.Hour)
		}, want: ReasonExpired},
		{name: "status.expiresAt past although spec asks later (lifetime limit)", req: Request{Key: cur}, key: func(k *keyward.AccessKey) {
			k.Spec.ExpiresAt, k.Status.ExpiresAt = keyward.NewTimestamp(verifytest.At(time.Hour).Time), verifytest.At(-time.Second)
		}, want: ReasonExpired},
		{name: "lifetime limit reached, key asked for never", req: Request{Key: cur}, key: func(k *keyward.AccessKey) {
			k.Status.LifetimeLimit = verifytest.At(0)
		}, want: ReasonExpired},
		{name: "Expired phase (extension not yet acted on)", req: Request{Key: cur}, key: func(k *keyward.AccessKey) {
			k.Status.Phase, k.Spec.ExpiresAt = keyward.PhaseExpired, keyward.NewTimestamp(verifytest.At(time.Hour).Time)
		}, want: ReasonExpired},
		{name: "expired and deactivated: inactive first", req: Request{Key: cur}, key: func(k *keyward.AccessKey) {
			k.Spec.State, k.Status.ExpiresAt = keyward.StateInactive, verifytest.At(-time.Hour)
		}, want: ReasonInactive},

		{name: "previous key during the grace period", req: Request{Key: prev}, key: withPrev(time.Minute), now: time.Minute - time.Second, want: ReasonOK},
		{name: "previous key one nanosecond before the end", req: Request{Key: prev}, key: withPrev(time.Minute), now: time.Minute - 1, want: ReasonOK},
		{name: "previous key at the end of the grace period", req: Request{Key: prev}, key: withPrev(time.Minute), now: time.Minute, want: ReasonUnknown},
		{name: "previous key a second after", req: Request{Key: prev}, key: withPrev(time.Minute), now: time.Minute + time.Second, want: ReasonUnknown},
		{name: "current key during the grace period", req: Request{Key: cur}, key: withPrev(time.Minute), want: ReasonOK},
		{name: "previous key with a wrong secret", req: Request{Key: keyformat.Key{ID: prev.ID, Secret: other.Secret}}, key: withPrev(time.Minute), want: ReasonUnknown},
		{name: "previous key never past the key's own expiry", req: Request{Key: prev}, key: func(k *keyward.AccessKey) {
			withPrev(time.Hour)(k)
			expiring(time.Minute)(k)
		}, now: time.Minute, want: ReasonExpired},
		{name: "previous key of a revoked key", req: Request{Key: prev}, key: func(k *keyward.AccessKey) {
			withPrev(time.Hour)(k)
			k.Spec.Revoked = true
		}, want: ReasonRevoked},

		{name: "IPv4 inside a CIDR", req: Request{Key: cur, Addr: ip("10.1.2.3")}, key: networks("192.168.0.0/16", "10.0.0.0/8"), want: ReasonOK},
		{name: "IPv4 outside", req: Request{Key: cur, Addr: ip("11.0.0.1")}, key: networks("10.0.0.0/8"), want: ReasonNetworkNotAllowed},
		{name: "single IPv4 address", req: Request{Key: cur, Addr: ip("203.0.113.7")}, key: networks("203.0.113.7"), want: ReasonOK},
		{name: "next to a single address", req: Request{Key: cur, Addr: ip("203.0.113.8")}, key: networks("203.0.113.7"), want: ReasonNetworkNotAllowed},
		{name: "IPv6 inside", req: Request{Key: cur, Addr: ip("2001:db8:1::42")}, key: networks("2001:db8::/32"), want: ReasonOK},
		{name: "IPv6 outside", req: Request{Key: cur, Addr: ip("2001:db9::1")}, key: networks("2001:db8::/32"), want: ReasonNetworkNotAllowed},
		{name: "IPv6 single address", req: Request{Key: cur, Addr: ip("2001:db8::1")}, key: networks("2001:db8::1"), want: ReasonOK},
		{name: "IPv4-mapped IPv6 client against an IPv4 CIDR", req: Request{Key: cur, Addr: ip("::ffff:10.9.8.7")}, key: networks("10.0.0.0/8"), want: ReasonOK},
		{name: "IPv4-mapped IPv6 client outside", req: Request{Key: cur, Addr: ip("::ffff:11.9.8.7")}, key: networks("10.0.0.0/8"), want: ReasonNetworkNotAllowed},
		{name: "IPv4 client against an IPv4-mapped CIDR", req: Request{Key: cur, Addr: ip("10.9.8.7")}, key: networks("::ffff:10.0.0.0/104"), want: ReasonOK},
		{name: "IPv4 network does not contain an IPv6 client", req: Request{Key: cur, Addr: ip("2001:db8::1")}, key: networks("0.0.0.0/0"), want: ReasonNetworkNotAllowed},
		{name: "unknown client address with networks", req: Request{Key: cur}, key: networks("0.0.0.0/0"), want: ReasonNetworkNotAllowed},
		{name: "unknown client address without networks", req: Request{Key: cur}, want: ReasonOK},
		{name: "an entry that does not parse allows nothing", req: Request{Key: cur, Addr: ip("10.0.0.1")}, key: networks("not-a-network"), want: ReasonNetworkNotAllowed},
		{name: "network checked before scope", req: Request{Key: cur, Addr: ip("11.0.0.1"), Scope: "nope"}, key: networks("10.0.0.0/8"), want: ReasonNetworkNotAllowed},

		{name: "application scope, ReadWrite", req: Request{Key: cur, Scope: "orders", Access: keyward.ReadWrite}, want: ReasonOK},
		{name: "ReadWrite covers ReadOnly", req: Request{Key: cur, Scope: "orders", Access: keyward.ReadOnly}, want: ReasonOK},
		{name: "empty access means ReadOnly", req: Request{Key: cur, Scope: "reports"}, want: ReasonOK},
		{name: "ReadOnly scope asked to write", req: Request{Key: cur, Scope: "reports", Access: keyward.ReadWrite}, want: ReasonScopeNotAllowed},
		{name: "scope the application lacks", req: Request{Key: cur, Scope: "admin"}, want: ReasonScopeNotAllowed},
		{name: "key narrower than its application", req: Request{Key: cur, Scope: "orders", Access: keyward.ReadWrite},
			key: keyScopes(verifytest.Scope("orders", keyward.ReadOnly)), want: ReasonScopeNotAllowed},
		{name: "key's own scope, read", req: Request{Key: cur, Scope: "orders", Access: keyward.ReadOnly},
			key: keyScopes(verifytest.Scope("orders", keyward.ReadOnly)), want: ReasonOK},
		{name: "key's own scopes leave out an application scope", req: Request{Key: cur, Scope: "reports"},
			key: keyScopes(verifytest.Scope("orders", keyward.ReadOnly)), want: ReasonScopeNotAllowed},
		{name: "application narrowed below the key: refused for every scope", req: Request{Key: cur, Scope: "reports"},
			key: keyScopes(verifytest.Scope("orders", keyward.ReadWrite), verifytest.Scope("reports", keyward.ReadOnly)),
			app: verifytest.App(verifytest.Scope("orders", keyward.ReadOnly), verifytest.Scope("reports", keyward.ReadOnly)), want: ReasonScopeNotAllowed},
		{name: "application dropped the scope; key uses the application's", req: Request{Key: cur, Scope: "orders"},
			app: verifytest.App(verifytest.Scope("reports", keyward.ReadOnly)), want: ReasonScopeNotAllowed},
		{name: "no scope asked from an application without scopes", req: Request{Key: cur}, app: verifytest.App(), want: ReasonOK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := Input{Tenant: enabled, Now: verifytest.T0.Add(c.now)}
			if c.tenant != nil {
				in.Tenant = *c.tenant
			}
			if !c.noKey {
				in.AccessKey = verifytest.IssuedKey(cur)
				if c.key != nil {
					c.key(in.AccessKey)
				}
			}
			if !c.noApp {
				in.App = c.app
				if in.App == nil {
					in.App = verifytest.App(orders...)
				}
			}
			got := Decide(c.req, in)
			if got.Reason != c.want {
				t.Fatalf("reason %q, want %q", got.Reason, c.want)
			}
			if got.Valid != (c.want == ReasonOK) {
				t.Fatalf("valid %v with reason %q", got.Valid, got.Reason)
			}
			reveals := c.want.Authenticated()
			if c.reveals != nil {
				reveals = *c.reveals
			}
			if !reveals && (got.Namespace != "" || got.Owner != "" || got.Application != "") {
				t.Fatalf("must reveal nothing, got namespace %q owner %q", got.Namespace, got.Owner)
			}
			if reveals && got.Namespace == "" {
				t.Fatalf("identity missing for %q", got.Reason)
			}
		})
	}
}

func TestDecideIdentity(t *testing.T) {
	cur, prev := verifytest.MustKey(t), verifytest.MustKey(t)
	k := verifytest.IssuedKey(cur)
	k.Spec.ExpiresAt, k.Status.ExpiresAt = keyward.NewTimestamp(verifytest.At(time.Hour).Time), verifytest.At(time.Hour)
	k.Status.PreviousKey = &keyward.PreviousKey{KeyID: prev.ID, SecretHash: keyformat.HashSecret(prev.Secret), ValidUntil: *verifytest.At(time.Minute)}
	app := verifytest.App(verifytest.Scope("orders", keyward.ReadWrite), verifytest.Scope("reports", ""))
	got := Decide(Request{Key: cur}, Input{AccessKey: k, App: app, Tenant: enabled, Now: verifytest.T0})
	want := Result{Valid: true, Reason: ReasonOK, KeyID: cur.ID, Namespace: "t", Name: "k1", Application: "billing",
		Group: keyward.DefaultGroup, Team: "payments", Owner: "alice", ExpiresAt: verifytest.At(time.Hour)}
	if got.KeyID != want.KeyID || got.Namespace != want.Namespace || got.Application != want.Application ||
		got.Group != want.Group || got.Team != want.Team || got.Owner != want.Owner || got.Name != want.Name ||
		!got.ExpiresAt.Equal(want.ExpiresAt) || !got.Valid {
		t.Fatalf("identity = %+v", got)
	}
	if s := FormatScopes(got.Scopes); s != "orders:ReadWrite,reports:ReadOnly" {
		t.Fatalf("scopes %q", s)
	}
	// The previous key reports its own ID.
	if got := Decide(Request{Key: prev}, Input{AccessKey: k, App: app, Tenant: enabled, Now: verifytest.T0}); got.KeyID != prev.ID || !got.Valid {
		t.Fatalf("previous key: valid %v, key ID %q, want %q", got.Valid, got.KeyID, prev.ID)
	}
	app.Spec.Group = "Administrators"
	if got := Decide(Request{Key: cur}, Input{AccessKey: k, App: app, Tenant: enabled, Now: verifytest.T0}); got.Group != "Administrators" {
		t.Fatalf("group %q: a changed group must show at once", got.Group)
	}
}

func TestGrantedScopesCappedByApplication(t *testing.T) {
	k := verifytest.IssuedKey(verifytest.MustKey(t))
	k.Spec.Scopes = []keyward.Scope{verifytest.Scope("orders", keyward.ReadWrite), verifytest.Scope("gone", keyward.ReadOnly)}
	got := FormatScopes(GrantedScopes(k, verifytest.App(verifytest.Scope("orders", keyward.ReadOnly))))
	if got != "orders:ReadOnly" {
		t.Fatalf("granted %q, want orders:ReadOnly", got)
	}
}

// BenchmarkDecide reports the decision's cost and allocations (the hash of
// the secret dominates).
func BenchmarkDecide(b *testing.B) {
	cur := verifytest.MustKey(b)
	k := verifytest.IssuedKey(cur)
	k.Spec.AllowedNetworks = []string{"10.0.0.0/8", "2001:db8::/32"}
	app := verifytest.App(verifytest.Scope("orders", keyward.ReadWrite))
	req := Request{Key: cur, Addr: netip.MustParseAddr("10.1.2.3"), Scope: "orders", Access: keyward.ReadOnly}
	in := Input{AccessKey: k, App: app, Tenant: enabled, Now: verifytest.T0}
	b.ReportAllocs()
	for b.Loop() {
		if r := Decide(req, in); !r.Valid {
			b.Fatal(r.Reason)
		}
	}
}
