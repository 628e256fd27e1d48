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

// Scope is a named permission with an access level.
type Scope struct {
	// name of the scope, e.g. "devices" or "reports".
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	Name string `json:"name"`
	// access granted on the scope.
	// +kubebuilder:default=ReadOnly
	// +optional
	Access AccessLevel `json:"access,omitempty"`
}

// KeyCounts counts AccessKeys by phase. Total counts every key; expiringSoon
// counts Active keys whose expiry falls within the tenant's expiryWarning.
type KeyCounts struct {
	Total        int32 `json:"total"`
	Pending      int32 `json:"pending"`
	Active       int32 `json:"active"`
	Inactive     int32 `json:"inactive"`
	Expired      int32 `json:"expired"`
	Revoked      int32 `json:"revoked"`
	Rejected     int32 `json:"rejected"`
	ExpiringSoon int32 `json:"expiringSoon"`
}

// ConditionReady is the condition type every Keyward kind reports.
const ConditionReady = "Ready"
