package cli

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// RotateResult is what rotate reports (-o json|yaml).
type RotateResult struct {
	Namespace   string `json:"namespace"`
	Name        string `json:"name"`
	Request     string `json:"request"`
	GracePeriod string `json:"gracePeriod,omitempty"`
	OldKeyID    string `json:"oldKeyID"`
	// NewKeyID is set with --wait.
	NewKeyID string `json:"newKeyID,omitempty"`
	// PreviousValidUntil is how long the old key keeps verifying (with --wait).
	PreviousValidUntil string `json:"previousValidUntil,omitempty"`
}

func newRotateCommand(o *Options) *cobra.Command {
	var output string
	var grace time.Duration
	graceFlag := &durationValue{d: &grace}
	var waitDone bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "rotate KEY [--grace 1h] [--wait]",
		Short: "Issue a new key ID and secret; the old key keeps verifying for the grace period",
		Long: `Requests a rotation by giving the annotation keyward.dev/rotate a fresh, unique value.
With --grace, spec.rotation.gracePeriod is set in the same write, so the old key
keeps verifying that long. With --wait, returns once the new key ID is in status.`,
		Example: `  kubectl keyward rotate dana-key -n shop --grace 1h --wait`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := keyArg(cmd, args); err != nil {
				return err
			}
			if graceFlag.set && grace > keyward.MaxGracePeriod {
				return fmt.Errorf("--grace is at most %s", formatDuration(keyward.MaxGracePeriod))
			}
			return checkResultOutput(output)
		},
		ValidArgsFunction: o.completeKeys,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := o.session(cmd)
			if err != nil {
				return err
			}
			var g *time.Duration
			if graceFlag.set {
				g = &grace
			}
			return s.rotate(args[0], g, waitDone, timeout, output)
		},
	}
	cmd.Flags().Var(graceFlag, "grace", "how long the old key keeps verifying (spec.rotation.gracePeriod), e.g. 1h or 1d; at most 30d")
	waitFlags(cmd, &waitDone, &timeout, false, "the new key ID is in status, and print it")
	resultOutputFlag(cmd, &output)
	return cmd
}

// rotationRequest is a value for keyward.dev/rotate that no one has used:
// the time, and 48 random bits in case two requests share a second.
func rotationRequest(now time.Time, random io.Reader) (string, error) {
	if random == nil {
		random = rand.Reader
	}
	b := make([]byte, 6)
	if _, err := io.ReadFull(random, b); err != nil {
		return "", err
	}
	return now.UTC().Format(time.RFC3339) + "-" + hex.EncodeToString(b), nil
}

func (s *session) rotate(name string, grace *time.Duration, waitDone bool, timeout time.Duration, output string) error {
	k, err := s.getKey(name)
	if err != nil {
		return err
	}
	if k.Spec.Revoked {
		return revokedErr(k, "there is nothing to rotate")
	}
	if k.Status.KeyID == "" {
		return notIssued(k, "there is nothing to rotate yet")
	}
	req, err := rotationRequest(s.Now(), s.Random)
	if err != nil {
		return err
	}
	res := RotateResult{Namespace: k.Namespace, Name: k.Name, Request: req, OldKeyID: k.Status.KeyID}
	patch := map[string]any{"metadata": map[string]any{"annotations": map[string]any{keyward.RotateAnnotation: req}}}
	if grace != nil {
		res.GracePeriod = grace.String()
		patch["spec"] = map[string]any{"rotation": map[string]any{"gracePeriod": grace.String()}}
	}
	if err := s.mergePatch(k, patch); err != nil {
		return err
	}
	if waitDone && (k.Status.Phase == keyward.PhasePending || k.Status.Phase == keyward.PhaseRejected) {
		reason, _ := ready(k)
		return fmt.Errorf("rotation of accesskey %s requested (keyward.dev/rotate=%s), but the key is %s (reason %s): the controller rotates it once the key is issued again, so there is nothing to wait for",
			ref(k), req, k.Status.Phase, or(reason, none))
	}
	if waitDone {
		k, err = s.waitFor(k, timeout, "the rotation of accesskey "+ref(k), func(k *keyward.AccessKey) (bool, error) {
			if k.Spec.Revoked {
				return false, revokedErr(k, "it was revoked while rotating")
			}
			return k.Status.Rotation != nil && k.Status.Rotation.LastRequest == req && k.Status.KeyID != res.OldKeyID, nil
		})
		if err != nil {
			return err
		}
		res.NewKeyID = k.Status.KeyID
		if pk := k.Status.PreviousKey; pk != nil && pk.KeyID == res.OldKeyID {
			res.PreviousValidUntil = rfc3339(pk.ValidUntil.Time)
		}
	}
	if output != "" {
		return printStructured(s.Out, output, res)
	}
	return printRotate(s.Out, res, s.Now())
}

func printRotate(w io.Writer, r RotateResult, now time.Time) error {
	if r.NewKeyID == "" {
		_, err := fmt.Fprintf(w, "accesskey %s/%s: rotation requested (keyward.dev/rotate=%s); current key ID %s\n",
			r.Namespace, r.Name, r.Request, r.OldKeyID)
		return err
	}
	old := "the old key stopped verifying"
	if r.PreviousValidUntil != "" {
		if t, err := time.Parse(time.RFC3339, r.PreviousValidUntil); err == nil {
			old = "the old key verifies until " + r.PreviousValidUntil + " (" + until(t, now) + ")"
		}
	}
	_, err := fmt.Fprintf(w, "accesskey %s/%s rotated\n  old key ID: %s\n  new key ID: %s\n  %s\n",
		r.Namespace, r.Name, r.OldKeyID, r.NewKeyID, old)
	return err
}
