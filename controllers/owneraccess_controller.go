package controllers

import (
	"context"
	"maps"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/policy"
	"keyward.dev/keyward/internal/secrets"
)

// OwnerAccessReconciler has one job: let the owner of a key read that
// key's Secret and no other. Per namespace and owner it keeps a Role
// keyward-owner-<hash of the owner> with get on secrets restricted by
// resourceNames to the Secrets of the owner's live keys, and a RoleBinding
// of it to the owner (policy.OwnerGrants decides which). It removes both
// when the owner has no such Secret left; their owner references to the
// keys let the garbage collector remove them too. It reconciles a whole
// namespace at a time (the request's name is empty) and writes only what
// differs. See docs/security.md.
//
// The API server lets it grant get on secrets only because the manager
// itself holds get on secrets (RBAC's escalation check).
type OwnerAccessReconciler struct {
	client.Client
	// APIReader reads a Role or RoleBinding of ours that the cache lacks
	// (someone removed its label), so that it is put right.
	APIReader client.Reader
}

// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=roles;rolebindings,verbs=get;list;watch;create;update;patch;delete

func (r *OwnerAccessReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	ns := req.Namespace
	var keys keyward.AccessKeyList
	if err := r.List(ctx, &keys, client.InNamespace(ns)); err != nil {
		return ctrl.Result{}, err
	}
	var secretList corev1.SecretList
	if err := r.List(ctx, &secretList, client.InNamespace(ns), client.MatchingLabels(secrets.ManagedLabels())); err != nil {
		return ctrl.Result{}, err
	}
	grants := policy.OwnerGrants(keys.Items, secretList.Items)

	var roles rbacv1.RoleList
	if err := r.List(ctx, &roles, client.InNamespace(ns), client.HasLabels{policy.LabelOwnerAccess}); err != nil {
		return ctrl.Result{}, err
	}
	var bindings rbacv1.RoleBindingList
	if err := r.List(ctx, &bindings, client.InNamespace(ns), client.HasLabels{policy.LabelOwnerAccess}); err != nil {
		return ctrl.Result{}, err
	}
	haveRole := map[string]*rbacv1.Role{}
	for i := range roles.Items {
		haveRole[roles.Items[i].Name] = &roles.Items[i]
	}
	haveBinding := map[string]*rbacv1.RoleBinding{}
	for i := range bindings.Items {
		haveBinding[bindings.Items[i].Name] = &bindings.Items[i]
	}

	wanted := map[string]bool{}
	for _, g := range grants {
		wanted[g.Name] = true
		role, err := r.ensureRole(ctx, ns, g, haveRole[g.Name])
		if err != nil {
			return ctrl.Result{}, err
		}
		if role == nil {
			continue // deleted meanwhile: its deletion brings us back
		}
		if err := r.ensureBinding(ctx, ns, g, role, haveBinding[g.Name]); err != nil {
			return ctrl.Result{}, err
		}
	}
	// Access goes first: the binding, then the Role.
	for name, b := range haveBinding {
		if !wanted[name] && strings.HasPrefix(name, policy.OwnerAccessPrefix) {
			if err := r.Delete(ctx, b, client.Preconditions{UID: &b.UID}); client.IgnoreNotFound(err) != nil && !apierrors.IsConflict(err) {
				return ctrl.Result{}, err
			}
		}
	}
	for name, role := range haveRole {
		if !wanted[name] && strings.HasPrefix(name, policy.OwnerAccessPrefix) {
			if err := r.Delete(ctx, role, client.Preconditions{UID: &role.UID}); client.IgnoreNotFound(err) != nil && !apierrors.IsConflict(err) {
				return ctrl.Result{}, err
			}
		}
	}
	return ctrl.Result{}, nil
}

// ownerAccessMeta is the metadata every owner's Role and RoleBinding carries.
func ownerAccessMeta(ns string, g policy.OwnerGrant) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Namespace: ns,
		Name:      g.Name,
		Labels: map[string]string{
			secrets.LabelManagedBy:  secrets.ManagedByValue,
			policy.LabelOwnerAccess: policy.OwnerHash(g.Owner),
		},
		Annotations:     map[string]string{policy.AnnotationOwner: g.Owner},
		OwnerReferences: g.Keys,
	}
}

// metaDiffers reports whether have lacks any of want's labels and
// annotations, or has other owner references.
func metaDiffers(have, want metav1.Object) bool {
	sub := func(h, w map[string]string) bool {
		for k, v := range w {
			if hv, ok := h[k]; !ok || hv != v {
				return true
			}
		}
		return false
	}
	return sub(have.GetLabels(), want.GetLabels()) || sub(have.GetAnnotations(), want.GetAnnotations()) ||
		!equality.Semantic.DeepEqual(have.GetOwnerReferences(), want.GetOwnerReferences())
}

// setMeta copies want's labels, annotations and owner references onto have.
func setMeta(have, want metav1.Object) {
	l := maps.Clone(have.GetLabels())
	if l == nil {
		l = map[string]string{}
	}
	maps.Copy(l, want.GetLabels())
	have.SetLabels(l)
	a := maps.Clone(have.GetAnnotations())
	if a == nil {
		a = map[string]string{}
	}
	maps.Copy(a, want.GetAnnotations())
	have.SetAnnotations(a)
	have.SetOwnerReferences(want.GetOwnerReferences())
}

