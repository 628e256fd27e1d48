package verify

import (
	"net/http"
	"strings"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// asked gathers what a caller asks to check from every source that may
// carry it, so that no source a client controls can widen what the gateway
// asked (docs/decisions.md, "what is checked comes from the gateway"):
//
//   - the access is the strictest of every method signal and every explicit
//     access: an explicit ReadOnly never lowers a write method;
//   - every scope named must be the same one: two different scopes refuse;
//   - every namespace pin narrows: the allowed tenants are the
//     intersection of all pins present.
//
// A forward-auth gateway passes the client's own headers along (NGINX,
// Traefik, Caddy), so the verifier cannot tell who set a header; under
// these rules a client can only add checks to its own request, never remove
// or change the gateway's.
type asked struct {
	scope      string
	write      bool
	pinned     bool
	namespaces []string
	refusal    Reason
}

// method takes one method signal (the request's own method, or a header
// naming the client's); a list folded into one value counts each.
func (a *asked) method(v string) {
	for m := range fields(v) {
		if AccessForMethod(m) == keyward.ReadWrite {
			a.write = true
		}
	}
}

// access takes an explicit access level.
func (a *asked) access(v string) {
	for f := range fields(v) {
		switch keyward.AccessLevel(f) {
		case keyward.ReadWrite:
			a.write = true
		case keyward.ReadOnly:
		default: // no level: nothing can satisfy it
			a.refusal = ReasonScopeNotAllowed
		}
	}
}

// scopeName takes a scope asked for; a second, different one refuses.
func (a *asked) scopeName(v string) {
	for f := range fields(v) {
		switch a.scope {
		case "":
			a.scope = f
		case f:
		default:
			a.refusal = ReasonScopeNotAllowed
		}
	}
}

// pin takes one tenant pin: a namespace or a comma-separated list of them.
// An empty value pins nothing.
func (a *asked) pin(v string) {
	var set []string
	for f := range fields(v) {
		set = append(set, f)
	}
	if set == nil {
		return
	}
	if !a.pinned {
		a.pinned, a.namespaces = true, set
		return
	}
	kept := a.namespaces[:0:0]
	for _, ns := range a.namespaces {
		for _, n := range set {
			if ns == n {
				kept = append(kept, ns)
				break
			}
		}
	}
	a.namespaces = kept
}

// headers takes every signal a request's headers carry: the client's
// method as NGINX (X-Original-Method) and Traefik or Caddy
// (X-Forwarded-Method) pass it, and X-Keyward-Access, -Scope and
// -Namespace (which Envoy's headers_to_add set, replacing the client's).
// Every value of each header counts.
func (a *asked) headers(h http.Header) {
	for _, v := range h.Values(HeaderOriginalMethod) {
		a.method(v)
	}
	for _, v := range h.Values(HeaderForwardedMethod) {
		a.method(v)
	}
	for _, v := range h.Values(HeaderAccess) {
		a.access(v)
	}
	for _, v := range h.Values(HeaderScope) {
		a.scopeName(v)
	}
	for _, v := range h.Values(HeaderNamespace) {
		a.pin(v)
	}
}

// call fills what was asked into c.
func (a *asked) call(c *Call) {
	c.Scope, c.Access = a.scope, keyward.ReadOnly
	if a.write {
		c.Access = keyward.ReadWrite
	}
	c.Pinned, c.Namespaces, c.Refusal = a.pinned, a.namespaces, a.refusal
}

// fields yields the comma-separated, trimmed, non-empty parts of v.
func fields(v string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for v != "" {
			var f string
			f, v, _ = strings.Cut(v, ",")
			if f = strings.TrimSpace(f); f != "" && !yield(f) {
				return
			}
		}
	}
}
