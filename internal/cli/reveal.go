package cli

import (
	"fmt"
	"sort"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/secrets"
)

func newRevealCommand(o *Options) *cobra.Command {
	return &cobra.Command{
		Use:   "reveal KEY",
		Short: "Print the key itself, from its Secret (needs get on secrets in the namespace)",
		Long: `Prints the full key, read from the key's Secret, to standard output and nothing
else: the only command that prints key material. It needs permission to get the
Secret, which none of Keyward's roles grants (see docs/kubectl-plugin.md).`,
		Example: `  kubectl keyward reveal dana-key -n shop > key.txt
  API_KEY="$(kubectl keyward reveal dana-key -n shop)"`,
		Args:              keyArg,
		ValidArgsFunction: o.completeKeys,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := o.session(cmd)
			if err != nil {
				return err
			}
			return s.reveal(args[0])
		},
	}
}

func (s *session) reveal(name string) error {
	k, err := s.getKey(name)
	if err != nil {
		return err
	}
	if k.Spec.Revoked || k.Status.Phase == keyward.PhaseRevoked {
		return revokedErr(k, "there is nothing to reveal")
	}
	if k.Status.KeyID == "" {
		return notIssued(k, "there is nothing to reveal yet")
	}
	secretName := or(k.Status.SecretName, k.SecretName())
	var sec corev1.Secret
	if err := s.c.Get(s.ctx, client.ObjectKey{Namespace: k.Namespace, Name: secretName}, &sec); err != nil {
		switch {
		case apierrors.IsForbidden(err):
			return fmt.Errorf("reveal needs permission to get secrets in namespace %s, which you do not have "+
				"(Keyward's roles do not grant it: ask for a Role with get on secrets, see docs/kubectl-plugin.md): %s",
				k.Namespace, oneLine(err.Error()))
		case apierrors.IsNotFound(err):
			return fmt.Errorf("the Secret %s/%s of accesskey %s does not exist (yet): the controller re-issues the key when its Secret is deleted; try again in a moment",
				k.Namespace, secretName, ref(k))
		}
		return explain(err)
	}
	key, ok := keyIn(&sec, k.Status.KeyID)
	if !ok {
		return fmt.Errorf("the Secret %s/%s does not hold the current key of accesskey %s (key ID %s): it is being re-issued or rotated; try again in a moment",
			k.Namespace, secretName, ref(k), short(k.Status.KeyID))
	}
	_, err = fmt.Fprintln(s.Out, key)
	return err
}

// keyIn finds the key with the given ID in a Secret: under its usual data
// key, or under any other (a Secret template may rename the data keys).
func keyIn(sec *corev1.Secret, id string) (string, bool) {
	names := make([]string, 0, len(sec.Data))
	for n := range sec.Data {
		if n != secrets.DataAccessKey {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range append([]string{secrets.DataAccessKey}, names...) {
		v, ok := sec.Data[n]
		if !ok {
			continue
		}
		if parsed, err := keyformat.Parse(string(v)); err == nil && parsed.ID == id {
			return string(v), true
		}
	}
	return "", false
}
