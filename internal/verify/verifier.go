package verify

import (
	"context"
	"net/netip"
	"time"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/policy"
)

// Defaults of the verifier's flags (internal/serve binds them), defined once.
const (
	DefaultFailureRate       = 1.0
	DefaultFailureBurst      = 20
	DefaultMaxClients        = 100_000
	DefaultLastUsedGran      = time.Hour
	DefaultHeavyUseThreshold = 6000
	DefaultFlushInterval     = 10 * time.Second
	// EventSource is the name the verifier's Events are reported by.
	EventSource = "keyward-verifier"
)

// Verifier does the I/O around Decide: it parses the key (malformed needs no
// lookup), consults the brute-force limiter, reads the key, its Application
// and its tenant from the Store, decides, and reports the outcome to the
// limiter, the usage recorder and the metrics. It never calls the API server.
type Verifier struct {
	Store Store
	// Limiter limits guesses per client address; nil turns limiting off.
	Limiter *Limiter
	// APIKeysEnabledByDefault is the tenant switch where TenantSettings leaves it unset.
	APIKeysEnabledByDefault bool
	// Usage records uses of keys (lastUsedAt, heavy use); nil records nothing.
	Usage *Usage
	// Metrics counts verifications; nil counts nothing.
	Metrics *Metrics
	// Now is the clock.
	Now func() time.Time
}

// Call is one verification request as the front ends receive it.
type Call struct {
	// Key is the presented key, as received; "" when none was presented.
	// Never log it.
	Key string
	// Addr is the client address checked against allowedNetworks.
	Addr netip.Addr
	// LimitAddr is the address guesses are counted under (usually Addr).
	LimitAddr netip.Addr
	// Scope and Access are what is asked for; empty Scope asks for none.
	Scope  string
	Access keyward.AccessLevel
	// Pinned and Namespaces pin the tenant; Refusal answers a request that
	// contradicts itself (Request's fields of the same names).
	Pinned     bool
	Namespaces []string
	Refusal    Reason
}

