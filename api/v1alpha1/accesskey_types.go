package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RotateAnnotation requests a rotation ("refresh key") whenever its value
// changes. The last value acted on is kept in status.rotation.lastRequest, so
// re-applying the same value does nothing.
const RotateAnnotation = "keyward.dev/rotate"

// Who acted on a key: the admission policy keyward-stamp-actor
// (config/admission) sets these from the requesting user's name on every
// create and update, overwriting whatever the client sent, so they cannot
// be forged (docs/access-control.md).
const (
	// RevokedByAnnotation names the user who set spec.revoked to true.
	RevokedByAnnotation = "keyward.dev/revoked-by"
	// StateChangedByAnnotation names the user who last changed spec.state
	// (deactivated or reactivated the key).
	StateChangedByAnnotation = "keyward.dev/state-changed-by"
	// ExpiryChangedByAnnotation names the user who last changed spec.expiresAt.
	ExpiryChangedByAnnotation = "keyward.dev/expiry-changed-by"
	// RotationRequestedByAnnotation names the user who last changed the
	// rotate annotation.
	RotationRequestedByAnnotation = "keyward.dev/rotation-requested-by"
	// ImportedByAnnotation names the user who last set or changed the
	// import annotations.
	ImportedByAnnotation = "keyward.dev/imported-by"
)

// Import: a key restored object by object (a Velero restore, a namespace
// moved) takes back the key material its Secret holds, instead of being
// issued anew, when both annotations name that material: the key ID and
// the hash of the secret part, as status.keyID and status.secretHash
// recorded them before the backup. Setting or changing them needs the
// custom verb `import` on accesskeys (admission policy
// keyward-accesskey-rights; docs/backup-restore.md). The controller adopts
// the Secret only if the key was never issued, the Secret is controlled by
// no other object and holds exactly that material, and no other
// AccessKey holds the key ID.
const (
	ImportKeyIDAnnotation      = "keyward.dev/import-key-id"
	ImportSecretHashAnnotation = "keyward.dev/import-secret-hash"
)

// KeyState is the state a user asks for.
// +kubebuilder:validation:Enum=Active;Inactive
type KeyState string

const (
	StateActive   KeyState = "Active"
	StateInactive KeyState = "Inactive"
)

// KeyPhase is where a key is in its lifecycle.
// +kubebuilder:validation:Enum=Pending;Active;Inactive;Expired;Revoked;Rejected
type KeyPhase string

const (
	PhasePending  KeyPhase = "Pending"
	PhaseActive   KeyPhase = "Active"
	PhaseInactive KeyPhase = "Inactive"
	PhaseExpired  KeyPhase = "Expired"
	PhaseRevoked  KeyPhase = "Revoked"
	PhaseRejected KeyPhase = "Rejected"
)

// RotationSpec tunes rotation.
type RotationSpec struct {
	// gracePeriod is how long the previous key keeps verifying after a
	// rotation, as a Go duration such as 10m or 24h; 0s ends it at once
	// (a rotation because the key leaked). Unset: the tenant's
	// TenantSettings rotationGracePeriod (5m by default, long enough for
	// the kubelet to refresh a mounted Secret).
	// It is at most 720h (30 days), and the previous key never verifies
	// past its own expiry.
	// +kubebuilder:validation:XValidation:rule="duration(self) <= duration('720h')",message="gracePeriod is at most 720h (30 days)"
	// +optional
	GracePeriod *Duration `json:"gracePeriod,omitempty"`

	// renewLifetime: a rotation starts a new lifetime for the new key
	// material, bounded by the tenant's maxKeyLifetime in force at the
	// rotation (status.lifetimeLimit moves to rotation time +
	// maxKeyLifetime). Off, a rotation keeps the lifetime fixed at first
	// issue. The previous key still never verifies past its own lifetime.
	// +optional
	RenewLifetime bool `json:"renewLifetime,omitempty"`
}

// SecretTemplate shapes the Secret that holds the key.
type SecretTemplate struct {
	// name of the Secret; defaults to the AccessKey's name.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +optional
	Name string `json:"name,omitempty"`
	// labels added to the Secret: at most 32. A label the API server
	// refuses leaves the key Pending with reason SecretInvalid.
	// +kubebuilder:validation:MaxProperties=32
	// +kubebuilder:validation:XValidation:rule="self.all(k, k.size() <= 317 && self[k].size() <= 63)",message="secretTemplate.labels: a key is at most 317 characters (a prefix of 253, '/', a name of 63) and a value at most 63"
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// annotations added to the Secret: at most 32, each value at most 4096 characters.
	// +kubebuilder:validation:MaxProperties=32
	// +kubebuilder:validation:XValidation:rule="self.all(k, k.size() <= 317 && self[k].size() <= 4096)",message="secretTemplate.annotations: a key is at most 317 characters (a prefix of 253, '/', a name of 63) and a value at most 4096"
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
	// dataKeys renames the Secret's entries, e.g. accessKey: API_KEY, so
	// that envFrom gives a workload its variable directly. Changing them
	// renames the entries of the existing Secret; the key is not re-issued.
	// +optional
	DataKeys *SecretDataKeys `json:"dataKeys,omitempty"`
}

