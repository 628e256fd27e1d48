// Package verify answers "is this key valid?" for gateways and services
// (docs/gateways.md). Decide is the decision: a pure function of the presented key,
// the AccessKey its ID names, the key's Application, the tenant's policy, the
// time, the client address and the requested scope. Everything around it —
// the cache-backed lookup, the rate limiter, the HTTP and gRPC front ends,
// usage reporting — lives in the same package but does no deciding.
package verify

import (
	"net/netip"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/policy"
	"keyward.dev/keyward/internal/secrets"
	"keyward.dev/keyward/internal/verify/wire"
)

// Reason is why a key verified or not. The values are public API
// (docs/gateways.md): gateways, dashboards and alerts match on them.
type Reason string

const (
	ReasonOK                Reason = "ok"
	ReasonMalformed         Reason = "malformed"
	ReasonUnknown           Reason = "unknown"
	ReasonInactive          Reason = "inactive"
	ReasonExpired           Reason = "expired"
	ReasonRevoked           Reason = "revoked"
	ReasonTenantDisabled    Reason = "tenant_disabled"
	ReasonNetworkNotAllowed Reason = "network_not_allowed"
	ReasonScopeNotAllowed   Reason = "scope_not_allowed"
	// ReasonNamespaceNotAllowed: the key belongs to a tenant the caller
	// did not pin (the namespace parameter).
	ReasonNamespaceNotAllowed Reason = "namespace_not_allowed"
	ReasonRateLimited         Reason = "rate_limited"
)

// Reasons lists every reason, in the order docs/gateways.md gives them.
var Reasons = []Reason{ReasonOK, ReasonMalformed, ReasonUnknown, ReasonInactive, ReasonExpired, ReasonRevoked,
	ReasonTenantDisabled, ReasonNetworkNotAllowed, ReasonScopeNotAllowed, ReasonNamespaceNotAllowed, ReasonRateLimited}

// Authenticated reports whether the reason is given only to a caller that
// presented a key's real secret (the key was recognised): every reason but
// malformed, unknown and rate_limited.
func (r Reason) Authenticated() bool {
	return r != ReasonMalformed && r != ReasonUnknown && r != ReasonRateLimited
}

// Guess reports whether the reason counts as a failed guess for the
// brute-force limiter: only a key that is not a key (malformed) or not known
// (unknown). A caller with a real but unusable key (expired, inactive, ...)
// is not guessing.
func (r Reason) Guess() bool { return r == ReasonMalformed || r == ReasonUnknown }

// Request is what a caller asks: is Key valid, from Addr, for Scope with Access?
type Request struct {
	// Key is the parsed key; parsing (and answering malformed) happens before any lookup.
	Key keyformat.Key
	// Addr is the client's address; the zero Addr means unknown, which no
	// allowedNetworks entry contains.
	Addr netip.Addr
	// Scope is the scope asked for; empty asks for none (authentication only).
	Scope string
	// Access is the access asked for on Scope; empty means ReadOnly.
	Access keyward.AccessLevel
	// Pinned pins the tenant: only keys of Namespaces pass (none when it
	// is empty).
	Pinned     bool
	Namespaces []string
	// Refusal, when set, is the answer for every recognised key that
	// passes the earlier checks: what was asked contradicts itself (two
	// scopes, an access that is no level), so nothing can satisfy it.
	Refusal Reason
}

// Input is everything Decide looks at besides the request.
type Input struct {
	// AccessKey is the key whose status.keyID or status.previousKey.keyID
	// equals the presented ID; nil when there is none.
	AccessKey *keyward.AccessKey
	// App is the key's Application; nil when missing.
	App *keyward.Application
	// Tenant is the policy of the key's namespace.
	Tenant policy.Tenant
	// Now is the time of the request.
	Now time.Time
}

// Result is the answer, shaped as /v1/verify's JSON (docs/gateways.md).
type Result struct {
	Valid       bool            `json:"valid"`
	Reason      Reason          `json:"reason"`
	KeyID       string          `json:"keyID,omitempty"`
	Namespace   string          `json:"namespace,omitempty"`
	Application string          `json:"application,omitempty"`
	Group       string          `json:"group,omitempty"`
	Team        string          `json:"team,omitempty"`
	Owner       string          `json:"owner,omitempty"`
	Scopes      []keyward.Scope `json:"scopes,omitempty"`
	ExpiresAt   *metav1.Time    `json:"expiresAt,omitempty"`

	// Name is the AccessKey's name (for usage reporting; not in the JSON:
	// the API names the key by its ID).
	Name string `json:"-"`
	// RetryAfter is set with rate_limited: when the client may try again.
	RetryAfter time.Duration `json:"-"`
	// matched: the presented secret is one of the key's materials, so the
	// caller holds a real key and is not guessing, whatever the answer.
	matched bool
}

