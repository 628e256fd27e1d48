package main

import (
	"context"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	ctrlcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/secrets"
)

// floor is the baseline: the least a controller must do per key, in
// process. An informer on AccessKeys feeds a work queue; `concurrency`
// workers each make exactly the three writes Keyward's manager makes for a
// new key — the owner-reference patch on the AccessKey (with optimistic
// lock), the Secret create (real key material, controller reference,
// Keyward's labels), the status patch to Active — through a
// controller-runtime client with the manager's QPS and burst (like the
// manager's, it has one client-side rate limiter per resource). No limits
// are decided, nothing is read from the API server but the watch, no Event
// is recorded.
type floor struct {
	c      client.Client
	queue  workqueue.TypedRateLimitingInterface[types.NamespacedName]
	cache  ctrlcache.Cache
	cancel context.CancelFunc
	wg     sync.WaitGroup
	appsMu sync.Mutex
	apps   map[string]*keyward.Application
	doneMu sync.Mutex
	done   map[types.NamespacedName]bool // issued: later events of the key are ignored
}

func startFloor(ctx context.Context, cfg *rest.Config, qps float64, burst, concurrency int) (*floor, error) {
	c := rest.CopyConfig(cfg)
	c.QPS, c.Burst = float32(qps), burst
	cl, err := client.New(c, client.Options{Scheme: scheme, FieldOwner: "keyward-floor"})
	if err != nil {
		return nil, err
	}
	f := &floor{c: cl, apps: map[string]*keyward.Application{}, done: map[types.NamespacedName]bool{},
		queue: workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[types.NamespacedName]())}
	ctx, f.cancel = context.WithCancel(ctx)
	if f.cache, err = ctrlcache.New(c, ctrlcache.Options{Scheme: scheme}); err != nil {
		return nil, err
	}
	inf, err := f.cache.GetInformer(ctx, &keyward.AccessKey{})
	if err != nil {
		return nil, err
	}
	enqueue := func(obj any) {
		if k, ok := obj.(*keyward.AccessKey); ok && k.Status.Phase != keyward.PhaseActive {
			f.queue.Add(types.NamespacedName{Namespace: k.Namespace, Name: k.Name})
		}
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, obj any) { enqueue(obj) },
	}); err != nil {
		return nil, err
	}
	go func() { _ = f.cache.Start(ctx) }()
	if !f.cache.WaitForCacheSync(ctx) {
		return nil, ctx.Err()
	}
	for range concurrency {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			for {
				req, shutdown := f.queue.Get()
				if shutdown {
					return
				}
				err := f.issue(ctx, req)
				if err != nil && ctx.Err() == nil && f.queue.NumRequeues(req) < 10 {
					f.queue.AddRateLimited(req)
				} else {
					f.queue.Forget(req)
				}
				f.queue.Done(req)
			}
		}()
	}
	return f, nil
}

func (f *floor) stop() {
	f.cancel()
	f.queue.ShutDown()
	f.wg.Wait()
}

func (f *floor) app(ctx context.Context, ns, name string) (*keyward.Application, error) {
	f.appsMu.Lock()
	defer f.appsMu.Unlock()
	if a := f.apps[ns+"/"+name]; a != nil {
		return a, nil
	}
	var a keyward.Application
	if err := f.cache.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &a); err != nil {
		// The floor's cache has no Application informer yet: read it once.
		if err := f.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &a); err != nil {
			return nil, err
		}
	}
	f.apps[ns+"/"+name] = &a
	return &a, nil
}

func (f *floor) issue(ctx context.Context, req types.NamespacedName) error {
	f.doneMu.Lock()
	done := f.done[req]
	f.doneMu.Unlock()
	if done {
		return nil
	}
	var key keyward.AccessKey
	if err := f.cache.Get(ctx, req, &key); err != nil {
		return client.IgnoreNotFound(err)
	}
	if key.Status.Phase == keyward.PhaseActive {
		return nil
	}
	app, err := f.app(ctx, key.Namespace, key.Spec.Application)
	if err != nil {
		return err
	}
	// 1. Owner reference to the Application.
	if len(key.OwnerReferences) == 0 {
		orig := key.DeepCopy()
		if err := controllerutil.SetOwnerReference(app, &key, scheme); err != nil {
			return err
		}
		if err := f.c.Patch(ctx, &key, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
			return err
		}
	}
	// 2. The Secret.
	material, err := keyformat.Generate()
	if err != nil {
		return err
	}
	s := secrets.Desired(&key, material)
	if err := controllerutil.SetControllerReference(&key, s, scheme); err != nil {
		return err
	}
	if err := f.c.Create(ctx, s); apierrors.IsAlreadyExists(err) {
		// A failed earlier attempt: start over with fresh material.
		_ = f.c.Delete(ctx, s)
		return err
	} else if err != nil {
		return err
	}
	// 3. Status.
	orig := key.DeepCopy()
	now := metav1.Now()
	key.Status.Phase = keyward.PhaseActive
	key.Status.ObservedGeneration = key.Generation
	key.Status.KeyID = material.ID
	key.Status.ShortKeyID = material.ID[:min(8, len(material.ID))]
	key.Status.SecretName = s.Name
	key.Status.SecretHash = keyformat.HashSecret(material.Secret)
	key.Status.IssuedAt = &now
	meta.SetStatusCondition(&key.Status.Conditions, metav1.Condition{Type: keyward.ConditionReady,
		Status: metav1.ConditionTrue, Reason: keyward.ReasonIssued, Message: "issued", ObservedGeneration: key.Generation})
	if err := f.c.Status().Patch(ctx, &key, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		return err
	}
	f.doneMu.Lock()
	f.done[req] = true
	f.doneMu.Unlock()
	return nil
}
