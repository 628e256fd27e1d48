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
		Short: "Print the key itself, from its Secret (the key's owner may; others need get on secrets)",
		Long: `Prints the full key, read from the key's Secret, to standard output and nothing
else: with create, the only commands that print key material. The owner of a key
(spec.owner) may read its Secret: Keyward grants each owner get on exactly the
Secrets of their own keys. Anyone else needs get on secrets in the namespace
(see docs/kubectl-plugin.md).`,
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
	key, err := s.readSecretKey(k)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(s.Out, key)
	return err
}

// readSecretKey reads the current key of k from its Secret. Its errors never
// hold key material.
func (s *session) readSecretKey(k *keyward.AccessKey) (string, error) {
	if k.Spec.Revoked || k.Status.Phase == keyward.PhaseRevoked {
		return "", revokedErr(k, "there is nothing to reveal")
	}
	if k.Status.KeyID == "" {
		return "", notIssued(k, "there is nothing to reveal yet")
	}
	secretName := or(k.Status.SecretName, k.SecretName())
	var sec corev1.Secret
	if err := s.c.Get(s.ctx, client.ObjectKey{Namespace: k.Namespace, Name: secretName}, &sec); err != nil {
		switch {
		case apierrors.IsForbidden(err):
			return "", &revealForbidden{fmt.Errorf("you may not read the Secret %s/%s of accesskey %s: Keyward lets only the key's owner (%s) read it, "+
				"a moment after it is issued; anyone else needs get on secrets in namespace %s (see docs/kubectl-plugin.md): %s",
				k.Namespace, secretName, ref(k), or(k.Spec.Owner, "none"), k.Namespace, oneLine(err.Error()))}
		case apierrors.IsNotFound(err):
			return "", &revealNotYet{fmt.Errorf("the Secret %s/%s of accesskey %s does not exist (yet): the controller re-issues the key when its Secret is deleted; try again in a moment",
				k.Namespace, secretName, ref(k))}
		}
		return "", explain(err)
	}
	key, ok := keyIn(&sec, k.Status.KeyID)
	if !ok {
		return "", &revealNotYet{fmt.Errorf("the Secret %s/%s does not hold the current key of accesskey %s (key ID %s): it is being re-issued or rotated; try again in a moment",
			k.Namespace, secretName, ref(k), short(k.Status.KeyID))}
	}
	return key, nil
}

// revealForbidden and revealNotYet are the readSecretKey errors that may pass
// by themselves (create waits them out).
type revealForbidden struct{ error }
type revealNotYet struct{ error }

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
