package policy

import (
	"encoding/json"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// kstatusOf computes what kstatus (Flux, kpt, cli-utils) makes of an
// object of kind with generation, observedGeneration and conditions.
func kstatusOf(t *testing.T, kind string, generation, observed int64, conds []metav1.Condition) *status.Result {
	t.Helper()
	data, err := json.Marshal(map[string]any{
		"apiVersion": "keyward.dev/v1alpha1", "kind": kind,
		"metadata": map[string]any{"name": "x", "namespace": "shop", "generation": generation},
		"status":   map[string]any{"observedGeneration": observed, "conditions": conds},
	})
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(data); err != nil {
		t.Fatal(err)
	}
	res, err := status.Compute(u)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestKeyConditionsForKstatus(t *testing.T) {
	now := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		phase  keyward.KeyPhase
		reason string
		want   status.Status
		ready  metav1.ConditionStatus
	}{
		{keyward.PhaseActive, keyward.ReasonIssued, status.CurrentStatus, metav1.ConditionTrue},
		{keyward.PhaseInactive, keyward.ReasonInactive, status.CurrentStatus, metav1.ConditionTrue},
		{keyward.PhaseExpired, keyward.ReasonExpired, status.CurrentStatus, metav1.ConditionTrue},
		{keyward.PhaseRevoked, keyward.ReasonRevoked, status.CurrentStatus, metav1.ConditionTrue},
		{keyward.PhasePending, keyward.ReasonApplicationNotFound, status.InProgressStatus, metav1.ConditionFalse},
		{keyward.PhasePending, keyward.ReasonAPIKeysDisabled, status.InProgressStatus, metav1.ConditionFalse},
		{keyward.PhasePending, keyward.ReasonSecretNameConflict, status.FailedStatus, metav1.ConditionFalse},
		{keyward.PhasePending, keyward.ReasonSecretInvalid, status.FailedStatus, metav1.ConditionFalse},
		{keyward.PhasePending, keyward.ReasonInvalidSpec, status.FailedStatus, metav1.ConditionFalse},
		{keyward.PhasePending, keyward.ReasonInvalidTenantSettings, status.FailedStatus, metav1.ConditionFalse},
		{keyward.PhaseRejected, keyward.ReasonApplicationLimitExceeded, status.FailedStatus, metav1.ConditionFalse},
		{keyward.PhaseRejected, keyward.ReasonOwnerLimitExceeded, status.FailedStatus, metav1.ConditionFalse},
		{keyward.PhaseRejected, keyward.ReasonTenantLimitExceeded, status.FailedStatus, metav1.ConditionFalse},
		{keyward.PhaseRejected, keyward.ReasonScopeNotAllowed, status.FailedStatus, metav1.ConditionFalse},
	} {
		t.Run(string(tc.phase)+"/"+tc.reason, func(t *testing.T) {
			var conds []metav1.Condition
			msg := "because " + tc.reason
			SetConditions(&conds, 3, KeyOutcome(tc.phase, tc.reason), tc.reason, msg, now)
			res := kstatusOf(t, "AccessKey", 3, 3, conds)
			if res.Status != tc.want {
				t.Errorf("kstatus %s (%s), want %s; conditions %+v", res.Status, res.Message, tc.want, conds)
			}
			if tc.want == status.FailedStatus && res.Message != msg {
				t.Errorf("kstatus message %q, want the reason's message %q", res.Message, msg)
			}
			ready := meta.FindStatusCondition(conds, keyward.ConditionReady)
			if ready == nil || ready.Status != tc.ready || ready.Reason != tc.reason || ready.ObservedGeneration != 3 {
				t.Errorf("Ready %+v", ready)
			}
			// Abnormal-true: only the condition that applies is there.
			for _, c := range conds {
				if c.Type != keyward.ConditionReady && c.Status != metav1.ConditionTrue {
					t.Errorf("%s is %s; abnormal conditions are present only while True", c.Type, c.Status)
				}
			}
			if len(conds) > 2 {
				t.Errorf("%d conditions: %+v", len(conds), conds)
			}
			// An older generation is InProgress whatever the conditions say.
			if res := kstatusOf(t, "AccessKey", 4, 3, conds); res.Status != status.InProgressStatus {
				t.Errorf("unobserved generation: kstatus %s", res.Status)
			}
		})
	}
}

// Moving between outcomes leaves no stale Reconciling or Stalled behind, and
// Ready's lastTransitionTime moves only when its status does.
func TestConditionsTransitions(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	var conds []metav1.Condition
	SetConditions(&conds, 1, Waiting, keyward.ReasonApplicationNotFound, "no app", t0)
	SetConditions(&conds, 1, Stuck, keyward.ReasonScopeNotAllowed, "scope", t0.Add(time.Second))
	if meta.FindStatusCondition(conds, ConditionReconciling) != nil || !meta.IsStatusConditionTrue(conds, ConditionStalled) {
		t.Fatalf("after Stuck: %+v", conds)
	}
	readyAt := meta.FindStatusCondition(conds, keyward.ConditionReady).LastTransitionTime
	if !readyAt.Time.Equal(t0) {
		t.Errorf("Ready stayed False but its transition time moved to %s", readyAt)
	}
	SetConditions(&conds, 2, Done, keyward.ReasonIssued, "issued", t0.Add(2*time.Second))
	if len(conds) != 1 || !meta.IsStatusConditionTrue(conds, keyward.ConditionReady) {
		t.Fatalf("after Done: %+v", conds)
	}
	if got := kstatusOf(t, "AccessKey", 2, 2, conds).Status; got != status.CurrentStatus {
		t.Errorf("kstatus %s", got)
	}
}

func TestTenantConditionsForKstatus(t *testing.T) {
	now := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		kind, reason string
		want         status.Status
	}{
		{"Application", "Reconciled", status.CurrentStatus},
		{"Application", keyward.ReasonAPIKeysDisabled, status.InProgressStatus},
		{"Application", keyward.ReasonInvalidTenantSettings, status.FailedStatus},
		{"TenantSettings", "Enabled", status.CurrentStatus},
		{"TenantSettings", keyward.ReasonAPIKeysDisabled, status.CurrentStatus},
		{"TenantSettings", keyward.ReasonInvalidTenantSettings, status.FailedStatus},
	} {
		t.Run(tc.kind+"/"+tc.reason, func(t *testing.T) {
			var conds []metav1.Condition
			SetConditions(&conds, 1, TenantOutcome(tc.kind, tc.reason), tc.reason, "m", now)
			if got := kstatusOf(t, tc.kind, 1, 1, conds).Status; got != tc.want {
				t.Errorf("kstatus %s, want %s; %+v", got, tc.want, conds)
			}
		})
	}
}
