package policy

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// Condition types GitOps tools read besides Ready (kstatus, which Flux,
// cli-utils and kubectl-based tooling use; "abnormal-true": present only
// while the object is not where it should be).
const (
	// ConditionReconciling: Keyward is working towards the desired state or
	// waiting for something that will come on its own (an Application, the
	// tenant's switch). kstatus: InProgress.
	ConditionReconciling = "Reconciling"
	// ConditionStalled: the desired state cannot be reached until a user
	// changes something (a limit, a scope, a name conflict). kstatus: Failed.
	ConditionStalled = "Stalled"
)

// Outcome is where a reconcile left an object, as GitOps tools see it.
type Outcome int

const (
	// Done: the object is in the state its spec asks for (Ready=True). An
	// Inactive, Expired or Revoked key is Done: the user asked for it.
	Done Outcome = iota
	// Waiting: not there yet, and it will get there without a user's help
	// (Ready=False, Reconciling=True).
	Waiting
	// Stuck: not there, and it will not get there until a user changes
	// something (Ready=False, Stalled=True).
	Stuck
)

// KeyOutcome is the outcome of an AccessKey in phase with the Ready reason.
func KeyOutcome(phase keyward.KeyPhase, reason string) Outcome {
	switch phase {
	case keyward.PhaseActive, keyward.PhaseInactive, keyward.PhaseExpired, keyward.PhaseRevoked:
		return Done
	case keyward.PhaseRejected:
		return Stuck
	}
	switch reason {
	case keyward.ReasonSecretNameConflict, keyward.ReasonSecretInvalid, keyward.ReasonInvalidSpec, keyward.ReasonInvalidTenantSettings:
		return Stuck
	}
	// Pending for the Application, the tenant's switch or the limits'
	// bookkeeping: it is issued once they are there.
	return Waiting
}

// TenantOutcome is the outcome of an Application or a TenantSettings whose
// Ready condition has reason. A TenantSettings switched off is Done (the
// switch is what the user set); an Application in such a tenant waits for
// it to be switched on; an invalid TenantSettings stalls both.
func TenantOutcome(kind, reason string) Outcome {
	switch {
	case reason == keyward.ReasonInvalidTenantSettings:
		return Stuck
	case reason == keyward.ReasonAPIKeysDisabled && kind == "Application":
		return Waiting
	}
	return Done
}

// SetConditions writes Ready, Reconciling and Stalled for outcome into
// conds, all observing generation: Ready is always there (True only when
// Done), Reconciling only while Waiting, Stalled only while Stuck, each
// with reason and message (bounded by the caller). A condition's lastTransitionTime changes only
// when its status does.
func SetConditions(conds *[]metav1.Condition, generation int64, outcome Outcome, reason, message string, now time.Time) {
	status := func(b bool) metav1.ConditionStatus {
		if b {
			return metav1.ConditionTrue
		}
		return metav1.ConditionFalse
	}
	at := metav1.NewTime(now.Truncate(time.Second))
	meta.SetStatusCondition(conds, metav1.Condition{
		Type: keyward.ConditionReady, Status: status(outcome == Done), Reason: reason, Message: message,
		ObservedGeneration: generation, LastTransitionTime: at,
	})
	for t, on := range map[string]bool{ConditionReconciling: outcome == Waiting, ConditionStalled: outcome == Stuck} {
		if !on {
			meta.RemoveStatusCondition(conds, t)
			continue
		}
		meta.SetStatusCondition(conds, metav1.Condition{
			Type: t, Status: metav1.ConditionTrue, Reason: reason, Message: message,
			ObservedGeneration: generation, LastTransitionTime: at,
		})
	}
}

// DeletingStatus is the status of a key being deleted (it has a
// deletionTimestamp, and finalizers keep it): its recorded phase and
// material record stay as they were, and Ready turns False with reason
// Deleting, waiting (Reconciling) for the finalizers the message names. A
// key that already shows it gets the same status back, so writing it is
// idempotent.
func DeletingStatus(k *keyward.AccessKey, now time.Time) keyward.AccessKeyStatus {
	st := *k.Status.DeepCopy()
	st.ObservedGeneration = k.Generation
	SetConditions(&st.Conditions, k.Generation, Waiting, keyward.ReasonDeleting, deletingMessage(k.Finalizers), now)
	return st
}

func deletingMessage(finalizers []string) string {
	if len(finalizers) == 0 {
		return "the key is being deleted; it no longer verifies"
	}
	return BoundMessage("the key is being deleted and no longer verifies; waiting for the finalizers " + strings.Join(quoteAll(finalizers), ", "))
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strconv.Quote(s)
	}
	return out
}

// SetScopeNames writes the ScopeNames condition: False, naming them, while
// scopes hold names that are not ValidScopeName; removed otherwise.
func SetScopeNames(conds *[]metav1.Condition, generation int64, scopes []keyward.Scope, now time.Time) {
	bad := InvalidScopeNames(scopes)
	if len(bad) == 0 {
		meta.RemoveStatusCondition(conds, keyward.ConditionScopeNames)
		return
	}
	meta.SetStatusCondition(conds, metav1.Condition{
		Type: keyward.ConditionScopeNames, Status: metav1.ConditionFalse, Reason: keyward.ReasonInvalidScopeName,
		Message: BoundMessage(fmt.Sprintf("scope names %q are not OAuth 2.0 scope tokens without ':' and ',', so they are never granted; "+
			"rename them (docs/kinds.md)", bad)),
		ObservedGeneration: generation, LastTransitionTime: metav1.NewTime(now.Truncate(time.Second)),
	})
}
