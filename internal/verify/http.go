package verify

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/verify/wire"
)

// Endpoints (docs/gateways.md).
const (
	PathVerify = "/v1/verify"
	PathAuth   = "/v1/auth"
)

// Headers the forward-auth endpoint reads and writes, defined once.
const (
	HeaderNamespace   = "X-Keyward-Namespace"
	HeaderApplication = "X-Keyward-Application"
	HeaderGroup       = "X-Keyward-Group"
	HeaderTeam        = "X-Keyward-Team"
	HeaderOwner       = "X-Keyward-Owner"
	HeaderKeyID       = "X-Keyward-Key-ID"
	HeaderScopes      = "X-Keyward-Scopes"
	// HeaderReason carries the reason on every /v1/auth answer.
	HeaderReason = "X-Keyward-Reason"
	// HeaderScope, HeaderAccess and HeaderNamespace say what to check (or
	// the query parameters of the fixed auth URL); see asked for how the
	// sources combine. HeaderNamespace is also an identity header of the
	// answer.
	HeaderScope    = "X-Keyward-Scope"
	HeaderAccess   = "X-Keyward-Access"
	QueryScope     = "scope"
	QueryAccess    = "access"
	QueryNamespace = "namespace"
	// QueryRateLimitedStatus (401, 403 or 429) is the status /v1/auth
	// answers rate_limited with: NGINX's auth_request passes on only 401
	// and 403 (anything else becomes 500), so its recipe asks for 403 and
	// turns it into 429 by X-Keyward-Reason.
	QueryRateLimitedStatus = "rate_limited_status"
	// HeaderAPIKey carries a key, as an alternative to Authorization: Bearer.
	HeaderAPIKey        = wire.HeaderAPIKey
	HeaderAuthorization = wire.HeaderAuthorization
	// HeaderForwardedMethod (Traefik) and HeaderOriginalMethod (NGINX
	// recipes) carry the client's method, from which the access is derived.
	HeaderForwardedMethod = "X-Forwarded-Method"
	HeaderOriginalMethod  = "X-Original-Method"
	HeaderForwardedFor    = wire.HeaderForwardedFor
	HeaderRealIP          = wire.HeaderRealIP
	HeaderRetryAfter      = "Retry-After"
	HeaderWWWAuthenticate = "WWW-Authenticate"
	// wwwAuthenticate is sent with 401: RFC 6750, with error=invalid_token
	// when a key was presented.
	wwwAuthenticate        = `Bearer realm="keyward"`
	wwwAuthenticateInvalid = `Bearer realm="keyward", error="invalid_token"`
	// MaxBodyBytes bounds the body of POST /v1/verify.
	MaxBodyBytes = 8 << 10
)

var (
	noStore = []string{"no-store"}
	// reasonValues are the X-Keyward-Reason values, allocated once.
	reasonValues = func() map[Reason][]string {
		m := map[Reason][]string{}
		for _, r := range Reasons {
			m[r] = []string{string(r)}
		}
		return m
	}()
)

// IdentityHeaders are the headers a successful /v1/auth answer carries, in order.
var IdentityHeaders = []string{HeaderNamespace, HeaderApplication, HeaderGroup, HeaderTeam, HeaderOwner, HeaderKeyID, HeaderScopes}

// VerifyRequest is the body of POST /v1/verify.
type VerifyRequest struct {
	Key      string              `json:"key"`
	SourceIP string              `json:"sourceIP,omitempty"`
	Scope    string              `json:"scope,omitempty"`
	Access   keyward.AccessLevel `json:"access,omitempty"`
	// Namespace pins the tenant: a namespace or a list of them.
	Namespace Namespaces `json:"namespace,omitempty"`
}

// Namespaces is a tenant pin in JSON: a string or a list of strings.
type Namespaces []string

// UnmarshalJSON takes a string or a list of strings; null is no pin.
func (n *Namespaces) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*n = nil
		return nil
	}
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*n = Namespaces{one}
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return errNamespaces
	}
	if list == nil {
		list = []string{} // [] pins to nothing; null is no pin
	}
	*n = list
	return nil
}

var errNamespaces = errors.New("namespace must be a string or a list of strings")

