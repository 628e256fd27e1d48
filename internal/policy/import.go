package policy

import (
	"fmt"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// Import: a key restored object by object (docs/backup-restore.md) takes
// back the material its Secret holds when its import annotations name it.
// The admission policy keyward-accesskey-rights lets only holders of the
// `import` verb set them; these rules decide what the controller does.

// ImportRequested reports whether k asks to take back key material: an
// import annotation is set and k was never issued. An issued key ignores
// the annotations (its material is already its own).
func ImportRequested(k *keyward.AccessKey) bool {
	return !IsIssued(k) && (k.Annotations[keyward.ImportKeyIDAnnotation] != "" || k.Annotations[keyward.ImportSecretHashAnnotation] != "")
}

// importWait returns why a key that asks for an import cannot take its
// material back yet; ok is false when it can. Such a key is Pending
// (ImportPending): it is never issued anew, since that would re-key its
// clients, and nothing is adopted that the annotations do not name.
func importWait(o Observation) (message string, waiting bool) {
	k := o.Key
	id, hash := k.Annotations[keyward.ImportKeyIDAnnotation], k.Annotations[keyward.ImportSecretHashAnnotation]
	switch {
	case id == "" || hash == "":
		return fmt.Sprintf("an import needs both %s and %s (the key's status.keyID and status.secretHash from the backup)",
			keyward.ImportKeyIDAnnotation, keyward.ImportSecretHashAnnotation), true
	case o.ImportHeldBy != "":
		return fmt.Sprintf("key ID %s is held by AccessKey %s: a key lives in one place; delete that AccessKey (or its namespace) first",
			id, o.ImportHeldBy), true
	case o.Secret == SecretMissing:
		return fmt.Sprintf("waiting for Secret %q, holding key ID %s, to be restored; the key is not issued anew meanwhile", k.SecretName(), id), true
	case o.Secret != SecretImportable:
		return fmt.Sprintf("Secret %q does not hold the key the import names (key ID %s and its hash), or another object controls it; it is never adopted", k.SecretName(), id), true
	}
	return "", false
}
