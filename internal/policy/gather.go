package policy

import keyward "keyward.dev/keyward/api/v1alpha1"

// ConfirmSecret reports whether the key's Secret, found in state cached in
// the manager's cache, must be read again from the API server before the
// key is planned. The cache may miss a Secret whose labels were stripped,
// or lag behind the manager's own last write, and material is never
// replaced on its word: an issued key that is not revoked is confirmed
// when its cached Secret is not intact (a re-issue) or a rotation is
// asked for. A key waiting for a taken Secret name looks whether the name
// is free before it competes again, and a key asked to import a restored
// Secret checks it where it is. A first issue needs no read (a taken
// name refuses the create) and destruction reads the Secret itself.
func ConfirmSecret(k *keyward.AccessKey, cached SecretState) bool {
	if RefusedForName(k) || ImportRequested(k) {
		return true
	}
	return !k.Spec.Revoked && IsIssued(k) && (cached != SecretIntact || rotationRequested(k))
}
