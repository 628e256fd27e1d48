package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Defaults of an Application. The CRD markers repeat them as literals; a
// unit test holds the two equal.
const (
	// DefaultGroup is the access-rights group of an Application that names none.
	DefaultGroup = "Developers"
	// DefaultMaxAccessKeys is how many keys an Application may hold when it does not say.
	DefaultMaxAccessKeys = 2
)

// ApplicationSpec describes a client of the protected API and bounds its keys.
type ApplicationSpec struct {
	// displayName is a human-friendly name, under 256 characters.
	// +kubebuilder:validation:MaxLength=255
	// +optional
	DisplayName string `json:"displayName,omitempty"`

	// description of the application.
	// +kubebuilder:validation:MaxLength=4096
	// +optional
	Description string `json:"description,omitempty"`

	// group is the access-rights group the application belongs to, e.g.
	// Administrators or Developers. Verification returns it so the protected
	// service can authorize by group; changing it changes the rights of every
	// key of the application at once, without re-issuing any key.
	// +kubebuilder:default=Developers
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +optional
	Group string `json:"group,omitempty"`

	// team that owns the application.
	// +kubebuilder:validation:MaxLength=128
	// +optional
	Team string `json:"team,omitempty"`

	// maxAccessKeys is how many keys the application may hold (1..1000).
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	MaxAccessKeys int32 `json:"maxAccessKeys,omitempty"`

	// scopes are the ceiling of what the application's keys may be granted.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Scopes []Scope `json:"scopes,omitempty"`
}

// ApplicationStatus reports the application's keys.
type ApplicationStatus struct {
	// observedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// keys counts the application's AccessKeys by phase.
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
// +kubebuilder:resource:shortName=app;apps,categories=keyward
// +kubebuilder:printcolumn:name="Group",type=string,JSONPath=`.spec.group`
// +kubebuilder:printcolumn:name="Team",type=string,JSONPath=`.spec.team`
// +kubebuilder:printcolumn:name="Max",type=integer,JSONPath=`.spec.maxAccessKeys`
// +kubebuilder:printcolumn:name="Active",type=integer,JSONPath=`.status.keys.active`
// +kubebuilder:printcolumn:name="Total",type=integer,JSONPath=`.status.keys.total`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// Application is a client of the protected API; its AccessKeys authenticate it.
type Application struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ApplicationSpec   `json:"spec,omitempty"`
	Status ApplicationStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// ApplicationList contains a list of Application.
type ApplicationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Application `json:"items"`
}

// ScopeLimit returns the access level the application allows for a scope and
// whether the scope is allowed at all.
func (a *Application) ScopeLimit(name string) (AccessLevel, bool) {
	for _, s := range a.Spec.Scopes {
		if s.Name == name {
			return s.Access, true
		}
	}
	return "", false
}

func init() {
	SchemeBuilder.Register(&Application{}, &ApplicationList{})
}
