package secrets

import (
	"context"
	"errors"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/policy"
)

// Writer does all I/O on the Secrets that hold key material: it reads
// them (digested, see Digest), and issues, rotates, re-issues and
// destroys the material and keeps the Secret's metadata. Every write
// order below is part of the manager's kill safety (docs/decisions.md,
// "Crash windows"): a manager stopped between any two writes leaves a
// state the next reconcile finishes from.
type Writer struct {
	// client is the manager's: cached reads (of digested Secrets) and writes.
	client client.Client
	// api reads what the cache may miss (a Secret whose labels were
	// stripped) or lag behind (our own last write), before material is
	// replaced or destroyed.
	api client.Reader
}

// NewWriter returns a Writer that writes through c and confirms with api.
func NewWriter(c client.Client, api client.Reader) *Writer {
	return &Writer{client: c, api: api}
}

// Read returns the Secret at key's Secret name, digested, or nil when
// there is none: from the cache, or from the API server when fresh.
func (w *Writer) Read(ctx context.Context, key *keyward.AccessKey, fresh bool) (*corev1.Secret, error) {
	return w.read(ctx, key.Namespace, key.SecretName(), fresh)
}

func (w *Writer) read(ctx context.Context, ns, name string, fresh bool) (*corev1.Secret, error) {
	var reader client.Reader = w.client
	if fresh {
		reader = w.api
	}
	var s corev1.Secret
	err := reader.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &s)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if fresh {
		Digest(&s) // the cache's copy is digested already
	}
	return &s, nil
}

// Write generates new key material for action (MaterialIssue, Rotate or
// Reissue) and puts it into the key's Secret; existing is what the plan
// saw at the Secret name. It returns the material to record in status.
// A name taken by a Secret the key may not use is refused as AlreadyExists.
func (w *Writer) Write(ctx context.Context, key *keyward.AccessKey, existing *corev1.Secret, action policy.MaterialAction) (keyformat.Key, error) {
	switch action {
	case policy.MaterialIssue:
		return w.Issue(ctx, key)
	case policy.MaterialRotate:
		return w.Rotate(ctx, key, existing)
	default:
		return w.Reissue(ctx, key, existing)
	}
}

// Issue puts a key's first material into a new Secret. A Secret already at
// the name gets the material only when it is the key's own, from an issue
// whose status write never happened (a stop between the two writes):
// material already in a Secret is never adopted.
func (w *Writer) Issue(ctx context.Context, key *keyward.AccessKey) (keyformat.Key, error) {
	material, desired, err := w.desired(key)
	if err != nil {
		return keyformat.Key{}, err
	}
	err = w.client.Create(ctx, desired)
	if !apierrors.IsAlreadyExists(err) {
		return material, err
	}
	existing, err := w.Read(ctx, key, true)
	if err != nil {
		return keyformat.Key{}, err
	}
	if existing == nil || !metav1.IsControlledBy(existing, key) || !existing.DeletionTimestamp.IsZero() {
		return keyformat.Key{}, nameTaken(key)
	}
	return material, w.overwrite(ctx, existing, desired)
}

// Rotate replaces the material of the key's intact Secret, in place. A
// rotation of a Secret that is not intact is a re-issue.
func (w *Writer) Rotate(ctx context.Context, key *keyward.AccessKey, existing *corev1.Secret) (keyformat.Key, error) {
	if Inspect(existing, key) != policy.SecretIntact {
		return w.Reissue(ctx, key, existing)
	}
	material, desired, err := w.desired(key)
	if err != nil {
		return keyformat.Key{}, err
	}
	return material, w.overwrite(ctx, existing, desired)
}

// Reissue puts new material into a new Secret after the key's Secret was
// lost or edited. A Secret someone edited is emptied and deleted, not
// reused with whatever finalizers, labels or annotations were added to it;
// the new one is created once it is gone (AlreadyExists until then).
func (w *Writer) Reissue(ctx context.Context, key *keyward.AccessKey, existing *corev1.Secret) (keyformat.Key, error) {
	state := Inspect(existing, key)
	if state == policy.SecretIntact {
		return w.Rotate(ctx, key, existing)
	}
	material, desired, err := w.desired(key)
	if err != nil {
		return keyformat.Key{}, err
	}
	switch state {
	case policy.SecretMissing:
		if existing != nil { // emptied, being deleted: create once it is gone
			return keyformat.Key{}, nameTaken(key)
		}
		return material, w.client.Create(ctx, desired)
	case policy.SecretTampered:
		if err := w.scrubAndDelete(ctx, existing); err != nil {
			return keyformat.Key{}, err
		}
		return material, w.client.Create(ctx, desired) // AlreadyExists while a finalizer keeps the old one
	}
	return keyformat.Key{}, nameTaken(key) // foreign
}

// Import adopts for key the restored Secret that Inspect found importable
// in seen (docs/backup-restore.md): its controller reference, Keyward's
// labels and annotations, the entry names key asks for. Renaming entries
// moves their values, so the Secret is read again from the API server; it
// is adopted only as it was when checked (the same resourceVersion, still
// importable), and the update carries that resourceVersion, so a Secret
// changed meanwhile is not adopted (the conflict makes the key look again).
func (w *Writer) Import(ctx context.Context, key *keyward.AccessKey, seen *corev1.Secret) error {
	var s corev1.Secret
	if err := w.api.Get(ctx, types.NamespacedName{Namespace: key.Namespace, Name: key.SecretName()}, &s); err != nil {
		return err
	}
	if seen == nil || s.UID != seen.UID || s.ResourceVersion != seen.ResourceVersion || !Importable(&s, key) {
		return apierrors.NewConflict(corev1.Resource("secrets"), s.Name, errors.New("the restored Secret changed since it was checked"))
	}
	Adopt(&s, key)
	if err := controllerutil.SetControllerReference(key, &s, w.client.Scheme()); err != nil {
		return err
	}
	return w.client.Update(ctx, &s)
}

