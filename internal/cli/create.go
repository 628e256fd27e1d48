package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

func newCreateCommand(o *Options) *cobra.Command {
	var app, description, expiresAt string
	var expiresIn time.Duration
	expiresInFlag := &durationValue{d: &expiresIn}
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "create KEY --application APP [--description TEXT] [--expires-in 90d | --expires-at TIME]",
		Short: "Create an AccessKey owned by you, wait until it is issued and print the key once",
		Long: `Creates an AccessKey (the admission policy makes you its owner), waits until
the controller has issued it, and prints the full key to standard output and
nothing else; what was created goes to standard error. Store the key now: it is
shown only by this command and by reveal, which reads it from the key's Secret
(as the owner you may; see docs/kubectl-plugin.md). A key the controller does
not issue (a full Application, tenant or owner limit, a missing Application)
is left in place with its reason: delete it or make room.`,
		Example: `  kubectl keyward create dana-key -n shop --application portal > key.txt
  API_KEY="$(kubectl keyward create ci-key -n shop --application portal --expires-in 90d)"`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := keyArg(cmd, args); err != nil {
				return err
			}
			switch {
			case app == "":
				return fmt.Errorf("create needs --application, the Application the key is for")
			case expiresInFlag.set && expiresAt != "":
				return fmt.Errorf("give at most one of --expires-in and --expires-at")
			case expiresInFlag.set && expiresIn <= 0:
				return fmt.Errorf("--expires-in must be positive")
			case expiresAt != "":
				if _, err := keyward.Timestamp(expiresAt).Parse(); err != nil {
					return fmt.Errorf("--expires-at: %v", err)
				}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := o.session(cmd)
			if err != nil {
				return err
			}
			k := &keyward.AccessKey{
				ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: args[0]},
				Spec:       keyward.AccessKeySpec{Application: app, Description: description},
			}
			switch {
			case expiresInFlag.set:
				k.Spec.ExpiresAt = keyward.NewTimestamp(s.Now().Add(expiresIn))
			case expiresAt != "":
				t, _ := keyward.Timestamp(expiresAt).Parse()
				k.Spec.ExpiresAt = keyward.NewTimestamp(t)
			}
			return s.create(k, timeout)
		},
	}
	cmd.Flags().StringVar(&app, "application", "", "the Application the key is for (required)")
	cmd.Flags().StringVar(&description, "description", "", "what the key is for")
	cmd.Flags().Var(expiresInFlag, "expires-in", "the key expires this long from now, e.g. 90d, 36h")
	cmd.Flags().StringVar(&expiresAt, "expires-at", "", "the key expires at this RFC 3339 time, e.g. 2027-01-31T00:00:00Z")
	timeoutFlag(cmd, &timeout, "how long to wait for the key to be issued and readable")
	return cmd
}

func (s *session) create(k *keyward.AccessKey, timeout time.Duration) error {
	if err := s.c.Create(s.ctx, k, client.FieldOwner(FieldManager)); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("accesskey %s already exists: create makes a new key (use reveal to print an existing one, rotate to replace its material)", ref(k))
		}
		return explain(err)
	}
	gen := k.Generation
	issued, err := s.waitFor(k, timeout, "accesskey "+ref(k)+" to be issued", func(got *keyward.AccessKey) (bool, error) {
		if got.Status.KeyID != "" && got.Status.Phase == keyward.PhaseActive {
			return true, nil
		}
		if got.Status.ObservedGeneration >= gen && (got.Status.Phase == keyward.PhaseRejected || got.Status.Phase == keyward.PhasePending) {
			reason, msg := ready(got)
			return false, fmt.Errorf("accesskey %s was created but not issued (phase %s, reason %s): %s; it stays until you delete it (kubectl delete accesskey %s -n %s)",
				ref(got), got.Status.Phase, or(reason, none), or(msg, none), got.Name, got.Namespace)
		}
		return false, nil
	})
	if err != nil {
		return err
	}
	// The owner's right to read the Secret follows the Secret by a moment.
	var key string
	var last error
	err = wait.PollUntilContextTimeout(s.ctx, s.PollInterval, timeout, true, func(context.Context) (bool, error) {
		key, last = s.readSecretKey(issued)
		var forbidden *revealForbidden
		var notYet *revealNotYet
		switch {
		case last == nil:
			return true, nil
		case errors.As(last, &forbidden), errors.As(last, &notYet):
			if got, err := s.getKey(issued.Name); err == nil {
				issued = got
			}
			return false, nil
		}
		return false, last
	})
	if err != nil {
		if last == nil {
			last = err
		}
		return fmt.Errorf("accesskey %s is issued (key ID %s) but its key could not be read within %s: %w", ref(issued), short(issued.Status.KeyID), timeout, last)
	}
	_, _ = fmt.Fprintf(s.ErrOut, "accesskey %s created for application %s (owner %s, key ID %s). The key follows on standard output: store it now.\n",
		ref(issued), issued.Spec.Application, or(issued.Spec.Owner, none), short(issued.Status.KeyID))
	_, err = fmt.Fprintln(s.Out, key)
	return err
}
