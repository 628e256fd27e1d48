package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/policy"
	"keyward.dev/keyward/internal/secrets"
)

// Import of a key restored object by object (docs/backup-restore.md): the
// I/O around policy's import rules.

// importHolder names ("namespace/name") another AccessKey whose status
// records the key ID key's import asks for, or "" when none does. It
// asks the API server (status.keyID is a selectable field), and only for
// a key whose Secret is ready to be adopted: a key lives in one place.
func (r *AccessKeyReconciler) importHolder(ctx context.Context, key *keyward.AccessKey, secret policy.SecretState) (string, error) {
	if secret != policy.SecretImportable {
		return "", nil
	}
	var list keyward.AccessKeyList
	if err := r.APIReader.List(ctx, &list, client.MatchingFields{"status.keyID": key.Annotations[keyward.ImportKeyIDAnnotation]}); err != nil {
		return "", err
	}
	for i := range list.Items {
		if list.Items[i].UID != key.UID {
			return list.Items[i].Namespace + "/" + list.Items[i].Name, nil
		}
	}
	return "", nil
}

// adopt takes the restored Secret s for key: its controller reference,
// Keyward's labels and annotations, the entry names key asks for. The
// update carries the resourceVersion s was read at, so a Secret changed
// since it was checked is not adopted (the conflict makes the key look
// again).
func (r *AccessKeyReconciler) adopt(ctx context.Context, key *keyward.AccessKey, s *corev1.Secret) error {
	secrets.Adopt(s, key)
	if err := controllerutil.SetControllerReference(key, s, r.Scheme()); err != nil {
		return err
	}
	return r.Update(ctx, s)
}
