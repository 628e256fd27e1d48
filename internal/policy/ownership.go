package policy

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// A key belongs to the Application object that existed when it was tied
// to it (by UID), not to whatever now carries the name: an Application
// deleted and created again (kubectl replace --force) never adopts the
// keys of the deleted one, nor do they take on its group, scopes or limits.

// ApplicationOf returns the Application key belongs to, given app, the
// Application now under the key's spec.application name (nil when none):
// app itself, unless it is being deleted or the key's owner reference to an
// Application of that name carries another UID. A key without such an
// owner reference yet belongs to app (the owner-reference controller is
// about to tie them).
func ApplicationOf(key *keyward.AccessKey, app *keyward.Application) *keyward.Application {
	if app == nil || !app.DeletionTimestamp.IsZero() || app.Name != key.Spec.Application {
		return nil
	}
	if ref, ok := ApplicationRef(key); ok && ref != string(app.UID) {
		return nil
	}
	return app
}

// ApplicationReplaced reports whether the Application under the key's
// spec.application name is another object than the one the key belongs to.
func ApplicationReplaced(key *keyward.AccessKey, app *keyward.Application) bool {
	ref, ok := ApplicationRef(key)
	return ok && app != nil && ref != string(app.UID)
}

// ApplicationRef returns the UID in the key's owner reference to an
// Application named by spec.application, if it has one.
func ApplicationRef(key *keyward.AccessKey) (string, bool) {
	for _, ref := range key.OwnerReferences {
		gv, err := schema.ParseGroupVersion(ref.APIVersion)
		if err == nil && gv.Group == keyward.GroupVersion.Group && ref.Kind == "Application" && ref.Name == key.Spec.Application {
			return string(ref.UID), true
		}
	}
	return "", false
}

// ControllingKey returns the owner reference of obj (a key's Secret) that
// names an AccessKey as its controller, if it has one.
func ControllingKey(obj metav1.Object) (metav1.OwnerReference, bool) {
	ref := metav1.GetControllerOfNoCopy(obj)
	if ref == nil || ref.Kind != "AccessKey" {
		return metav1.OwnerReference{}, false
	}
	if gv, err := schema.ParseGroupVersion(ref.APIVersion); err != nil || gv.Group != keyward.GroupVersion.Group {
		return metav1.OwnerReference{}, false
	}
	return *ref, true
}