// SecretDataKeys names the entries of the key's Secret; each defaults to
// its field name.
// +kubebuilder:validation:XValidation:rule="(has(self.accessKey) ? self.accessKey : 'accessKey') != (has(self.keyId) ? self.keyId : 'keyId') && (has(self.accessKey) ? self.accessKey : 'accessKey') != (has(self.application) ? self.application : 'application') && (has(self.keyId) ? self.keyId : 'keyId') != (has(self.application) ? self.application : 'application')",message="secretTemplate.dataKeys must name three different entries"
type SecretDataKeys struct {
	// accessKey names the entry that holds the full key.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]*[-_a-zA-Z0-9][-._a-zA-Z0-9]*$`
	// +optional
	AccessKey string `json:"accessKey,omitempty"`
	// keyId names the entry that holds the public key ID.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]*[-_a-zA-Z0-9][-._a-zA-Z0-9]*$`
	// +optional
	KeyID string `json:"keyId,omitempty"`
	// application names the entry that holds the Application's name.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]*[-_a-zA-Z0-9][-._a-zA-Z0-9]*$`
	// +optional
	Application string `json:"application,omitempty"`
}

// AccessKeySpec declares one API access key of an Application.
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.revoked) || !oldSelf.revoked || (has(self.revoked) && self.revoked)",message="spec.revoked cannot be set back to false: revocation is irreversible"
// +kubebuilder:validation:XValidation:rule="(has(self.secretTemplate) && has(self.secretTemplate.name) ? self.secretTemplate.name : '-') == (has(oldSelf.secretTemplate) && has(oldSelf.secretTemplate.name) ? oldSelf.secretTemplate.name : '-')",message="spec.secretTemplate.name is immutable"
type AccessKeySpec struct {
	// application is the Application, in the same namespace, the key belongs
	// to. It cannot be changed.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.application is immutable: a key belongs to one application for life"
	Application string `json:"application"`

	// displayName is a human-friendly name, under 256 characters.
	// +kubebuilder:validation:MaxLength=255
	// +optional
	DisplayName string `json:"displayName,omitempty"`

	// description of the key.
	// +kubebuilder:validation:MaxLength=4096
	// +optional
	Description string `json:"description,omitempty"`

	// owner is the user the key belongs to. The shipped admission policy
	// stamps the creating user's name when it is empty.
	// +kubebuilder:validation:MaxLength=512
	// +optional
	Owner string `json:"owner,omitempty"`

	// state: Active, or Inactive to deactivate the key. Reactivation
	// restores the same key.
	// +kubebuilder:default=Active
	// +optional
	State KeyState `json:"state,omitempty"`

	// revoked, once true, destroys the key material for good; it can never
	// be set back to false.
	// +kubebuilder:default=false
	// +optional
	Revoked bool `json:"revoked,omitempty"`

	// expiresAt is when the key stops working (RFC 3339); absent means never,
	// unless the tenant's maxKeyLifetime bounds it. Moving it into the future
	// re-activates an expired key with the same key material.
	// +optional
	ExpiresAt *Timestamp `json:"expiresAt,omitempty"`

	// scopes granted to the key; each must be within the Application's
	// scopes. Empty means the Application's scopes.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Scopes []Scope `json:"scopes,omitempty"`

	// allowedNetworks are the IPv4/IPv6 addresses or CIDRs the key may be
	// used from, at most 10. Empty means any network.
	// +kubebuilder:validation:MaxItems=10
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:XValidation:rule="isIP(self) || isCIDR(self)",message="each allowedNetworks entry must be an IPv4/IPv6 address or CIDR, such as 203.0.113.7 or 10.0.0.0/8"
	// +listType=set
	// +optional
	AllowedNetworks []string `json:"allowedNetworks,omitempty"`

	// rotation tunes what happens when the keyward.dev/rotate annotation changes.
	// +optional
	Rotation *RotationSpec `json:"rotation,omitempty"`

	// secretTemplate shapes the generated Secret.
	// +optional
	SecretTemplate *SecretTemplate `json:"secretTemplate,omitempty"`
}

// PreviousKey is the key replaced by a rotation, still verifying until validUntil.
type PreviousKey struct {
	KeyID      string `json:"keyID"`
	SecretHash string `json:"secretHash"`
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=date-time
	// +kubebuilder:validation:Pattern=`^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
	ValidUntil metav1.Time `json:"validUntil"`
}

