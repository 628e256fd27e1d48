package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	ctrlcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/secrets"
)

var scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(corev1.AddToScheme(scheme))
	utilruntime.Must(keyward.AddToScheme(scheme))
}

// clients are the harness's own API clients.
type clients struct {
	admin client.Client // no client-side limit: the harness's writers must not be the bottleneck
	cfg   *rest.Config
}

func newClients(cfg *rest.Config) (*clients, error) {
	c := rest.CopyConfig(cfg)
	c.QPS, c.Burst = -1, 0
	c.Timeout = 60 * time.Second
	admin, err := client.New(c, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	return &clients{admin: admin, cfg: cfg}, nil
}

// seen is when the harness observed a key reach a state, through watches.
type seen struct {
	active, secret, expired time.Time
	statusExpiresAt         time.Time // status.expiresAt last seen
}

func (s *seen) issued() (time.Time, bool) {
	if s == nil || s.active.IsZero() || s.secret.IsZero() {
		return time.Time{}, false
	}
	if s.secret.After(s.active) {
		return s.secret, true
	}
	return s.active, true
}

// observer watches every AccessKey (typed informer) and the metadata of
// every Secret Keyward labels (a metadata-only informer: the harness never
// holds, let alone prints, key material) and records when each key was first
// seen Active, with its Secret, and Expired.
type observer struct {
	mu      sync.Mutex
	keys    map[string]*seen // namespace/name
	changed chan struct{}
	cancel  context.CancelFunc
}

func startObserver(ctx context.Context, cfg *rest.Config) (*observer, error) {
	o := &observer{keys: map[string]*seen{}, changed: make(chan struct{}, 1)}
	ctx, o.cancel = context.WithCancel(ctx)

	c := rest.CopyConfig(cfg)
	c.QPS, c.Burst = -1, 0
	cache, err := ctrlcache.New(c, ctrlcache.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	inf, err := cache.GetInformer(ctx, &keyward.AccessKey{})
	if err != nil {
		return nil, err
	}
	onKey := func(obj any) {
		k, ok := obj.(*keyward.AccessKey)
		if !ok {
			return
		}
		now := time.Now()
		o.mu.Lock()
		s := o.get(k.Namespace + "/" + k.Name)
		switch k.Status.Phase {
		case keyward.PhaseActive:
			if s.active.IsZero() {
				s.active = now
			}
		case keyward.PhaseExpired:
			if s.expired.IsZero() {
				s.expired = now
			}
		}
		if k.Status.ExpiresAt != nil {
			s.statusExpiresAt = k.Status.ExpiresAt.Time
		}
		o.mu.Unlock()
		o.notify()
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    onKey,
		UpdateFunc: func(_, obj any) { onKey(obj) },
	}); err != nil {
		return nil, err
	}

	mc, err := metadata.NewForConfig(c)
	if err != nil {
		return nil, err
	}
	sel := metav1.FormatLabelSelector(&metav1.LabelSelector{MatchLabels: secrets.ManagedLabels()})
	factory := metadatainformer.NewFilteredSharedInformerFactory(mc, 0, metav1.NamespaceAll, func(lo *metav1.ListOptions) {
		lo.LabelSelector = sel
	})
	sinf := factory.ForResource(corev1.SchemeGroupVersion.WithResource("secrets")).Informer()
	onSecret := func(obj any) {
		m, ok := obj.(*metav1.PartialObjectMetadata)
		if !ok {
			return
		}
		name := m.Labels[secrets.LabelAccessKey]
		if name == "" {
			return
		}
		now := time.Now()
		o.mu.Lock()
		if s := o.get(m.Namespace + "/" + name); s.secret.IsZero() {
			s.secret = now
		}
		o.mu.Unlock()
		o.notify()
	}
	if _, err := sinf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    onSecret,
		UpdateFunc: func(_, obj any) { onSecret(obj) },
	}); err != nil {
		return nil, err
	}

	go func() { _ = cache.Start(ctx) }()
	factory.Start(ctx.Done())
	syncCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if !cache.WaitForCacheSync(syncCtx) || !toolscache.WaitForCacheSync(syncCtx.Done(), sinf.HasSynced) {
		o.cancel()
		return nil, fmt.Errorf("the harness's watches did not sync within a minute")
	}
	return o, nil
}

func (o *observer) stop() { o.cancel() }

// get must be called with o.mu held.
func (o *observer) get(k string) *seen {
	s := o.keys[k]
	if s == nil {
		s = &seen{}
		o.keys[k] = s
	}
	return s
}

func (o *observer) notify() {
	select {
	case o.changed <- struct{}{}:
	default:
	}
}

func (o *observer) snapshot(k string) seen {
	o.mu.Lock()
	defer o.mu.Unlock()
	if s := o.keys[k]; s != nil {
		return *s
	}
	return seen{}
}

// waitIssued waits until every key is Active with its Secret, or until the
// deadline. It returns when the last one was issued and how many were.
func (o *observer) waitIssued(ctx context.Context, keys []string, deadline time.Time, alive func() error) (time.Time, int, error) {
	return o.waitFor(ctx, keys, deadline, alive, func(s *seen) (time.Time, bool) { return s.issued() })
}

// waitExpired waits until every key was seen Expired, or until the deadline.
func (o *observer) waitExpired(ctx context.Context, keys []string, deadline time.Time, alive func() error) (time.Time, int, error) {
	return o.waitFor(ctx, keys, deadline, alive, func(s *seen) (time.Time, bool) { return s.expired, !s.expired.IsZero() })
}

func (o *observer) waitFor(ctx context.Context, keys []string, deadline time.Time, alive func() error, done func(*seen) (time.Time, bool)) (time.Time, int, error) {
	pending := append([]string(nil), keys...)
	var last time.Time
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		o.mu.Lock()
		rest := pending[:0]
		for _, k := range pending {
			if t, ok := done(o.keys[k]); ok {
				if t.After(last) {
					last = t
				}
			} else {
				rest = append(rest, k)
			}
		}
		pending = rest
		o.mu.Unlock()
		if len(pending) == 0 {
			return last, len(keys), nil
		}
		if err := alive(); err != nil {
			return last, len(keys) - len(pending), err
		}
		if time.Now().After(deadline) {
			return last, len(keys) - len(pending), nil
		}
		select {
		case <-ctx.Done():
			return last, len(keys) - len(pending), ctx.Err()
		case <-tick.C:
		}
	}
}

// waitOne waits for one key, woken by every event, for the latency step.
func (o *observer) waitOne(ctx context.Context, k string, timeout time.Duration) (time.Time, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		if t, ok := o.issuedAt(k); ok {
			return t, true
		}
		select {
		case <-o.changed:
		case <-deadline.C:
			return time.Time{}, false
		case <-ctx.Done():
			return time.Time{}, false
		}
	}
}

func (o *observer) issuedAt(k string) (time.Time, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.keys[k].issued()
}
