package token

import (
	"encoding/json"
	"mime"
	"net/http"
	"net/url"
	"strconv"

	"keyward.dev/keyward/internal/verify"
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
	TypeBearer             = "Bearer"

	// OAuth 2.0 error codes (RFC 6749 §5.2), and slow_down for a client
	// address the failure limiter has blocked (RFC 6749 has no such code;
	// slow_down is RFC 8628's, sent with 429 and Retry-After).
	ErrInvalidRequest         = "invalid_request"
	ErrInvalidClient          = "invalid_client"
	ErrUnsupportedGrantType   = "unsupported_grant_type"
	ErrInvalidScope           = "invalid_scope"
	ErrSlowDown               = "slow_down"
	ErrTemporarilyUnavailable = "temporarily_unavailable"

	wwwAuthenticateBasic = `Basic realm="keyward"`
	formContentType      = "application/x-www-form-urlencoded"
	maxFormBytes         = 8 << 10
)

// Response is the body of a successful POST /v1/token (RFC 6749 §5.1).
type Response struct {
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

var (
	noStore = []string{"no-store"}
	noCache = []string{"no-cache"}
)

// noStoreJSON sets the headers of every answer that may hold a token or
// say something about one (RFC 6749 §5.1): not to be cached, JSON.
func noStoreJSON(w http.ResponseWriter) {
	hdr := w.Header()
	hdr["Cache-Control"] = noStore
	hdr["Pragma"] = noCache
	hdr.Set("Content-Type", "application/json")
}

// oauthError answers an RFC 6749 §5.2 error.
func oauthError(w http.ResponseWriter, status int, code, desc string) {
	noStoreJSON(w)
	switch status {
	case http.StatusUnauthorized:
		w.Header().Set(verify.HeaderWWWAuthenticate, wwwAuthenticateBasic)
	case http.StatusServiceUnavailable:
		w.Header().Set(verify.HeaderRetryAfter, "1")
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
	if r.Header.Get(verify.HeaderAuthorization) != "" {
		return "", "", true, "" // another scheme: invalid_client
	}
	id, secret = form.Get("client_id"), form.Get("client_secret")
	return id, secret, id != "" || secret != "", ""
}
