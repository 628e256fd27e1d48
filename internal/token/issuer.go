// Package token is Keyward's OAuth 2.0 token service (docs/tokens.md): a
// client exchanges its access key for a short-lived signed JWT at
// /v1/token (client credentials), and a resource server asks
// /v1/introspect whether a token is still good. The key is authenticated
// and judged by the verifier (package verify) through the same lookup and
// decision as /v1/verify; this package adds the OAuth wire format, the
// claims, and the signing keys, which it keeps in a Secret (KeyRing).
package token

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Defaults of the token service's flags (docs/tokens.md), defined once.
const (
	DefaultTTL             = 15 * time.Minute
	DefaultSigningSecret   = "keyward-token-signing-keys"
	DefaultSigningRotation = 720 * time.Hour
	DefaultSigningRefresh  = 30 * time.Second
	DefaultJWKSMaxAge      = 5 * time.Minute
	discoveryCacheControl  = "public, max-age=300"
)

// Issuer signs access tokens and checks the ones presented to it.
type Issuer struct {
	// URL is iss, the base of each tenant's aud (TenantAudience), and the
	// base of every endpoint URL in the discovery document.
	URL string
	// TTL is the longest lifetime of a token.
	TTL  time.Duration
	Keys *KeyRing
	// JWKSMaxAge is the max-age of the JWKS answer.
	JWKSMaxAge time.Duration
	discovery  []byte
}

// NewIssuer checks the issuer URL and prepares the discovery document.
func NewIssuer(issuer string, ttl, jwksMaxAge time.Duration, keys *KeyRing) (*Issuer, error) {
	u, err := url.Parse(issuer)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("--token-issuer %q must be an http(s) URL without query or fragment", issuer)
	}
	if ttl < time.Second {
		return nil, fmt.Errorf("--token-ttl must be at least 1s, not %s", ttl)
	}
	issuer = strings.TrimSuffix(issuer, "/")
	t := &Issuer{URL: issuer, TTL: ttl, Keys: keys, JWKSMaxAge: jwksMaxAge}
	auth := []string{"client_secret_basic", "client_secret_post"}
	alg := []string{string(SigningAlgorithm)}
	t.discovery, err = json.Marshal(Discovery{
		Issuer: issuer, TokenEndpoint: issuer + PathToken, JWKSURI: issuer + PathJWKS,
		IntrospectionEndpoint: issuer + PathIntrospect, GrantTypesSupported: []string{GrantClientCredentials},
		TokenEndpointAuthMethods: auth, IntrospectionEndpointAuthMethods: auth,
		IDTokenSigningAlgValuesSupported: alg, TokenSigningAlgValuesSupported: alg,
		ResponseTypesSupported: []string{"token"}, SubjectTypesSupported: []string{"public"},
		ClaimsSupported: []string{"iss", "sub", "aud", "iat", "nbf", "exp", "jti", "scope",
			"namespace", "application", "group", "team", "owner", "key_id"},
	})
	return t, err
}

// Sign signs claims with the key that signs at now.
func (t *Issuer) Sign(claims Claims, now time.Time) (string, error) {
	k := t.Keys.signer(now)
	if k == nil {
		return "", errors.New("no token signing key yet")
	}
	// The claims are one struct: marshal them once and sign the bytes
	// (jwt.Signed's builder would round-trip them through a map).
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	jws, err := k.signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

// Parse checks a token's signature against the keys published at now, its
// issuer, audience and times, and returns its claims.
func (t *Issuer) Parse(token string, now time.Time) (Claims, bool) {
	var c Claims
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{SigningAlgorithm})
	if err != nil || len(tok.Headers) != 1 {
		return c, false
	}
	pub := t.Keys.publicKey(tok.Headers[0].KeyID, now)
	if pub == nil {
		return c, false
	}
	if err := tok.Claims(pub.Key, &c); err != nil {
		return c, false
	}
	if c.Issuer != t.URL || !c.Audience.Contains(TenantAudience(t.URL, c.Namespace)) || c.Expiry == nil || c.NotBefore == nil || c.IssuedAt == nil ||
		!now.Before(c.Expiry.Time()) || now.Before(c.NotBefore.Time()) {
		return c, false
	}
	return c, true
}
