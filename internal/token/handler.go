package token

import (
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/verify"
	"keyward.dev/keyward/internal/verify/wire"
)

// Verifier is what the token service asks of the verifier
// (verify.Verifier): both answer from the same lookup and decision as
// /v1/verify, so a token is issued and introspected exactly as its key
// would verify.
type Verifier interface {
	// Authenticate verifies the key a client authenticates with, from
	// addr, as a use of the key; the AccessKey is the one that verified.
	Authenticate(ctx context.Context, clientID, secret string, addr netip.Addr) (verify.Result, *keyward.AccessKey, error)
	// Held judges now the key that obtained a token, known by its ID
	// without its secret.
	Held(ctx context.Context, namespace, name, keyID string, now time.Time) (verify.Result, error)
}

// Handler serves the token endpoints: POST /v1/token, POST /v1/introspect,
// the discovery document and the JWKS.
type Handler struct {
	Issuer   *Issuer
	Verifier Verifier
	// Trusted are the proxies whose X-Forwarded-For / X-Real-IP are
	// believed: the client address is read as for /v1/verify.
	Trusted wire.TrustedProxies
	// Metrics counts token requests; nil counts nothing.
	Metrics *Metrics
	Log     logr.Logger
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

func (h *Handler) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

// Routes adds the token endpoints to mux.
func (h *Handler) Routes(mux *http.ServeMux) {
	mux.HandleFunc("POST "+PathToken, h.serveToken)
	mux.HandleFunc("POST "+PathIntrospect, h.serveIntrospect)
	mux.HandleFunc("GET "+PathDiscovery, h.serveDiscovery)
	mux.HandleFunc("GET "+PathASMetadata, h.serveDiscovery)
	mux.HandleFunc("GET "+PathJWKS, h.serveJWKS)
}

// Mux is a mux with h's endpoints alone.
func (h *Handler) Mux() *http.ServeMux {
	mux := http.NewServeMux()
	h.Routes(mux)
	return mux
}

// errTLSRequired is the invalid_request message of a plaintext exchange.
const errTLSRequired = "TLS is required"

// RequireTLS refuses plaintext at the token and introspection endpoints
// from a client that is not on loopback (RFC 6749 §2.3.1: the token
// endpoint MUST require TLS), before anything of the request is read.
// Every other path passes to next. allowPlaintext (--token-allow-plaintext)
// lets plaintext through.
func RequireTLS(next http.Handler, allowPlaintext bool) http.Handler {
	if allowPlaintext {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil && !fromLoopback(r.RemoteAddr) {
			if p := path.Clean("/" + r.URL.Path); p == PathToken || p == PathIntrospect {
				oauthError(w, http.StatusBadRequest, ErrInvalidRequest, errTLSRequired)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func fromLoopback(remote string) bool {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return false
	}
	return ap.Addr().Unmap().IsLoopback()
}

func (h *Handler) serveDiscovery(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", discoveryCacheControl)
	_, _ = w.Write(h.Issuer.discovery)
}

func (h *Handler) serveJWKS(w http.ResponseWriter, _ *http.Request) {
	set, ok := h.Issuer.Keys.JWKS(h.now())
	if !ok {
		oauthError(w, http.StatusServiceUnavailable, ErrTemporarilyUnavailable, "the signing keys are not loaded yet")
		return
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(int(h.Issuer.JWKSMaxAge/time.Second)))
	_ = json.NewEncoder(w).Encode(set)
}

// authenticateClient authenticates the client by its key
// (Verifier.Authenticate, from the client address /v1/verify would read).
// It answers the caller itself unless the key verified.
func (h *Handler) authenticateClient(w http.ResponseWriter, r *http.Request, form url.Values) (verify.Result, *keyward.AccessKey, bool) {
	id, secret, _, bad := clientCredentials(r, form)
	if bad != "" {
		oauthError(w, http.StatusBadRequest, ErrInvalidRequest, bad)
		return verify.Result{Reason: verify.ReasonMalformed}, nil, false
	}
	res, k, err := h.Verifier.Authenticate(r.Context(), id, secret, wire.ClientAddrOf(r, h.Trusted))
	if err != nil {
		h.unavailable(w, err)
		return res, nil, false
	}
	if res.Reason == verify.ReasonRateLimited {
		w.Header().Set(verify.HeaderRetryAfter, verify.RetryAfter(res.RetryAfter))
		oauthError(w, http.StatusTooManyRequests, ErrSlowDown, "too many failed attempts from this address")
		return res, nil, false
	}
	if !res.Valid {
		oauthError(w, http.StatusUnauthorized, ErrInvalidClient, "client authentication failed")
		return res, nil, false
	}
	return res, k, true
}

func (h *Handler) unavailable(w http.ResponseWriter, err error) {
	h.Log.Error(err, "reading the cache")
	oauthError(w, http.StatusServiceUnavailable, ErrTemporarilyUnavailable, "the verifier cannot read its cache yet")
}

func (h *Handler) count(res verify.Result, result string) {
	if h.Metrics != nil {
		h.Metrics.Observe(res.Namespace, res.Application, result)
	}
}

func (h *Handler) serveToken(w http.ResponseWriter, r *http.Request) {
	now := h.now()
	t := h.Issuer
	if !t.Keys.Ready() {
		oauthError(w, http.StatusServiceUnavailable, ErrTemporarilyUnavailable, "the signing keys are not loaded yet")
		return
	}
	form, bad := readForm(w, r)
	if bad != "" {
		h.count(verify.Result{}, ErrInvalidRequest)
		oauthError(w, http.StatusBadRequest, ErrInvalidRequest, bad)
		return
	}
	switch gt := form.Get("grant_type"); gt {
	case GrantClientCredentials:
	case "":
		h.count(verify.Result{}, ErrInvalidRequest)
		oauthError(w, http.StatusBadRequest, ErrInvalidRequest, "grant_type is missing")
		return
	default:
		h.count(verify.Result{}, ErrUnsupportedGrantType)
		oauthError(w, http.StatusBadRequest, ErrUnsupportedGrantType, "only grant_type=client_credentials is supported")
		return
	}
	requested, err := ParseScopeParam(form.Get("scope"))
	if err != nil {
		h.count(verify.Result{}, ErrInvalidScope)
		oauthError(w, http.StatusBadRequest, ErrInvalidScope, err.Error())
		return
	}
	res, k, ok := h.authenticateClient(w, r, form)
	if !ok {
		if res.Reason != "" {
			h.count(res, string(res.Reason))
		}
		return
	}
	scopes, err := NarrowScopes(res.Scopes, requested)
	if err != nil {
		h.count(res, ErrInvalidScope)
		oauthError(w, http.StatusBadRequest, ErrInvalidScope, err.Error())
		return
	}
	claims, ok := NewClaims(t.URL, t.TTL, now, res, k, scopes, newJTI())
	if !ok {
		h.count(res, string(verify.ReasonExpired))
		oauthError(w, http.StatusUnauthorized, ErrInvalidClient, "client authentication failed")
		return
	}
	token, err := t.Sign(claims, now)
	if err != nil {
		h.unavailable(w, err)
		return
	}
	h.count(res, resultIssued)
	noStoreJSON(w)
	_ = json.NewEncoder(w).Encode(Response{AccessToken: token, TokenType: TypeBearer,
		ExpiresIn: int64(claims.Expiry.Time().Sub(now) / time.Second), Scope: claims.Scope})
}

func (h *Handler) serveIntrospect(w http.ResponseWriter, r *http.Request) {
	now := h.now()
	if !h.Issuer.Keys.Ready() {
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
	caller, _, ok := h.authenticateClient(w, r, form)
	if !ok {
		return
	}
	out, err := h.introspect(r.Context(), form.Get("token"), caller.Namespace, now)
	if err != nil {
		h.unavailable(w, err)
		return
	}
	noStoreJSON(w)
	_ = json.NewEncoder(w).Encode(out)
}

// introspect answers for a token presented by a caller of namespace: active
// when its signature, issuer and times are good, it belongs to namespace,
// and the key that obtained it would still verify now (Verifier.Held, from
// the cache) and still grants every scope of the token.
func (h *Handler) introspect(ctx context.Context, token, namespace string, now time.Time) (Introspection, error) {
	inactive := Introspection{}
	c, ok := h.Issuer.Parse(token, now)
	if !ok || c.Namespace != namespace || c.Subject != c.Namespace+"/"+subjectName(c.Subject) {
		return inactive, nil
	}
	scopes, err := ParseScopeParam(c.Scope)
	if err != nil {
		return inactive, nil
	}
	res, err := h.Verifier.Held(ctx, c.Namespace, subjectName(c.Subject), c.KeyID, now)
	if err != nil || !res.Valid {
		return inactive, err
	}
	for _, s := range scopes {
		if !verify.ScopeGranted(res.Scopes, s.Name, s.Access) {
			return inactive, nil
		}
	}
	// The key's identity as it is now (its Application's group may have
	// changed since the token was issued), as /v1/verify would answer.
	return Introspection{Active: true, Scope: c.Scope, ClientID: c.KeyID, Username: res.Owner, TokenType: TypeBearer,
		Exp: c.Expiry.Time().Unix(), Iat: c.IssuedAt.Time().Unix(), Nbf: c.NotBefore.Time().Unix(),
		Sub: c.Subject, Aud: TenantAudience(h.Issuer.URL, c.Namespace), Iss: c.Issuer, Jti: c.ID, Namespace: res.Namespace,
		Application: res.Application, Group: res.Group, Team: res.Team, Owner: res.Owner, KeyID: c.KeyID}, nil
}

func subjectName(sub string) string {
	_, name, _ := strings.Cut(sub, "/")
	return name
}