// Handler serves POST /v1/verify and /v1/auth (any method, also under
// /v1/auth/, as Envoy's HTTP ext_authz appends the original path).
type Handler struct {
	Verifier *Verifier
	// Trusted are the proxies whose X-Forwarded-For / X-Real-IP are believed,
	// and whose sourceIP in /v1/verify is the address guesses are counted under.
	Trusted wire.TrustedProxies
	// KeyHeader is one more header /v1/auth reads a key from; "" for none.
	KeyHeader string
	Log       logr.Logger
}

// Routes adds the verification endpoints to mux.
func (h *Handler) Routes(mux *http.ServeMux) {
	mux.HandleFunc("POST "+PathVerify, h.serveVerify)
	mux.HandleFunc(PathAuth, h.serveAuth)
	mux.HandleFunc(PathAuth+"/", h.serveAuth)
}

// Mux is a mux with h's endpoints alone.
func (h *Handler) Mux() *http.ServeMux {
	mux := http.NewServeMux()
	h.Routes(mux)
	return mux
}

func (h *Handler) serveVerify(w http.ResponseWriter, r *http.Request) {
	var req VerifyRequest
	if status, msg := decodeBody(w, r, &req); status != 0 {
		http.Error(w, msg, status)
		return
	}
	if req.Access != "" && req.Access != keyward.ReadOnly && req.Access != keyward.ReadWrite {
		http.Error(w, fmt.Sprintf("access must be %s or %s", keyward.ReadOnly, keyward.ReadWrite), http.StatusBadRequest)
		return
	}
	caller := h.clientAddr(r)
	addr, limitAddr := caller, caller
	if req.SourceIP != "" {
		a, err := netip.ParseAddr(req.SourceIP)
		if err != nil || a.Zone() != "" {
			http.Error(w, "sourceIP must be an IPv4 or IPv6 address", http.StatusBadRequest)
			return
		}
		addr = a.Unmap()
		if h.Trusted.Contains(wire.PeerAddr(r.RemoteAddr)) {
			limitAddr = addr
		}
	}
	call := Call{Key: req.Key, Addr: addr, LimitAddr: limitAddr, Scope: req.Scope, Access: req.Access}
	if req.Namespace != nil {
		for _, ns := range req.Namespace {
			if ns == "" {
				http.Error(w, "namespace must not be empty", http.StatusBadRequest)
				return
			}
		}
		call.Pinned, call.Namespaces = true, req.Namespace
	}
	res, err := h.Verifier.Verify(r.Context(), call)
	if err != nil {
		h.unavailable(w, err)
		return
	}
	hdr := w.Header()
	if res.Reason == ReasonRateLimited {
		hdr.Set(HeaderRetryAfter, RetryAfter(res.RetryAfter))
	}
	hdr["Cache-Control"] = noStore
	hdr.Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(res)
}

// decodeBody reads one JSON object of at most MaxBodyBytes; a non-zero
// status comes with a message that never quotes the body.
func decodeBody(w http.ResponseWriter, r *http.Request, into any) (int, string) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	dec.DisallowUnknownFields()
	err := dec.Decode(into)
	if err == nil {
		if dec.Decode(&struct{}{}) != io.EOF {
			return http.StatusBadRequest, "request body must hold exactly one JSON object"
		}
		return 0, ""
	}
	var (
		maxErr    *http.MaxBytesError
		syntaxErr *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &maxErr):
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", MaxBodyBytes)
	case errors.Is(err, io.EOF):
		return http.StatusBadRequest, `request body is empty; expected {"key": "...", "sourceIP": "...", "scope": "...", "access": "ReadOnly|ReadWrite", "namespace": "..."}`
	case errors.As(err, &syntaxErr), errors.Is(err, io.ErrUnexpectedEOF):
		return http.StatusBadRequest, "request body is not valid JSON"
	case errors.As(err, &typeErr):
		return http.StatusBadRequest, fmt.Sprintf("field %q must be a %s", typeErr.Field, typeErr.Type)
	case errors.Is(err, errNamespaces):
		return http.StatusBadRequest, errNamespaces.Error()
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return http.StatusBadRequest, fmt.Sprintf("unknown field %s; the fields are key, sourceIP, scope, access and namespace",
			strings.TrimPrefix(err.Error(), "json: unknown field "))
	default:
		return http.StatusBadRequest, "request body is not a JSON object of key, sourceIP, scope, access and namespace"
	}
}