// Decide is the verification decision. The order of checks:
//
//  0. a revoked key whose material the controller has destroyed is
//     revoked by its ID alone (there is no hash left to check against);
//  1. the secret must match the key's current material, or its previous
//     material while status.previousKey.validUntil lies ahead — otherwise
//     unknown, exactly as for an ID that does not exist; a key being
//     deleted (deletionTimestamp set, a finalizer keeps it) is unknown too;
//  2. the pinned tenant (namespace_not_allowed), then revoked (spec or
//     phase), the tenant switch, a missing Application or deactivation
//     (inactive), then expiry;
//  3. the client address against spec.allowedNetworks;
//  4. a request that contradicts itself (Refusal), then the key's scopes
//     against the Application's current scopes, and the requested scope
//     and access against both.
//
// Expiry is the earlier of status.expiresAt and the expiry spec.expiresAt
// gives within status.lifetimeLimit, so a key is refused the instant it
// expires and as soon as its expiry is moved into the past, without waiting
// for the controller; a phase of Expired, Inactive or Revoked also refuses,
// so restoring a key takes effect once the controller has acted.
func Decide(req Request, in Input) Result {
	k := in.AccessKey
	if k == nil {
		keyformat.SecretMatches(req.Key.Secret, keyformat.DecoyHash)
		return Result{Reason: ReasonUnknown}
	}
	revoked := k.Spec.Revoked || k.Status.Phase == keyward.PhaseRevoked
	if revoked && k.Status.SecretHash == "" && k.Status.KeyID == req.Key.ID {
		// Revocation destroyed the hash, so the secret can no longer be
		// checked; the ID alone (public anyway) says the key was revoked.
		// Nothing else about the key is told.
		keyformat.SecretMatches(req.Key.Secret, keyformat.DecoyHash)
		if !namespaceAllowed(req, k.Namespace) {
			return Result{Reason: ReasonNamespaceNotAllowed, KeyID: req.Key.ID}
		}
		return Result{Reason: ReasonRevoked, KeyID: req.Key.ID}
	}
	keyID, ok := matchMaterial(req.Key, k, in.Now)
	if !ok {
		return Result{Reason: ReasonUnknown}
	}
	if !k.DeletionTimestamp.IsZero() {
		// Deleted, though a finalizer keeps the object: the key is gone
		// for every caller (its slot stays held until the object is).
		return Result{Reason: ReasonUnknown, matched: true}
	}
	res := identity(keyID, k, in.App)
	res.matched = true
	judge(&res, k, in, req, true)
	return res
}

// judge sets res's Reason (and Valid) from the state of a recognised key:
// step 2 to 4 of Decide; the client address is checked only when
// checkAddr is set. A pinned tenant is checked first, so that a key of
// another tenant learns nothing of its own state at this gateway.
func judge(res *Result, k *keyward.AccessKey, in Input, req Request, checkAddr bool) {
	revoked := k.Spec.Revoked || k.Status.Phase == keyward.PhaseRevoked
	switch {
	case !namespaceAllowed(req, k.Namespace):
		res.Reason = ReasonNamespaceNotAllowed
	case revoked:
		res.Reason = ReasonRevoked
	case !in.Tenant.Enabled:
		res.Reason = ReasonTenantDisabled
	case in.App == nil || !in.App.DeletionTimestamp.IsZero():
		res.Reason = ReasonInactive
	case k.Spec.State == keyward.StateInactive || k.Status.Phase == keyward.PhaseInactive:
		res.Reason = ReasonInactive
	case policy.IsExpired(res.ExpiresAt, in.Now) || k.Status.Phase == keyward.PhaseExpired:
		res.Reason = ReasonExpired
	case checkAddr && !wire.AddrAllowed(k.Spec.AllowedNetworks, req.Addr):
		res.Reason = ReasonNetworkNotAllowed
	case req.Refusal != "":
		res.Reason = req.Refusal
	case policy.CheckScopes(k, in.App) != nil || !ScopeGranted(res.Scopes, req.Scope, req.Access):
		res.Reason = ReasonScopeNotAllowed
	default:
		res.Valid, res.Reason = true, ReasonOK
	}
}

