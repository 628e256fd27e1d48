package verify

import (
	"context"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// IndexKeyID is the field index from a key ID to the AccessKeys holding it,
// as their current (status.keyID) or previous (status.previousKey.keyID)
// key material.
const IndexKeyID = "keyward.verify.keyID"

// KeyIDs is the IndexKeyID index function.
func KeyIDs(o client.Object) []string {
	k, ok := o.(*keyward.AccessKey)
	if !ok {
		return nil
	}
	var ids []string
	if k.Status.KeyID != "" {
		ids = append(ids, k.Status.KeyID)
	}
	if pk := k.Status.PreviousKey; pk != nil && pk.KeyID != "" && pk.KeyID != k.Status.KeyID {
		ids = append(ids, pk.KeyID)
	}
	return ids
}

// Store is what the verifier reads. Objects it returns are shared with the
// cache: read them, never change them.
type Store interface {
	// AccessKeysByID returns the AccessKeys whose current or previous key ID is id.
	AccessKeysByID(ctx context.Context, id string) ([]*keyward.AccessKey, error)
	// Application returns the Application, or nil when there is none.
	Application(ctx context.Context, namespace, name string) (*keyward.Application, error)
	// TenantSettings returns the namespace's TenantSettings "default", or nil.
	TenantSettings(ctx context.Context, namespace string) (*keyward.TenantSettings, error)
	// AccessKeys lists every AccessKey (for the metrics collector).
	AccessKeys(ctx context.Context) ([]*keyward.AccessKey, error)
	// AccessKey returns one AccessKey, or nil.
	AccessKey(ctx context.Context, namespace, name string) (*keyward.AccessKey, error)
}

// CacheStore reads the manager's informer cache: no request to the API
// server. Objects are not deep-copied (UnsafeDisableDeepCopy), which is what
// makes a verification allocation-light; nothing here writes to them.
type CacheStore struct {
	Reader client.Reader
}

var noCopy = client.UnsafeDisableDeepCopy

func (s CacheStore) AccessKeysByID(ctx context.Context, id string) ([]*keyward.AccessKey, error) {
	var list keyward.AccessKeyList
	if err := s.Reader.List(ctx, &list, client.MatchingFields{IndexKeyID: id}, noCopy); err != nil {
		return nil, err
	}
	out := make([]*keyward.AccessKey, len(list.Items))
	for i := range list.Items {
		out[i] = &list.Items[i]
	}
	return out, nil
}

func (s CacheStore) AccessKeys(ctx context.Context) ([]*keyward.AccessKey, error) {
	var list keyward.AccessKeyList
	if err := s.Reader.List(ctx, &list, noCopy); err != nil {
		return nil, err
	}
	out := make([]*keyward.AccessKey, len(list.Items))
	for i := range list.Items {
		out[i] = &list.Items[i]
	}
	return out, nil
}

func (s CacheStore) AccessKey(ctx context.Context, namespace, name string) (*keyward.AccessKey, error) {
	var k keyward.AccessKey
	if err := s.Reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &k, noCopy); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	return &k, nil
}

func (s CacheStore) Application(ctx context.Context, namespace, name string) (*keyward.Application, error) {
	var app keyward.Application
	if err := s.Reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &app, noCopy); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	return &app, nil
}

func (s CacheStore) TenantSettings(ctx context.Context, namespace string) (*keyward.TenantSettings, error) {
	var ts keyward.TenantSettings
	if err := s.Reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: keyward.TenantSettingsName}, &ts, noCopy); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	return &ts, nil
}
