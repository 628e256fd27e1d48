package v1alpha1

// AccessLevel is what a scope grants: read only, or read and write.
// +kubebuilder:validation:Enum=ReadOnly;ReadWrite
type AccessLevel string

const (
	ReadOnly  AccessLevel = "ReadOnly"
	ReadWrite AccessLevel = "ReadWrite"
)

// Allows reports whether a grant of this level covers a request for want.
// ReadWrite covers ReadOnly; ReadOnly covers only ReadOnly.
func (a AccessLevel) Allows(want AccessLevel) bool {
	return a == ReadWrite || a == want
}

// OrDefault is the level a scope grants when its access is left out:
// ReadOnly, the CRD's default (an object stored before the default may
// still have none).
func (a AccessLevel) OrDefault() AccessLevel {
	if a == "" {
		return ReadOnly
	}
	return a
}

// Scope is a named permission with an access level.
type Scope struct {
	// name of the scope, e.g. "devices" or "reports": an OAuth 2.0 scope
	// token (RFC 6749 section 3.3) without ':' and ',', which separate a
	// scope from its access and scopes from each other in headers and
	// token claims.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[!#-+\--9;-\[\]-~]+$`
	Name string `json:"name"`
	// access granted on the scope.
	// +kubebuilder:default=ReadOnly
	// +optional
	Access AccessLevel `json:"access,omitempty"`
}

// KeyCounts counts AccessKeys by phase. Total counts every key; expiringSoon
// counts Active keys whose expiry falls within the tenant's expiryWarning.
// Every count is always written (zeros included), so printer columns show 0;
// in the schema they are optional so that a status patch carrying only the
// counts that changed is valid.
type KeyCounts struct {
	// +optional
	Total int32 `json:"total"`
	// +optional
	Pending int32 `json:"pending"`
	// +optional
	Active int32 `json:"active"`
	// +optional
	Inactive int32 `json:"inactive"`
	// +optional
	Expired int32 `json:"expired"`
	// +optional
	Revoked int32 `json:"revoked"`
	// +optional
	Rejected int32 `json:"rejected"`
	// +optional
	ExpiringSoon int32 `json:"expiringSoon"`
}

// ConditionReady is the condition type every Keyward kind reports.
const ConditionReady = "Ready"
