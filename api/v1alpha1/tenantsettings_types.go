package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TenantSettingsName is the only TenantSettings name honoured in a namespace.
const TenantSettingsName = "default"

// Defaults that apply when a TenantSettings leaves a field empty. The CRD
// markers repeat them as literals (markers cannot name a constant); a unit
// test holds the two equal.
const (
	DefaultMaxKeysPerOwner = 5
	DefaultMaxKeys         = 1000
	DefaultExpiryWarning   = "720h"
	// DefaultRotationGracePeriod covers the kubelet's refresh of a mounted
	// Secret (its default syncFrequency is 1m; measured 67–69 s) with
	// room for the manager's caches and a rolling restart of envFrom
	// consumers (docs/lifecycle.md#rotation).
	DefaultRotationGracePeriod = "5m"
)

// TenantSettingsSpec switches API keys on for a namespace (tenant) and bounds them.
// +kubebuilder:validation:XValidation:rule="!has(self.maxKeyLifetime) || duration(self.maxKeyLifetime) > duration('0s')",message="maxKeyLifetime must be a positive duration such as 2160h"
type TenantSettingsSpec struct {
	// apiKeysEnabled switches every API key in the tenant on or off. When
	// unset, the manager's --api-keys-enabled-by-default decides (false
	// unless set). Off: no key is issued and existing keys stop verifying,
	// but their key material is kept, so switching on restores them.
	// +optional
	APIKeysEnabled *bool `json:"apiKeysEnabled,omitempty"`

	// maxKeyLifetime bounds keys issued after it is set:
	// expiresAt = min(requested, issuedAt + maxKeyLifetime); a key that asks
	// for no expiry gets the maximum. Keys issued before are not changed.
	// +optional
	MaxKeyLifetime *Duration `json:"maxKeyLifetime,omitempty"`

	// maxKeysPerOwner bounds how many keys one owner may hold (1..1000).
	// Only new keys are refused (Rejected, OwnerLimitExceeded); existing keys are kept.
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	MaxKeysPerOwner int32 `json:"maxKeysPerOwner,omitempty"`

	// maxKeys bounds how many keys the whole tenant may hold (1..100000),
	// so that one namespace cannot grow without bound on a manager that
	// serves every namespace. Like the other limits it applies to new keys
	// (Rejected, TenantLimitExceeded). A hard bound on the objects
	// themselves is a ResourceQuota on count/accesskeys.keyward.dev.
	// +kubebuilder:default=1000
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +optional
	MaxKeys int32 `json:"maxKeys,omitempty"`

	// expiryWarning: a key expiring within it counts as expiringSoon.
	// +kubebuilder:default="720h"
	// +optional
	ExpiryWarning *Duration `json:"expiryWarning,omitempty"`

	// rotationGracePeriod is how long a rotated-out key keeps verifying
	// when the key's spec.rotation.gracePeriod is unset (at most 720h).
	// The default, 5m, covers the kubelet's refresh of a mounted Secret
	// (about 70 s) and a rolling restart of envFrom consumers. The longer
	// it is, the longer a leaked key stays valid after a rotation: rotate
	// a leaked key with gracePeriod 0s (kubectl keyward rotate --grace 0s),
	// or revoke it.
	// +kubebuilder:default="5m"
	// +kubebuilder:validation:XValidation:rule="duration(self) <= duration('720h')",message="rotationGracePeriod is at most 720h (30 days)"
	// +optional
	RotationGracePeriod *Duration `json:"rotationGracePeriod,omitempty"`
}

// TenantSettingsStatus reports the tenant's keys.
type TenantSettingsStatus struct {
	// observedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// apiKeysEnabled is the switch in force, after the manager's default.
	// +optional
	APIKeysEnabled *bool `json:"apiKeysEnabled,omitempty"`

	// keys counts every AccessKey in the tenant by phase.
	// +optional
	Keys *KeyCounts `json:"keys,omitempty"`

	// conditions: Ready.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=tenant,categories=keyward
// +kubebuilder:validation:XValidation:rule="self.metadata.name == 'default'",message="TenantSettings must be named 'default': exactly one per namespace is honoured"
// +kubebuilder:printcolumn:name="Enabled",type=boolean,JSONPath=`.status.apiKeysEnabled`
// +kubebuilder:printcolumn:name="Max Lifetime",type=string,JSONPath=`.spec.maxKeyLifetime`
// +kubebuilder:printcolumn:name="Per Owner",type=integer,JSONPath=`.spec.maxKeysPerOwner`
// +kubebuilder:printcolumn:name="Active",type=integer,JSONPath=`.status.keys.active`
// +kubebuilder:printcolumn:name="Expiring",type=integer,JSONPath=`.status.keys.expiringSoon`
// +kubebuilder:printcolumn:name="Expired",type=integer,JSONPath=`.status.keys.expired`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// TenantSettings holds the API-key settings of one namespace (tenant). It must
// be named "default".
type TenantSettings struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   TenantSettingsSpec   `json:"spec,omitempty"`
	Status TenantSettingsStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// TenantSettingsList contains a list of TenantSettings.
type TenantSettingsList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TenantSettings `json:"items"`
}

func init() {
	SchemeBuilder.Register(&TenantSettings{}, &TenantSettingsList{})
}
