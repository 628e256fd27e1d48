package verify

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/policy"
)

// Endpoints of short-lived access tokens (docs/tokens.md), on the verifier's listener.
const (
	PathToken      = "/v1/token"
	PathIntrospect = "/v1/introspect"
	PathDiscovery  = "/.well-known/openid-configuration"
	// PathASMetadata serves the same document as PathDiscovery (RFC 8414).
	PathASMetadata = "/.well-known/oauth-authorization-server"
	PathJWKS       = "/.well-known/jwks.json"

	GrantClientCredentials = "client_credentials"
	TokenTypeBearer        = "Bearer"

	// OAuth 2.0 error codes (RFC 6749 §5.2), and slow_down for a client
	// address the failure limiter has blocked (RFC 6749 has no such code;
	// slow_down is RFC 8628's, sent with 429 and Retry-After).
	ErrInvalidRequest          = "invalid_request"
	ErrInvalidClient           = "invalid_client"
	ErrUnsupportedGrantType    = "unsupported_grant_type"
	ErrInvalidScope            = "invalid_scope"
	ErrSlowDown                = "slow_down"
	ErrTemporarilyUnavailable  = "temporarily_unavailable"
	wwwAuthenticateBasic       = `Basic realm="keyward"`
	formContentType            = "application/x-www-form-urlencoded"
	maxFormBytes               = 8 << 10
	tokenResultIssued          = "issued"
	jtiBytes                   = 16
	defaultTokenSigningNSEnv   = "POD_NAMESPACE"
	discoveryCacheControlValue = "public, max-age=300"
)

var noCache = []string{"no-cache"}

// TokenClaims are the claims of an access token (docs/tokens.md).
type TokenClaims struct {
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

// TokenResponse is the body of a successful POST /v1/token (RFC 6749 §5.1).
type TokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	Scope       string `json:"scope"`
}

// OAuthError is the body of an error answer (RFC 6749 §5.2).
type OAuthError struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// Introspection is the body of POST /v1/introspect (RFC 7662 §2.2): only
// Active when the token is not active.
type Introspection struct {
	Active      bool   `json:"active"`
	Scope       string `json:"scope,omitempty"`
	ClientID    string `json:"client_id,omitempty"`
	Username    string `json:"username,omitempty"`
	TokenType   string `json:"token_type,omitempty"`
	Exp         int64  `json:"exp,omitempty"`
	Iat         int64  `json:"iat,omitempty"`
	Nbf         int64  `json:"nbf,omitempty"`
	Sub         string `json:"sub,omitempty"`
	Aud         string `json:"aud,omitempty"`
	Iss         string `json:"iss,omitempty"`
	Jti         string `json:"jti,omitempty"`
	Namespace   string `json:"namespace,omitempty"`
	Application string `json:"application,omitempty"`
	Group       string `json:"group,omitempty"`
	Team        string `json:"team,omitempty"`
	Owner       string `json:"owner,omitempty"`
	KeyID       string `json:"key_id,omitempty"`
}

// Discovery is the OpenID Provider / OAuth 2.0 Authorization Server
// metadata document (only what applies to client credentials).
type Discovery struct {
	Issuer                           string   `json:"issuer"`
	TokenEndpoint                    string   `json:"token_endpoint"`
	JWKSURI                          string   `json:"jwks_uri"`
	IntrospectionEndpoint            string   `json:"introspection_endpoint"`
	GrantTypesSupported              []string `json:"grant_types_supported"`
	TokenEndpointAuthMethods         []string `json:"token_endpoint_auth_methods_supported"`
	IntrospectionEndpointAuthMethods []string `json:"introspection_endpoint_auth_methods_supported"`
	IDTokenSigningAlgValuesSupported []string `json:"id_token_signing_alg_values_supported"`
	TokenSigningAlgValuesSupported   []string `json:"token_signing_alg_values_supported"`
	ResponseTypesSupported           []string `json:"response_types_supported"`
	SubjectTypesSupported            []string `json:"subject_types_supported"`
	ClaimsSupported                  []string `json:"claims_supported"`
}

// Tokens issues and introspects access tokens.
type Tokens struct {
	// Issuer is iss, the default aud, and the base of every endpoint URL in
	// the discovery document.
	Issuer string
	// TTL is the longest lifetime of a token.
	TTL  time.Duration
	Keys *KeyRing
	// JWKSMaxAge is the max-age of the JWKS answer.
	JWKSMaxAge time.Duration
	discovery  []byte
}

// NewTokens checks the issuer URL and prepares the discovery document.
func NewTokens(issuer string, ttl, jwksMaxAge time.Duration, keys *KeyRing) (*Tokens, error) {
	u, err := url.Parse(issuer)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("--token-issuer %q must be an http(s) URL without query or fragment", issuer)
	}
	if ttl < time.Second {
		return nil, fmt.Errorf("--token-ttl must be at least 1s, not %s", ttl)
	}
	issuer = strings.TrimSuffix(issuer, "/")
	t := &Tokens{Issuer: issuer, TTL: ttl, Keys: keys, JWKSMaxAge: jwksMaxAge}
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