// RotationStatus records the last rotation request acted on.
type RotationStatus struct {
	// lastRequest is the keyward.dev/rotate value last acted on.
	// +optional
	LastRequest string `json:"lastRequest,omitempty"`
}

// SecretRefusal records that the API server refused the key's Secret for a
// reason only the user can fix. It stands for one generation of the spec:
// a change of the spec tries again.
type SecretRefusal struct {
	// reason is SecretNameConflict (a Secret the key does not control has
	// the name; it is tried again every 30 s) or SecretInvalid (the API
	// server refused the Secret the template describes; it is not tried
	// again until the spec changes).
	// +kubebuilder:validation:Enum=SecretNameConflict;SecretInvalid
	Reason string `json:"reason"`

	// fields names the spec fields to fix (SecretInvalid).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=64
	Fields []string `json:"fields,omitempty"`

	// generation is the spec generation (metadata.generation) the Secret
	// was refused for.
	Generation int64 `json:"generation"`
}

// AccessKeyStatus is what the controller observed and did. It never holds key
// material: only the public key ID and a hash of the secret part.
type AccessKeyStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// +optional
	Phase KeyPhase `json:"phase,omitempty"`

	// keyID is the public portion of the key, safe to show.
	// +optional
	KeyID string `json:"keyID,omitempty"`

	// shortKeyID is the first 8 characters of keyID, for the printer column.
	// +optional
	ShortKeyID string `json:"shortKeyID,omitempty"`

	// secretName is the Secret that holds the key.
	// +optional
	SecretName string `json:"secretName,omitempty"`

	// secretHash is "sha256:<hex>" of the key's secret part.
	// +optional
	SecretHash string `json:"secretHash,omitempty"`

	// issuedAt is when key material was first issued.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=date-time
	// +kubebuilder:validation:Pattern=`^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
	IssuedAt *metav1.Time `json:"issuedAt,omitempty"`

	// expiresAt is the effective expiry: spec.expiresAt bounded by the
	// tenant's maxKeyLifetime in force when the key was issued.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=date-time
	// +kubebuilder:validation:Pattern=`^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// lifetimeLimit is the latest expiry the tenant's maxKeyLifetime allowed
	// when the key was issued; absent when no lifetime applied.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=date-time
	// +kubebuilder:validation:Pattern=`^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
	LifetimeLimit *metav1.Time `json:"lifetimeLimit,omitempty"`

	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=date-time
	// +kubebuilder:validation:Pattern=`^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
	LastRotatedAt *metav1.Time `json:"lastRotatedAt,omitempty"`

	// lastUsedAt is the last successful verification (written at most once a minute).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=date-time
	// +kubebuilder:validation:Pattern=`^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
	LastUsedAt *metav1.Time `json:"lastUsedAt,omitempty"`

	// previousKey keeps verifying until its validUntil after a rotation.
	// +optional
	PreviousKey *PreviousKey `json:"previousKey,omitempty"`

	// +optional
	Rotation *RotationStatus `json:"rotation,omitempty"`

	// secretRefusal is set while the API server's refusal of the key's
	// Secret stands for the current spec: the key is Pending with the
	// refusal's reason and holds no slot. Keys written before this field
	// existed are read from their Ready condition once and then get it.
	// +optional
	SecretRefusal *SecretRefusal `json:"secretRefusal,omitempty"`

	// conditions: Ready, with a reason.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ak;aks,categories=keyward
// +kubebuilder:selectablefield:JSONPath=`.spec.application`
// +kubebuilder:selectablefield:JSONPath=`.spec.owner`
// +kubebuilder:selectablefield:JSONPath=`.status.phase`
// +kubebuilder:selectablefield:JSONPath=`.status.keyID`
// +kubebuilder:printcolumn:name="Application",type=string,JSONPath=`.spec.application`
// +kubebuilder:printcolumn:name="Owner",type=string,JSONPath=`.spec.owner`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Key ID",type=string,JSONPath=`.status.shortKeyID`
// +kubebuilder:printcolumn:name="Expires",type=string,JSONPath=`.status.expiresAt`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// AccessKey is one API access key of an Application. Its key material lives
// only in the Secret the controller generates. Its name is at most 63
// characters because the Secret carries it as a label value.
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 63",message="an AccessKey name is at most 63 characters (the generated Secret carries it as a label value)"
type AccessKey struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   AccessKeySpec   `json:"spec,omitempty"`
	Status AccessKeyStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// AccessKeyList contains a list of AccessKey.
type AccessKeyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AccessKey `json:"items"`
}

// SecretName is the name of the Secret that holds the key.
func (k *AccessKey) SecretName() string {
	if k.Spec.SecretTemplate != nil && k.Spec.SecretTemplate.Name != "" {
		return k.Spec.SecretTemplate.Name
	}
	return k.Name
}

func init() {
	SchemeBuilder.Register(&AccessKey{}, &AccessKeyList{})
}
