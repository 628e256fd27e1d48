// Package v1alpha1 contains the Keyward API: Application, AccessKey and
// TenantSettings in group keyward.dev.
// +kubebuilder:object:generate=true
// +groupName=keyward.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is group version used to register these objects.
	GroupVersion = schema.GroupVersion{Group: "keyward.dev", Version: "v1alpha1"}

	// SchemeBuilder is used to add go types to the GroupVersionKind scheme.
	//lint:ignore SA1019 kubebuilder's scaffolding; replacing it changes every type's registration
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types in this group-version to the given scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