// NarrowScopes is the scopes of a token: the key's granted scopes when
// none are requested, else the requested ones, each of which the granted
// scopes must allow (narrowing; never widening).
func NarrowScopes(granted, requested []keyward.Scope) ([]keyward.Scope, error) {
	if requested == nil {
		out := make([]keyward.Scope, len(granted))
		for i, s := range granted {
			out[i] = keyward.Scope{Name: s.Name, Access: s.Access.OrDefault()}
		}
		return out, nil
	}
	for _, s := range requested {
		if !scopeGranted(granted, s.Name, s.Access) {
			return nil, fmt.Errorf("scope %s:%s is not granted to this key", s.Name, s.Access)
		}
	}
	return requested, nil
}

// FormatScopeParam writes scopes as the scope parameter and claim.
func FormatScopeParam(scopes []keyward.Scope) string { return joinScopes(scopes, ' ') }

// TokenExpiry is when a token issued at now for the key material keyID of
// k expires: now+ttl, never past the key's effective expiry (which the
// lifetime limit bounds) nor, for the previous key of a rotation, the end
// of its grace period. JWT times are whole seconds: rounded down.
func TokenExpiry(now time.Time, ttl time.Duration, keyID string, k *keyward.AccessKey) time.Time {
	exp := now.Add(ttl)
	if e := policy.VerifiableUntil(k); e != nil && e.Time.Before(exp) {
		exp = e.Time
	}
	if pk := k.Status.PreviousKey; pk != nil && pk.KeyID == keyID && keyID != k.Status.KeyID && pk.ValidUntil.Time.Before(exp) {
		exp = pk.ValidUntil.Time
	}
	return exp.Truncate(time.Second)
}