func (h *Handler) serveAuth(w http.ResponseWriter, r *http.Request) {
	// The query is the gateway's only on the fixed auth URL; under
	// /v1/auth/ it is the client's (Envoy's HTTP mode appends the
	// client's path and query) and is not read at all.
	var query url.Values
	if r.URL.Path == PathAuth && r.URL.RawQuery != "" {
		query = r.URL.Query()
	}
	var a asked
	a.method(r.Method)
	a.headers(r.Header)
	for _, v := range query[QueryAccess] {
		a.access(v)
	}
	for _, v := range query[QueryScope] {
		a.scopeName(v)
	}
	for _, v := range query[QueryNamespace] {
		a.pin(v)
	}
	addr := h.clientAddr(r)
	key := wire.KeyFrom(r.Header, h.KeyHeader)
	call := Call{Key: key, Addr: addr, LimitAddr: addr}
	a.call(&call)
	res, err := h.Verifier.Verify(r.Context(), call)
	if err != nil {
		h.unavailable(w, err)
		return
	}
	hdr := w.Header()
	hdr["Cache-Control"] = noStore
	hdr[HeaderReason] = reasonValues[res.Reason]
	status := StatusOf(res.Reason)
	if res.Reason == ReasonRateLimited {
		switch query.Get(QueryRateLimitedStatus) {
		case "401":
			status = http.StatusUnauthorized
		case "403":
			status = http.StatusForbidden
		}
		hdr.Set(HeaderRetryAfter, RetryAfter(res.RetryAfter))
	}
	switch status {
	case http.StatusOK:
		// One allocation for all values; the names as documented.
		vals := IdentityValues(res)
		for i := range vals {
			hdr[IdentityHeaders[i]] = vals[i : i+1 : i+1]
		}
	case http.StatusUnauthorized:
		if key == "" {
			hdr.Set(HeaderWWWAuthenticate, wwwAuthenticate)
		} else {
			hdr.Set(HeaderWWWAuthenticate, wwwAuthenticateInvalid)
		}
	}
	w.WriteHeader(status)
	if status != http.StatusOK {
		_, _ = io.WriteString(w, string(res.Reason)+"\n")
	}
}

func (h *Handler) clientAddr(r *http.Request) netip.Addr {
	return wire.ClientAddrOf(r, h.Trusted)
}

func (h *Handler) unavailable(w http.ResponseWriter, err error) {
	h.Log.Error(err, "reading the cache")
	w.Header().Set(HeaderRetryAfter, "1")
	http.Error(w, "the verifier cannot read its cache yet", http.StatusServiceUnavailable)
}

// StatusOf is the HTTP status of /v1/auth (and of the gRPC denial) for a reason.
func StatusOf(r Reason) int {
	switch r {
	case ReasonOK:
		return http.StatusOK
	case ReasonNetworkNotAllowed, ReasonScopeNotAllowed, ReasonNamespaceNotAllowed:
		return http.StatusForbidden
	case ReasonRateLimited:
		return http.StatusTooManyRequests
	default:
		return http.StatusUnauthorized
	}
}

// IdentityValues are the values of IdentityHeaders for a result.
func IdentityValues(res Result) []string {
	if len(res.Scopes) == 0 {
		return []string{res.Namespace, res.Application, res.Group, res.Team, res.Owner, res.KeyID, ""}
	}
	return []string{res.Namespace, res.Application, res.Group, res.Team, res.Owner, res.KeyID, FormatScopes(res.Scopes)}
}

// FormatScopes writes scopes as "name:Access,name:Access".
func FormatScopes(scopes []keyward.Scope) string { return JoinScopes(scopes, ',') }

// JoinScopes writes scopes as name:Access joined by sep.
func JoinScopes(scopes []keyward.Scope, sep byte) string {
	var b strings.Builder
	for i, s := range scopes {
		if i > 0 {
			b.WriteByte(sep)
		}
		b.WriteString(s.Name)
		b.WriteByte(':')
		b.WriteString(string(accessOrDefault(s.Access)))
	}
	return b.String()
}

// AccessForMethod: GET, HEAD and OPTIONS read (ReadOnly); every other method writes.
func AccessForMethod(method string) keyward.AccessLevel {
	switch strings.ToUpper(strings.TrimSpace(method)) {
	case http.MethodGet, http.MethodHead, http.MethodOptions, "":
		return keyward.ReadOnly
	default:
		return keyward.ReadWrite
	}
}

// RetryAfter is the Retry-After value for a wait: whole seconds, rounded
// up, at least 1.
func RetryAfter(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return strconv.FormatInt(s, 10)
}