// DecideHeld is the decision for a key known only by its ID, without its
// secret: what introspection of an access token asks ("would the key that
// obtained this token still verify now?"). The ID must still be the key's
// current one, or its previous one before status.previousKey.validUntil
// (otherwise unknown: the key was rotated out); then the same checks as
// Decide, except the client address, which is only known at the exchange.
func DecideHeld(keyID string, in Input) Result {
	k := in.AccessKey
	if k == nil || keyID == "" {
		return Result{Reason: ReasonUnknown}
	}
	switch {
	case k.Status.KeyID == keyID:
	case k.Status.PreviousKey != nil && k.Status.PreviousKey.KeyID == keyID && in.Now.Before(k.Status.PreviousKey.ValidUntil.Time):
	default:
		return Result{Reason: ReasonUnknown}
	}
	if !k.DeletionTimestamp.IsZero() {
		return Result{Reason: ReasonUnknown}
	}
	res := identity(keyID, k, in.App)
	judge(&res, k, in, Request{}, false)
	return res
}

// namespaceAllowed reports whether a key of namespace passes the request's
// tenant pin.
func namespaceAllowed(req Request, namespace string) bool {
	return !req.Pinned || slices.Contains(req.Namespaces, namespace)
}

// matchMaterial reports which of the key's materials the presented key is
// (secrets.MatchStatus): the current one, or the previous one before
// its validUntil.
func matchMaterial(pk keyformat.Key, k *keyward.AccessKey, now time.Time) (string, bool) {
	switch secrets.MatchStatus(pk, k) {
	case keyformat.MatchCurrent:
		return pk.ID, true
	case keyformat.MatchPrevious:
		return pk.ID, now.Before(k.Status.PreviousKey.ValidUntil.Time)
	}
	return "", false
}

// identity fills what a recognised key tells about its holder.
func identity(keyID string, k *keyward.AccessKey, app *keyward.Application) Result {
	res := Result{
		KeyID:       keyID,
		Namespace:   k.Namespace,
		Name:        k.Name,
		Application: k.Spec.Application,
		Owner:       k.Spec.Owner,
		ExpiresAt:   policy.VerifiableUntil(k),
	}
	if app != nil {
		res.Group = app.Spec.Group
		if res.Group == "" {
			res.Group = keyward.DefaultGroup
		}
		res.Team = app.Spec.Team
		res.Scopes = GrantedScopes(k, app)
	}
	return res
}

// GrantedScopes is what the key grants now: its effective scopes (its own,
// or the Application's when it names none), each capped by the Application's
// current scopes; scopes the Application no longer has are left out, and so
// are names that are no scope token (policy.ValidScopeName: an object stored
// before the CRD refused them), which could forge a header or a claim.
func GrantedScopes(k *keyward.AccessKey, app *keyward.Application) []keyward.Scope {
	eff := policy.EffectiveScopes(k, app)
	if withinApplication(eff, app) {
		return eff // shared with the cache: read only
	}
	out := make([]keyward.Scope, 0, len(eff))
	for _, s := range eff {
		limit, ok := app.ScopeLimit(s.Name)
		if !ok || !policy.ValidScopeName(s.Name) {
			continue
		}
		a, l := s.Access.OrDefault(), limit.OrDefault()
		if !l.Allows(a) {
			a = l
		}
		out = append(out, keyward.Scope{Name: s.Name, Access: a})
	}
	return out
}

// withinApplication reports whether every scope is, as written (access
// spelled out), within the Application's scopes.
func withinApplication(scopes []keyward.Scope, app *keyward.Application) bool {
	for _, s := range scopes {
		limit, ok := app.ScopeLimit(s.Name)
		if !ok || s.Access == "" || !limit.OrDefault().Allows(s.Access) || !policy.ValidScopeName(s.Name) {
			return false
		}
	}
	return true
}

// ScopeGranted reports whether the granted scopes allow access on scope; no
// scope asked for is always granted. ReadWrite covers ReadOnly.
func ScopeGranted(granted []keyward.Scope, scope string, access keyward.AccessLevel) bool {
	if scope == "" {
		return true
	}
	want := access.OrDefault()
	for _, s := range granted {
		if s.Name == scope && s.Access.Allows(want) {
			return true
		}
	}
	return false
}