// NewClaims are the claims of a token for a verified key; ok is false when
// the token would expire at once (the key's expiry is less than a second away).
func NewClaims(issuer string, ttl time.Duration, now time.Time, res Result, k *keyward.AccessKey, scopes []keyward.Scope, jti string) (TokenClaims, bool) {
	exp := TokenExpiry(now, ttl, res.KeyID, k)
	iat := now.Truncate(time.Second)
	if !exp.After(iat) {
		return TokenClaims{}, false
	}
	return TokenClaims{
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

// Sign signs claims with the key that signs at now.
func (t *Tokens) Sign(claims TokenClaims, now time.Time) (string, error) {
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
func (t *Tokens) Parse(token string, now time.Time) (TokenClaims, bool) {
	var c TokenClaims
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
	if c.Issuer != t.Issuer || !c.Audience.Contains(TenantAudience(t.Issuer, c.Namespace)) || c.Expiry == nil || c.NotBefore == nil || c.IssuedAt == nil ||
		!now.Before(c.Expiry.Time()) || now.Before(c.NotBefore.Time()) {
		return c, false
	}
	return c, true
}

// tokenMux adds the token endpoints to mux.
func (h *Handler) tokenMux(mux *http.ServeMux) {
	mux.HandleFunc("POST "+PathToken, h.serveToken)
	mux.HandleFunc("POST "+PathIntrospect, h.serveIntrospect)
	mux.HandleFunc("GET "+PathDiscovery, h.serveDiscovery)
	mux.HandleFunc("GET "+PathASMetadata, h.serveDiscovery)
	mux.HandleFunc("GET "+PathJWKS, h.serveJWKS)
}

func (h *Handler) serveDiscovery(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", discoveryCacheControlValue)
	_, _ = w.Write(h.Tokens.discovery)
}

func (h *Handler) serveJWKS(w http.ResponseWriter, _ *http.Request) {
	set, ok := h.Tokens.Keys.JWKS(h.Verifier.now())
	if !ok {
		oauthError(w, http.StatusServiceUnavailable, ErrTemporarilyUnavailable, "the signing keys are not loaded yet")
		return
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(int(h.Tokens.JWKSMaxAge/time.Second)))
	_ = json.NewEncoder(w).Encode(set)
}

// oauthError answers an RFC 6749 §5.2 error.
func oauthError(w http.ResponseWriter, status int, code, desc string) {
	hdr := w.Header()
	hdr["Cache-Control"] = noStore
	hdr["Pragma"] = noCache
	hdr.Set("Content-Type", "application/json")
	switch status {
	case http.StatusUnauthorized:
		hdr.Set(headerWWWAuthenticate, wwwAuthenticateBasic)
	case http.StatusServiceUnavailable:
		hdr.Set(headerRetryAfter, "1")
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(OAuthError{Error: code, Description: desc})
}

// readForm reads a form-encoded POST body; every parameter at most once
// (RFC 6749 §3.2). The message never quotes the body.
func readForm(w http.ResponseWriter, r *http.Request) (url.Values, string) {
	ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || ct != formContentType {
		return nil, "the body must be " + formContentType
	}
	if r.URL.RawQuery != "" {
		return nil, "parameters go in the body, not in the URL"
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return nil, "the body is not a valid form of at most " + strconv.Itoa(maxFormBytes) + " bytes"
	}
	for name, v := range r.PostForm {
		if len(v) > 1 {
			return nil, "parameter " + strconv.Quote(name) + " is given more than once"
		}
	}
	return r.PostForm, ""
}

// clientCredentials reads client_id and client_secret from HTTP Basic or
// the form (RFC 6749 §2.3.1); not both. bad is an invalid_request message.
func clientCredentials(r *http.Request, form url.Values) (id, secret string, present bool, bad string) {
	bid, bsecret, basic := r.BasicAuth()
	_, formID := form["client_id"]
	_, formSecret := form["client_secret"]
	if basic && (formID && form.Get("client_id") != "" || formSecret) {
		return "", "", false, "use one client authentication method: HTTP Basic or form parameters"
	}
	if basic {
		// RFC 6749 §2.3.1: both are form-urlencoded before Basic encoding.
		var err1, err2 error
		id, err1 = url.QueryUnescape(bid)
		secret, err2 = url.QueryUnescape(bsecret)
		if err1 != nil || err2 != nil {
			return "", "", true, ""
		}
		return id, secret, true, ""
	}
	if r.Header.Get(HeaderAuthorization) != "" {
		return "", "", true, "" // another scheme: invalid_client
	}
	id, secret = form.Get("client_id"), form.Get("client_secret")
	return id, secret, id != "" || secret != "", ""
}

// authenticateClient verifies the client's key exactly as /v1/verify
// would from the same client address; a client_id that is not the key's
// ID counts as a guess, like an unknown key. It answers the caller itself
// unless the key verified.
func (h *Handler) authenticateClient(w http.ResponseWriter, r *http.Request, form url.Values, now time.Time) (Result, netip.Addr, bool) {
	addr := h.clientAddr(r)
	v := h.Verifier
	id, secret, present, bad := clientCredentials(r, form)
	if bad != "" {
		oauthError(w, http.StatusBadRequest, ErrInvalidRequest, bad)
		return Result{Reason: ReasonMalformed}, addr, false
	}
	var res Result
	switch pk, err := keyformat.Parse(secret); {
	case !present || secret == "":
		res = Result{Reason: ReasonMalformed}
	case err == nil && pk.ID != id:
		res = v.limit(Result{Reason: ReasonUnknown}, addr, true, now)
	default:
		var verr error
		res, verr = v.Verify(r.Context(), Call{Key: secret, Addr: addr, LimitAddr: addr, Exchange: true})
		if verr != nil {
			h.unavailableOAuth(w, verr)
			return res, addr, false
		}
	}
	if res.Reason == ReasonRateLimited {
		w.Header().Set(headerRetryAfter, retryAfter(res.RetryAfter))
		oauthError(w, http.StatusTooManyRequests, ErrSlowDown, "too many failed attempts from this address")
		return res, addr, false
	}
	if !res.Valid {
		oauthError(w, http.StatusUnauthorized, ErrInvalidClient, "client authentication failed")
		return res, addr, false
	}
	return res, addr, true
}

func (h *Handler) unavailableOAuth(w http.ResponseWriter, err error) {
	h.Log.Error(err, "reading the cache")
	oauthError(w, http.StatusServiceUnavailable, ErrTemporarilyUnavailable, "the verifier cannot read its cache yet")
}

func (h *Handler) countToken(res Result, result string) {
	if m := h.Verifier.Metrics; m != nil {
		m.ObserveToken(res.Namespace, res.Application, result)
	}
}

func (h *Handler) serveToken(w http.ResponseWriter, r *http.Request) {
	now := h.Verifier.now()
	t := h.Tokens
	if !t.Keys.Ready() {
		oauthError(w, http.StatusServiceUnavailable, ErrTemporarilyUnavailable, "the signing keys are not loaded yet")
		return
	}
	form, bad := readForm(w, r)
	if bad != "" {
		h.countToken(Result{}, ErrInvalidRequest)
		oauthError(w, http.StatusBadRequest, ErrInvalidRequest, bad)
		return
	}
	switch gt := form.Get("grant_type"); gt {
	case GrantClientCredentials:
	case "":
		h.countToken(Result{}, ErrInvalidRequest)
		oauthError(w, http.StatusBadRequest, ErrInvalidRequest, "grant_type is missing")
		return
	default:
		h.countToken(Result{}, ErrUnsupportedGrantType)
		oauthError(w, http.StatusBadRequest, ErrUnsupportedGrantType, "only grant_type=client_credentials is supported")
		return
	}
	requested, err := ParseScopeParam(form.Get("scope"))
	if err != nil {
		h.countToken(Result{}, ErrInvalidScope)
		oauthError(w, http.StatusBadRequest, ErrInvalidScope, err.Error())
		return
	}
	res, _, ok := h.authenticateClient(w, r, form, now)
	if !ok {
		if res.Reason != "" {
			h.countToken(res, string(res.Reason))
		}
		return
	}
	k, err := h.Verifier.Store.AccessKey(r.Context(), res.Namespace, res.Name)
	if err != nil {
		h.unavailableOAuth(w, err)
		return
	}
	if k == nil {
		h.countToken(res, string(ReasonUnknown))
		oauthError(w, http.StatusUnauthorized, ErrInvalidClient, "client authentication failed")
		return
	}
	scopes, err := NarrowScopes(res.Scopes, requested)
	if err != nil {
		h.countToken(res, ErrInvalidScope)
		oauthError(w, http.StatusBadRequest, ErrInvalidScope, err.Error())
		return
	}
	claims, ok := NewClaims(t.Issuer, t.TTL, now, res, k, scopes, newJTI())
	if !ok {
		h.countToken(res, string(ReasonExpired))
		oauthError(w, http.StatusUnauthorized, ErrInvalidClient, "client authentication failed")
		return
	}
	token, err := t.Sign(claims, now)
	if err != nil {
		h.unavailableOAuth(w, err)
		return
	}
	h.countToken(res, tokenResultIssued)
	hdr := w.Header()
	hdr["Cache-Control"] = noStore
	hdr["Pragma"] = noCache
	hdr.Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(TokenResponse{AccessToken: token, TokenType: TokenTypeBearer,
		ExpiresIn: int64(claims.Expiry.Time().Sub(now) / time.Second), Scope: claims.Scope})
}

func (h *Handler) serveIntrospect(w http.ResponseWriter, r *http.Request) {
	now := h.Verifier.now()
	if !h.Tokens.Keys.Ready() {
		oauthError(w, http.StatusServiceUnavailable, ErrTemporarilyUnavailable, "the signing keys are not loaded yet")
		return
	}
	form, bad := readForm(w, r)
	if bad == "" && form.Get("token") == "" {
		bad = "token is missing"
	}
	if bad != "" {
		oauthError(w, http.StatusBadRequest, ErrInvalidRequest, bad)
		return
	}
	caller, _, ok := h.authenticateClient(w, r, form, now)
	if !ok {
		return
	}
	out, err := h.introspect(r, form.Get("token"), caller.Namespace, now)
	if err != nil {
		h.unavailableOAuth(w, err)
		return
	}
	hdr := w.Header()
	hdr["Cache-Control"] = noStore
	hdr["Pragma"] = noCache
	hdr.Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// introspect answers for a token presented by a caller of namespace: active
// when its signature, issuer and times are good, it belongs to namespace,
// and the key that obtained it would still verify now (DecideHeld, from the
// cache) and still grants every scope of the token.
func (h *Handler) introspect(r *http.Request, token, namespace string, now time.Time) (Introspection, error) {
	inactive := Introspection{}
	c, ok := h.Tokens.Parse(token, now)
	if !ok || c.Namespace != namespace || c.Subject != c.Namespace+"/"+subjectName(c.Subject) {
		return inactive, nil
	}
	scopes, err := ParseScopeParam(c.Scope)
	if err != nil {
		return inactive, nil
	}
	res, err := h.Verifier.Held(r.Context(), c.Namespace, subjectName(c.Subject), c.KeyID, now)
	if err != nil || !res.Valid {
		return inactive, err
	}
	for _, s := range scopes {
		if !scopeGranted(res.Scopes, s.Name, s.Access) {
			return inactive, nil
		}
	}
	// The key's identity as it is now (its Application's group may have
	// changed since the token was issued), as /v1/verify would answer.
	return Introspection{Active: true, Scope: c.Scope, ClientID: c.KeyID, Username: res.Owner, TokenType: TokenTypeBearer,
		Exp: c.Expiry.Time().Unix(), Iat: c.IssuedAt.Time().Unix(), Nbf: c.NotBefore.Time().Unix(),
		Sub: c.Subject, Aud: TenantAudience(h.Tokens.Issuer, c.Namespace), Iss: c.Issuer, Jti: c.ID, Namespace: res.Namespace,
		Application: res.Application, Group: res.Group, Team: res.Team, Owner: res.Owner, KeyID: c.KeyID}, nil
}

func subjectName(sub string) string {
	_, name, _ := strings.Cut(sub, "/")
	return name
}
