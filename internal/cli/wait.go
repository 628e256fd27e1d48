package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// waitFlags adds --wait and --timeout.
func waitFlags(cmd *cobra.Command, w *bool, timeout *time.Duration, waitDefault bool, what string) {
	cmd.Flags().BoolVar(w, "wait", waitDefault, "wait until "+what)
	timeoutFlag(cmd, timeout, "how long --wait waits")
}

// timeoutFlag adds --timeout (60s by default), in the plugin's one duration syntax.
func timeoutFlag(cmd *cobra.Command, timeout *time.Duration, usage string) {
	*timeout = 60 * time.Second
	cmd.Flags().Var(&durationValue{d: timeout}, "timeout", usage+", e.g. 90s, 5m")
}

// waitFor polls the key until done says so, or the timeout passes. done
// may return an error to stop waiting (the key was deleted, revoked, ...).
func (s *session) waitFor(k *keyward.AccessKey, timeout time.Duration, what string,
	done func(*keyward.AccessKey) (bool, error)) (*keyward.AccessKey, error) {
	var last *keyward.AccessKey
	var stop error
	err := wait.PollUntilContextTimeout(s.ctx, s.PollInterval, timeout, true, func(ctx context.Context) (bool, error) {
		got, err := s.getKey(k.Name)
		if err != nil {
			stop = err
			return false, err
		}
		last = got
		ok, err := done(got)
		if err != nil {
			stop = err
		}
		return ok, err
	})
	if stop != nil {
		return last, stop
	}
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || wait.Interrupted(err) {
			return last, fmt.Errorf("timed out after %s waiting for %s (is the Keyward manager running?)", timeout, what)
		}
		return last, err
	}
	return last, nil
}

// reconciled reports whether the controller has acted on generation gen.
func reconciled(gen int64) func(*keyward.AccessKey) (bool, error) {
	return func(k *keyward.AccessKey) (bool, error) {
		return k.Status.ObservedGeneration >= gen, nil
	}
}

// FieldManager is the plugin's name in managedFields.
const FieldManager = "kubectl-keyward"

// mergePatch applies one JSON merge patch to the key and leaves the
// server's answer in k.
func (s *session) mergePatch(k *keyward.AccessKey, patch map[string]any) error {
	b, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	if err := s.c.Patch(s.ctx, k, client.RawPatch(types.MergePatchType, b), client.FieldOwner(FieldManager)); err != nil {
		return explain(err)
	}
	return nil
}
