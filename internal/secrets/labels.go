// Package secrets builds the Kubernetes Secret that holds an AccessKey's key
// material.
package secrets

// Labels and keys of a generated Secret (docs/kinds.md).
const (
	SecretType      = "keyward.dev/access-key"
	LabelManagedBy  = "app.kubernetes.io/managed-by"
	ManagedByValue  = "keyward"
	LabelAccessKey  = "keyward.dev/access-key"
	DataAccessKey   = "accessKey"
	DataKeyID       = "keyId"
	DataApplication = "application"
)

// ManagedLabels selects every Secret Keyward generates; the manager's cache
// is filtered by it.
func ManagedLabels() map[string]string {
	return map[string]string{LabelManagedBy: ManagedByValue}
}
