package controllers

import (
	"context"

	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/policy"
)

// Import of a key restored object by object (docs/backup-restore.md): the
// lookup around policy's import rules (the Secret writer adopts).

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
