// Package verifytest holds what the verifier's tests and benchmarks share:
// a store over objects in memory and fixtures of keys in every state. It
// does not import package verify, so that verify's own tests can use it.
package verifytest

import (
	"context"
	"sync"

	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// MemStore is a verify.Store over objects held in maps, indexed like the
// cache: for unit tests and the benchmarks, which load thousands of keys
// without creating them in an API server.
type MemStore struct {
	// index is the key-ID index function the cache uses (verify.KeyIDs).
	index   func(client.Object) []string
	mu      sync.RWMutex
	byID    map[string][]*keyward.AccessKey
	keys    map[[2]string]*keyward.AccessKey
	apps    map[[2]string]*keyward.Application
	tenants map[string]*keyward.TenantSettings
}

// NewMemStore returns a store holding objs (AccessKeys, Applications,
// TenantSettings), whose AccessKeysByID looks keys up by index: pass
// verify.KeyIDs, the function the manager's cache indexes by, so that the
// tests find keys exactly as the verifier does.
func NewMemStore(index func(client.Object) []string, objs ...any) *MemStore {
	s := &MemStore{index: index, byID: map[string][]*keyward.AccessKey{}, keys: map[[2]string]*keyward.AccessKey{},
		apps: map[[2]string]*keyward.Application{}, tenants: map[string]*keyward.TenantSettings{}}
	for _, o := range objs {
		s.Put(o)
	}
	return s
}

// Put adds or replaces an object.
func (s *MemStore) Put(o any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch o := o.(type) {
	case *keyward.AccessKey:
		if old := s.keys[[2]string{o.Namespace, o.Name}]; old != nil {
			for _, id := range s.index(old) {
				s.byID[id] = remove(s.byID[id], old)
			}
		}
		s.keys[[2]string{o.Namespace, o.Name}] = o
		for _, id := range s.index(o) {
			s.byID[id] = append(s.byID[id], o)
		}
	case *keyward.Application:
		s.apps[[2]string{o.Namespace, o.Name}] = o
	case *keyward.TenantSettings:
		s.tenants[o.Namespace] = o
	}
}

func remove(list []*keyward.AccessKey, k *keyward.AccessKey) []*keyward.AccessKey {
	out := list[:0]
	for _, x := range list {
		if x != k {
			out = append(out, x)
		}
	}
	return out
}

func (s *MemStore) AccessKeysByID(_ context.Context, id string) ([]*keyward.AccessKey, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.byID[id], nil
}

func (s *MemStore) AccessKeys(context.Context) ([]*keyward.AccessKey, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*keyward.AccessKey, 0, len(s.keys))
	for _, k := range s.keys {
		out = append(out, k)
	}
	return out, nil
}

func (s *MemStore) AccessKey(_ context.Context, namespace, name string) (*keyward.AccessKey, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.keys[[2]string{namespace, name}], nil
}

func (s *MemStore) Application(_ context.Context, namespace, name string) (*keyward.Application, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.apps[[2]string{namespace, name}], nil
}

func (s *MemStore) TenantSettings(_ context.Context, namespace string) (*keyward.TenantSettings, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.tenants[namespace], nil
}