// ensureRole makes the owner's Role what g says and returns it as written,
// or nil when it was deleted meanwhile.
func (r *OwnerAccessReconciler) ensureRole(ctx context.Context, ns string, g policy.OwnerGrant, have *rbacv1.Role) (*rbacv1.Role, error) {
	want := &rbacv1.Role{ObjectMeta: ownerAccessMeta(ns, g), Rules: g.Rules()}
	if have == nil {
		err := r.Create(ctx, want)
		if err == nil {
			return want, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return nil, err
		}
		// There, but not in the cache: its label was removed.
		have = &rbacv1.Role{}
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(want), have); err != nil {
			return nil, client.IgnoreNotFound(err)
		}
	}
	if !metaDiffers(have, want) && equality.Semantic.DeepEqual(have.Rules, want.Rules) {
		return have, nil
	}
	orig := have.DeepCopy()
	setMeta(have, want)
	have.Rules = want.Rules
	if err := r.Patch(ctx, have, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	return have, nil
}

// ensureBinding binds the owner to role. The binding is owned by the Role,
// not by the keys: a new key of the owner changes the Role's owner
// references and resourceNames, and leaves the binding alone (one write
// per key fewer); the garbage collector still removes it after the Role.
func (r *OwnerAccessReconciler) ensureBinding(ctx context.Context, ns string, g policy.OwnerGrant, role *rbacv1.Role, have *rbacv1.RoleBinding) error {
	meta := ownerAccessMeta(ns, g)
	meta.OwnerReferences = []metav1.OwnerReference{{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "Role", Name: role.Name, UID: role.UID}}
	want := &rbacv1.RoleBinding{
		ObjectMeta: meta,
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: g.Name},
		Subjects:   []rbacv1.Subject{g.Subject},
	}
	if have == nil {
		err := r.Create(ctx, want)
		if !apierrors.IsAlreadyExists(err) {
			return err
		}
		have = &rbacv1.RoleBinding{}
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(want), have); err != nil {
			return client.IgnoreNotFound(err)
		}
	}
	if have.RoleRef != want.RoleRef {
		// roleRef cannot change: delete it; its deletion brings us back.
		return client.IgnoreNotFound(r.Delete(ctx, have, client.Preconditions{UID: &have.UID}))
	}
	if !metaDiffers(have, want) && equality.Semantic.DeepEqual(have.Subjects, want.Subjects) {
		return nil
	}
	orig := have.DeepCopy()
	setMeta(have, want)
	have.Subjects = want.Subjects
	return client.IgnoreNotFound(r.Patch(ctx, have, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})))
}

// namespaceOf queues the namespace of obj.
func namespaceOf(_ context.Context, obj client.Object) []ctrl.Request {
	return []ctrl.Request{{NamespacedName: types.NamespacedName{Namespace: obj.GetNamespace()}}}
}

// OwnerAccessDelay is how long a grant waits for the rest of a burst: a
// namespace's new keys and Secrets within it cost one Role write instead of
// one each. Only growth waits; a key's deletion or owner change takes its
// access away at once.
const OwnerAccessDelay = 500 * time.Millisecond

// enqueueOwnerAccess queues the namespace of a created object after
// OwnerAccessDelay, and of any other change at once.
func enqueueOwnerAccess() handler.EventHandler {
	return enqueueAfter(func(obj client.Object) []reconcile.Request { return namespaceOf(context.Background(), obj) }, OwnerAccessDelay, 0)
}

func (r *OwnerAccessReconciler) SetupWithManager(mgr ctrl.Manager) error {
	deletionChanged := func(o, n client.Object) bool {
		return o.GetDeletionTimestamp().IsZero() != n.GetDeletionTimestamp().IsZero()
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("owner-access").
		// Keys: created, deleted, their owner changed or their deletion started.
		Watches(&keyward.AccessKey{}, enqueueOwnerAccess(), builder.WithPredicates(predicate.Funcs{
			UpdateFunc: func(e event.UpdateEvent) bool {
				o, ok1 := e.ObjectOld.(*keyward.AccessKey)
				n, ok2 := e.ObjectNew.(*keyward.AccessKey)
				return !ok1 || !ok2 || o.Spec.Owner != n.Spec.Owner || deletionChanged(o, n)
			},
		})).
		// Keyward's Secrets (the only ones in the cache): created, deleted,
		// or their controller or deletion changed.
		Watches(&corev1.Secret{}, enqueueOwnerAccess(), builder.WithPredicates(predicate.Funcs{
			UpdateFunc: func(e event.UpdateEvent) bool {
				return deletionChanged(e.ObjectOld, e.ObjectNew) ||
					!equality.Semantic.DeepEqual(e.ObjectOld.GetOwnerReferences(), e.ObjectNew.GetOwnerReferences()) ||
					!equality.Semantic.DeepEqual(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels())
			},
		})).
		// Its own Roles and RoleBindings (the only ones in the cache): any
		// change by someone else is put right.
		Watches(&rbacv1.Role{}, handler.EnqueueRequestsFromMapFunc(namespaceOf)).
		Watches(&rbacv1.RoleBinding{}, handler.EnqueueRequestsFromMapFunc(namespaceOf)).
		Complete(r)
}