func (v *Verifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

// Verify answers one call. An error means the store could not be read (the
// cache is not ready): the caller should answer 503, not a reason.
//
// The limiter stands only between guesses and their answer: a caller whose
// secret is one of a key's materials is answered whatever its address's
// failures (its own earlier typos included), and only a failed guess counts.
func (v *Verifier) Verify(ctx context.Context, c Call) (Result, error) {
	res, _, err := v.answer(ctx, c, false)
	return res, err
}

// Authenticate verifies the key a client authenticates with at the token
// endpoints (client_id and client_secret, RFC 6749 §2.3.1) from addr,
// exactly as Verify would: it is a use of the key (lastUsedAt, heavy use)
// and counts toward the limiter, but not in the verification metrics (the
// token service counts its own). A client_id that is not the key's ID
// counts as a guess, like an unknown key; no secret at all is malformed and
// no guess. The AccessKey is the one that verified, when res.Valid.
func (v *Verifier) Authenticate(ctx context.Context, clientID, secret string, addr netip.Addr) (Result, *keyward.AccessKey, error) {
	if secret == "" {
		return Result{Reason: ReasonMalformed}, nil, nil
	}
	if pk, err := keyformat.Parse(secret); err == nil && pk.ID != clientID {
		return v.limit(Result{Reason: ReasonUnknown}, addr, true, v.now()), nil, nil
	}
	res, k, err := v.answer(ctx, Call{Key: secret, Addr: addr, LimitAddr: addr}, true)
	if err != nil || !res.Valid {
		return res, nil, err
	}
	return res, k, nil
}

// answer is Verify; exchange leaves the verification metrics alone. The
// AccessKey is the one the answer is about, if any.
func (v *Verifier) answer(ctx context.Context, c Call, exchange bool) (Result, *keyward.AccessKey, error) {
	start := time.Now()
	now := start
	if v.Now != nil {
		now = v.Now()
	}
	res, k, err := v.verify(ctx, c, now)
	if err != nil {
		return res, nil, err
	}
	if !res.matched {
		res = v.limit(res, c.LimitAddr, c.Key != "" && res.Reason.Guess(), now)
	}
	if res.Valid && v.Usage != nil {
		v.Usage.Record(res.Namespace, res.Name, now)
	}
	if v.Metrics != nil && !exchange {
		v.Metrics.Observe(res, time.Since(start))
	}
	return res, k, nil
}

// limit is the limiter's rule for an answer whose secret matched no key
// material: rate_limited from a blocked address, otherwise res, a guess
// counted against addr.
func (v *Verifier) limit(res Result, addr netip.Addr, guess bool, now time.Time) Result {
	if blocked, wait := v.Limiter.Blocked(addr, now); blocked {
		return Result{Reason: ReasonRateLimited, RetryAfter: wait}
	}
	if guess {
		v.Limiter.Fail(addr, now)
	}
	return res
}

func (v *Verifier) verify(ctx context.Context, c Call, now time.Time) (Result, *keyward.AccessKey, error) {
	if c.Key == "" {
		return Result{Reason: ReasonMalformed}, nil, nil
	}
	pk, err := keyformat.Parse(c.Key)
	if err != nil {
		return Result{Reason: ReasonMalformed}, nil, nil
	}
	req := Request{Key: pk, Addr: c.Addr, Scope: c.Scope, Access: c.Access, Pinned: c.Pinned, Namespaces: c.Namespaces, Refusal: c.Refusal}
	keys, err := v.Store.AccessKeysByID(ctx, pk.ID)
	if err != nil {
		return Result{}, nil, err
	}
	for _, k := range keys {
		if k.Status.KeyID != pk.ID && (k.Status.PreviousKey == nil || k.Status.PreviousKey.KeyID != pk.ID) {
			continue
		}
		// A wrong secret for a known ID answers unknown after the same
		// work as an unknown ID (one lookup, one hash comparison), so the
		// answer's timing does not tell which IDs exist: the Application
		// and the tenant are read only for matching material (or for a
		// revoked key whose hash is gone, which Decide answers by ID).
		if !revokedWithoutHash(k, pk.ID) {
			if _, ok := matchMaterial(pk, k, now); !ok {
				continue
			}
		}
		in, err := v.input(ctx, k, now)
		if err != nil {
			return Result{}, nil, err
		}
		res := Decide(req, in)
		if res.Reason != ReasonUnknown || res.matched {
			return res, k, nil
		}
	}
	if len(keys) == 0 {
		return Decide(req, Input{Now: now}), nil, nil
	}
	return Result{Reason: ReasonUnknown}, nil, nil
}

// input reads what a decision about k looks at besides the request: its
// Application (only the one it belongs to: one re-created under the same
// name is not, policy.ApplicationOf) and its tenant's policy. Verify, the
// token exchange and introspection all decide from it, so they cannot
// drift apart.
func (v *Verifier) input(ctx context.Context, k *keyward.AccessKey, now time.Time) (Input, error) {
	app, err := v.Store.Application(ctx, k.Namespace, k.Spec.Application)
	if err != nil {
		return Input{}, err
	}
	ts, err := v.Store.TenantSettings(ctx, k.Namespace)
	if err != nil {
		return Input{}, err
	}
	return Input{AccessKey: k, App: policy.ApplicationOf(k, app), Tenant: policy.TenantFrom(ts, v.APIKeysEnabledByDefault), Now: now}, nil
}

// Held answers for a key known by namespace, name and key ID, without its
// secret (DecideHeld): what introspection asks of the key that obtained a
// token. Unknown when no such key holds that ID.
func (v *Verifier) Held(ctx context.Context, namespace, name, keyID string, now time.Time) (Result, error) {
	keys, err := v.Store.AccessKeysByID(ctx, keyID)
	if err != nil {
		return Result{}, err
	}
	for _, k := range keys {
		if k.Namespace != namespace || k.Name != name {
			continue
		}
		in, err := v.input(ctx, k, now)
		if err != nil {
			return Result{}, err
		}
		return DecideHeld(keyID, in), nil
	}
	return Result{Reason: ReasonUnknown}, nil
}

// revokedWithoutHash is Decide's case of a revoked key whose hash was
// destroyed: it is answered revoked by its (public) ID alone.
func revokedWithoutHash(k *keyward.AccessKey, id string) bool {
	return (k.Spec.Revoked || k.Status.Phase == keyward.PhaseRevoked) && k.Status.SecretHash == "" && k.Status.KeyID == id
}
