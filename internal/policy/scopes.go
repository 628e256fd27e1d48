package policy

import (
	"fmt"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// ScopeError says which requested scope the Application does not allow.
type ScopeError struct {
	Scope     string
	Requested keyward.AccessLevel
	Allowed   keyward.AccessLevel // empty when the scope is not allowed at all
}

func (e *ScopeError) Error() string {
	if e.Allowed == "" {
		return fmt.Sprintf("scope %q is not among the application's scopes", e.Scope)
	}
	return fmt.Sprintf("scope %q asks for %s but the application allows only %s", e.Scope, e.Requested, e.Allowed)
}

// CheckScopes reports the first scope of the key that goes beyond the
// Application's scopes, or nil when all are within them.
func CheckScopes(key *keyward.AccessKey, app *keyward.Application) error {
	for _, s := range key.Spec.Scopes {
		allowed, ok := app.ScopeLimit(s.Name)
		if !ok {
			return &ScopeError{Scope: s.Name, Requested: s.Access}
		}
		if !allowed.Allows(s.Access.OrDefault()) {
			return &ScopeError{Scope: s.Name, Requested: s.Access, Allowed: allowed}
		}
	}
	return nil
}

// ValidScopeName reports whether name is an OAuth 2.0 scope token (RFC 6749
// section 3.3: printable ASCII but space, '"' and '\\') without ':' and ',',
// which separate a scope from its access ("orders:ReadOnly") and scopes
// from each other in headers and token claims. The CRD refuses other names
// since they could forge a claim ("orders:ReadWrite x"); an object stored
// before keeps its name (ratcheting), and such a scope is never granted.
func ValidScopeName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c < 0x21 || c > 0x7e, c == '"', c == '\\', c == ':', c == ',':
			return false
		}
	}
	return true
}

// InvalidScopeNames lists the names of scopes that are not ValidScopeName.
func InvalidScopeNames(scopes []keyward.Scope) []string {
	var out []string
	for _, s := range scopes {
		if !ValidScopeName(s.Name) {
			out = append(out, s.Name)
		}
	}
	return out
}

// EffectiveScopes is what the key grants: its own scopes, or the
// Application's when it names none.
func EffectiveScopes(key *keyward.AccessKey, app *keyward.Application) []keyward.Scope {
	if len(key.Spec.Scopes) > 0 {
		return key.Spec.Scopes
	}
	return app.Spec.Scopes
}
