package token

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/verify"
)

// jtiBytes is the randomness of a token's ID.
const jtiBytes = 16

// Claims are the claims of an access token (docs/tokens.md).
type Claims struct {
	Issuer      string           `json:"iss"`
	Subject     string           `json:"sub"`
	Audience    jwt.Audience     `json:"aud"`
	IssuedAt    *jwt.NumericDate `json:"iat"`
	NotBefore   *jwt.NumericDate `json:"nbf"`
	Expiry      *jwt.NumericDate `json:"exp"`
	ID          string           `json:"jti"`
	Scope       string           `json:"scope"`
	Namespace   string           `json:"namespace"`
	Application string           `json:"application"`
	Group       string           `json:"group"`
	Team        string           `json:"team,omitempty"`
	Owner       string           `json:"owner,omitempty"`
	KeyID       string           `json:"key_id"`
}

// ParseScopeParam reads the scope parameter: space-separated
// <scope>:ReadOnly|ReadWrite. nil for an empty parameter.
func ParseScopeParam(s string) ([]keyward.Scope, error) {
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return nil, nil
	}
	out := make([]keyward.Scope, 0, len(fields))
	seen := map[string]bool{}
	for _, f := range fields {
		name, access, ok := strings.Cut(f, ":")
		a := keyward.AccessLevel(access)
		if !ok || name == "" || (a != keyward.ReadOnly && a != keyward.ReadWrite) {
			return nil, fmt.Errorf("scope %q is not <scope>:ReadOnly or <scope>:ReadWrite", f)
		}
		if seen[name] {
			return nil, fmt.Errorf("scope %q is asked for twice", name)
		}
		seen[name] = true
		out = append(out, keyward.Scope{Name: name, Access: a})
	}
	return out, nil
}

// NarrowScopes is the scopes of a token: the key's granted scopes
// (verify.Result.Scopes) when
// none are requested, else the requested ones, each of which the granted
// scopes must allow (narrowing; never widening).
func NarrowScopes(granted, requested []keyward.Scope) ([]keyward.Scope, error) {
	if requested == nil {
		// verify.GrantedScopes spells every access out.
		return slices.Clone(granted), nil
	}
	for _, s := range requested {
		if !verify.ScopeGranted(granted, s.Name, s.Access) {
			return nil, fmt.Errorf("scope %s:%s is not granted to this key", s.Name, s.Access)
		}
	}
	return requested, nil
}

// FormatScopeParam writes scopes as the scope parameter and claim.
func FormatScopeParam(scopes []keyward.Scope) string { return verify.JoinScopes(scopes, ' ') }

// Expiry is when a token issued at now for the key material keyID of
// k expires: now+ttl, never past the key's effective expiry (which the
// lifetime limit bounds) nor, for the previous key of a rotation, the end
// of its grace period. JWT times are whole seconds: rounded down.
func Expiry(now time.Time, ttl time.Duration, keyID string, k *keyward.AccessKey) time.Time {
	exp := now.Add(ttl)
	if e := verify.EffectiveExpiry(k); e != nil && e.Time.Before(exp) {
		exp = e.Time
	}
	if pk := k.Status.PreviousKey; pk != nil && pk.KeyID == keyID && keyID != k.Status.KeyID && pk.ValidUntil.Time.Before(exp) {
		exp = pk.ValidUntil.Time
	}
	return exp.Truncate(time.Second)
}

// NewClaims are the claims of a token for a verified key; ok is false when
// the token would expire at once (the key's expiry is less than a second away).
func NewClaims(issuer string, ttl time.Duration, now time.Time, res verify.Result, k *keyward.AccessKey, scopes []keyward.Scope, jti string) (Claims, bool) {
	exp := Expiry(now, ttl, res.KeyID, k)
	iat := now.Truncate(time.Second)
	if !exp.After(iat) {
		return Claims{}, false
	}
	return Claims{
		Issuer: issuer, Subject: res.Namespace + "/" + res.Name, Audience: jwt.Audience{TenantAudience(issuer, res.Namespace)},
		IssuedAt: jwt.NewNumericDate(iat), NotBefore: jwt.NewNumericDate(iat), Expiry: jwt.NewNumericDate(exp),
		ID: jti, Scope: FormatScopeParam(scopes), Namespace: res.Namespace, Application: res.Application,
		Group: res.Group, Team: res.Team, Owner: res.Owner, KeyID: res.KeyID,
	}, true
}

// TenantAudience is the aud of the tokens of a tenant's keys: one value
// per namespace (RFC 8725 §3.9), so that a JWT gateway in front of one
// tenant's API accepts no other tenant's token by listing only it.
func TenantAudience(issuer, namespace string) string {
	return strings.TrimSuffix(issuer, "/") + "/namespaces/" + namespace
}

func newJTI() string {
	var b [jtiBytes]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