// desired is fresh material and the Secret to hold it, controlled by key.
func (w *Writer) desired(key *keyward.AccessKey) (keyformat.Key, *corev1.Secret, error) {
	material, err := keyformat.Generate()
	if err != nil {
		return keyformat.Key{}, nil, err
	}
	desired := Desired(key, material)
	if err := controllerutil.SetControllerReference(key, desired, w.client.Scheme()); err != nil {
		return keyformat.Key{}, nil, err
	}
	return material, desired, nil
}

func nameTaken(key *keyward.AccessKey) error {
	return apierrors.NewAlreadyExists(corev1.Resource("secrets"), key.SecretName())
}

// overwrite puts desired's material, type, labels and controller reference
// into existing, one of the key's own Secrets.
func (w *Writer) overwrite(ctx context.Context, existing, desired *corev1.Secret) error {
	existing.Type = desired.Type
	existing.Data, existing.StringData = desired.Data, nil
	existing.OwnerReferences = desired.OwnerReferences
	existing.Labels, existing.Annotations = mergeMaps(existing.Labels, desired.Labels), mergeMaps(existing.Annotations, desired.Annotations)
	return w.client.Update(ctx, existing)
}

// Destroy empties and deletes the Secret holding the key's material. It is
// found with an API read by name, so stripped labels do not hide it, and
// recognised by its controller or by the key IDs status records, so a
// stripped owner reference does not either. Emptying comes first: a
// finalizer someone added keeps a deleted Secret, and it must keep no key.
func (w *Writer) Destroy(ctx context.Context, key *keyward.AccessKey) error {
	name := key.Status.SecretName
	if name == "" {
		name = key.SecretName()
	}
	s, err := w.read(ctx, key.Namespace, name, true)
	if err != nil || s == nil {
		return err
	}
	if !HoldsMaterialOf(s, key) {
		return nil // someone else's Secret: not ours to touch
	}
	if metav1.GetControllerOf(s) == nil {
		// Its owner reference was stripped: the write that empties it
		// takes it back, so that a manager stopped before the delete
		// still knows the emptied Secret as the key's (and the garbage
		// collector takes it with the key).
		if err := controllerutil.SetControllerReference(key, s, w.client.Scheme()); err != nil {
			return err
		}
	}
	return w.scrubAndDelete(ctx, s)
}

// scrubAndDelete empties s's data, then deletes it.
func (w *Writer) scrubAndDelete(ctx context.Context, s *corev1.Secret) error {
	if err := Scrub(ctx, w.client, s); err != nil {
		return err
	}
	if !s.DeletionTimestamp.IsZero() {
		return nil
	}
	return client.IgnoreNotFound(w.client.Delete(ctx, s, client.Preconditions{UID: &s.UID}))
}

// Scrub empties the data of s (read from the cache or digested: its values
// are not needed) with one update, which also carries any other change the
// caller made to s. An immutable Secret cannot be emptied; it is deleted
// all the same.
func Scrub(ctx context.Context, c client.Writer, s *corev1.Secret) error {
	if len(s.Data) == 0 && len(s.StringData) == 0 {
		return nil
	}
	s.Data, s.StringData = nil, nil
	err := c.Update(ctx, s)
	if apierrors.IsInvalid(err) || apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// SyncMetadata restores the labels, annotations and controller reference
// someone removed from the key's intact Secret s (digested), and gives its
// entries the names spec.secretTemplate.dataKeys asks for; the key
// material is left alone. Renaming entries moves their values, which the
// digest does not hold: that write starts from the Secret as the API
// server holds it, and is made only while that is still the intact one.
func (w *Writer) SyncMetadata(ctx context.Context, key *keyward.AccessKey, s *corev1.Secret) error {
	if LayoutChanged(s, key) {
		return w.moveEntries(ctx, key)
	}
	orig := s.DeepCopy()
	changed, err := w.applyMetadata(key, s)
	if err != nil || !changed {
		return err
	}
	return w.client.Patch(ctx, s, client.MergeFrom(orig))
}

// moveEntries renames the entries of the key's intact Secret, with a patch
// that loses to any write made since it read the Secret.
func (w *Writer) moveEntries(ctx context.Context, key *keyward.AccessKey) error {
	var s corev1.Secret
	if err := w.api.Get(ctx, types.NamespacedName{Namespace: key.Namespace, Name: key.SecretName()}, &s); err != nil {
		return client.IgnoreNotFound(err)
	}
	if Inspect(&s, key) != policy.SecretIntact {
		return nil // changed meanwhile: its watch event brings the key back
	}
	orig := s.DeepCopy()
	ApplyLayout(&s, key)
	if _, err := w.applyMetadata(key, &s); err != nil {
		return err
	}
	return w.client.Patch(ctx, &s, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
}

// applyMetadata sets on s the labels, annotations and controller reference
// key wants, and reports whether anything changed.
func (w *Writer) applyMetadata(key *keyward.AccessKey, s *corev1.Secret) (bool, error) {
	changed := ApplyMetadata(s, key)
	if !metav1.IsControlledBy(s, key) {
		if err := controllerutil.SetControllerReference(key, s, w.client.Scheme()); err != nil {
			return false, err
		}
		changed = true
	}
	return changed, nil
}

func mergeMaps(have, want map[string]string) map[string]string {
	if have == nil {
		have = map[string]string{}
	}
	for k, v := range want {
		have[k] = v
	}
	return have
}
