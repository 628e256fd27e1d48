package controllers

import (
	"context"
	"errors"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/policy"
)

// The AccessKey controller's status writes, with their fallbacks, and how
// the API server's refusals of a key's Secret map to the spec fields the
// user must fix.

// showDeleting records in the status of a key being deleted that it is
// (finalizers keep it): Ready=False, reason Deleting, the finalizers named.
// Nothing else is done for it: it keeps whatever slot it held until it is
// gone (the slot ledger counts it), the verifier refuses it, and its
// Secret goes with it. One status patch, and none when the status already
// says so; the API server accepts status writes on a terminating object.
func (r *AccessKeyReconciler) showDeleting(ctx context.Context, key *keyward.AccessKey, now time.Time) (ctrl.Result, error) {
	st := policy.DeletingStatus(key, now)
	if equality.Semantic.DeepEqual(key.Status, st) {
		return ctrl.Result{}, nil
	}
	desired := key.DeepCopy()
	desired.Status = st
	err := r.Status().Patch(ctx, desired, client.MergeFromWithOptions(key, client.MergeFromWithOptimisticLock{}))
	switch {
	case apierrors.IsConflict(err):
		return ctrl.Result{RequeueAfter: policy.MinRequeue}, nil
	case apierrors.IsInvalid(err):
		// A spec the restored CRD refuses makes every status write fail
		// (decision 60): nothing to retry until it changes.
		logf.FromContext(ctx).V(1).Info("the API server refused the status of a key being deleted", "error", err.Error())
		return ctrl.Result{}, nil
	}
	return ctrl.Result{}, client.IgnoreNotFound(err)
}

// writeStatus writes the planned status with one patch; after a material
// write that patch cannot lose a race, so a written Secret is always
// recorded (should it conflict all the same, the status goes onto the
// latest version of the key). If the API
// server refuses the status as invalid, a minimal one (phase, Ready with
// its reason, the material record) is written instead, so that no key is
// left without a status.
func (r *AccessKeyReconciler) writeStatus(ctx context.Context, key *keyward.AccessKey, plan policy.Plan, wrote bool) error {
	if equality.Semantic.DeepEqual(key.Status, plan.Status) {
		return nil
	}
	desired := key.DeepCopy()
	desired.Status = plan.Status
	// Optimistic locking keeps a stale view from overwriting newer status.
	// After a material write the Secret holds the new key whatever else
	// changed meanwhile (typically the owner-reference patch), so the patch
	// goes through without the lock: one request, and the key is recorded.
	var opts []client.MergeFromOption
	if !wrote {
		opts = append(opts, client.MergeFromWithOptimisticLock{})
	}
	err := r.Status().Patch(ctx, desired, client.MergeFromWithOptions(key, opts...))
	switch {
	case err == nil:
	case apierrors.IsConflict(err) && wrote:
		err = r.reapplyStatus(ctx, key, plan.Status)
	case apierrors.IsInvalid(err):
		logf.FromContext(ctx).V(1).Info("the API server refused the planned status; writing a minimal one", "error", err.Error())
		err = r.reapplyStatus(ctx, key, policy.MinimalStatus(plan, key))
	}
	if err == nil {
		logf.FromContext(ctx).V(1).Info("status updated", "phase", plan.Status.Phase, "reason", plan.Ready().Reason, "keyID", plan.Status.KeyID)
	}
	return err
}

// reapplyStatus writes status onto the latest version of the key. Only
// lastUsedAt, which the verifier writes, is taken from the latest version.
func (r *AccessKeyReconciler) reapplyStatus(ctx context.Context, key *keyward.AccessKey, status keyward.AccessKeyStatus) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var latest keyward.AccessKey
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(key), &latest); err != nil {
			return err
		}
		if latest.UID != key.UID {
			return apierrors.NewNotFound(keyward.GroupVersion.WithResource("accesskeys").GroupResource(), key.Name)
		}
		lastUsed := latest.Status.LastUsedAt
		latest.Status = *status.DeepCopy()
		latest.Status.LastUsedAt = lastUsed
		return r.Status().Update(ctx, &latest)
	})
}

// secretRefusal tells whether the API server refused the key's Secret for
// a reason only the user can fix, and which spec fields are at fault. The
// API server's message is not passed on: it may echo any template value.
func secretRefusal(err error) (policy.Refusal, bool) {
	switch {
	case apierrors.IsAlreadyExists(err):
		return policy.Refusal{Reason: keyward.ReasonSecretNameConflict}, true
	case apierrors.IsInvalid(err):
		return policy.Refusal{Reason: keyward.ReasonSecretInvalid, Fields: fieldsOf(err)}, true
	}
	return policy.Refusal{}, false
}

// fieldsOf maps the fields an Invalid error names on the Secret to the
// AccessKey spec fields that set them.
func fieldsOf(err error) []string {
	var status apierrors.APIStatus
	if !errors.As(err, &status) || status.Status().Details == nil {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	for _, c := range status.Status().Details.Causes {
		var f string
		switch {
		case strings.HasPrefix(c.Field, "metadata.labels"):
			f = "spec.secretTemplate.labels"
		case strings.HasPrefix(c.Field, "metadata.annotations"):
			f = "spec.secretTemplate.annotations"
		case strings.HasPrefix(c.Field, "metadata.name"):
			f = "spec.secretTemplate.name"
		default:
			continue
		}
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	return out
}
