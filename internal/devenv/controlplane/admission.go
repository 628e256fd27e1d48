package controlplane

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// WaitForAdmissionPolicies returns once the API server runs Keyward's
// admission policies on AccessKeys: a server-side dry-run create of an
// AccessKey without an owner, created Inactive, comes back with the owner
// and the actor stamped. Right after
// the CRDs and policies are installed the API server first answers 503 (the
// policies' type information for a new CRD lags behind serving it) and then,
// for a moment, may not have loaded the policies yet; a suite or a user
// creating keys in that window would see either.
func WaitForAdmissionPolicies(ctx context.Context, c client.Client, ns string, timeout time.Duration) error {
	var lastErr error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		probe := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "keyward.dev/v1alpha1",
			"kind":       "AccessKey",
			"metadata":   map[string]any{"generateName": "admission-probe-", "namespace": ns},
			// Inactive at create: keyward-stamp-actor names the creator.
			"spec": map[string]any{"application": "admission-probe", "state": "Inactive"},
		}}
		if lastErr = c.Create(ctx, probe, client.DryRunAll); lastErr != nil {
			return false, nil
		}
		owner, _, _ := unstructured.NestedString(probe.Object, "spec", "owner")
		if owner == "" {
			lastErr = errors.New("the dry-run AccessKey came back without an owner: keyward-stamp-owner is not active yet")
		}
		if owner == "" {
			return false, nil
		}
		if actor, _, _ := unstructured.NestedString(probe.Object, "metadata", "annotations", "keyward.dev/state-changed-by"); actor == "" {
			lastErr = errors.New("the dry-run AccessKey came back without keyward.dev/state-changed-by: keyward-stamp-actor is not active yet")
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return errors.Join(fmt.Errorf("admission policies not active on AccessKeys within %s", timeout), lastErr)
	}
	return nil
}
