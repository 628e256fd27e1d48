package main

import (
	"context"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// batchResult is one batch of keys created at once.
type batchResult struct {
	Skipped    bool
	Keys       int
	Namespaces int
	CreateTook time.Duration // creating the AccessKeys, by the concurrent writers
	Took       time.Duration // first create → last key Active with its Secret (the cap when unfinished)
	Issued     int
	Finished   bool
	Cap        time.Duration
	// Only with the manager:
	Writes       map[string]float64 // server-side, "VERB resource"
	Conflicts    float64
	Reconciles   map[string]float64 // the manager's controller_runtime_reconcile_total, by controller
	ClientReqs   map[string]float64 // the manager's rest_client_requests_total, by method
	CPU          cpu                // CPU seconds by process during the batch
	HWMKiB       int64              // the manager's VmHWM after the batch
	RSSKiB       int64
	ClusterKeysN int // keys in the cluster after the batch
}

func (r batchResult) perSecond() float64 {
	if r.Took <= 0 {
		return 0
	}
	return float64(r.Issued) / r.Took.Seconds()
}

type latencyResult struct {
	Samples []time.Duration
	Missed  int
}

type idleResult struct {
	Window time.Duration
	Writes map[string]float64
	CPU    cpu
}

type expiryResult struct {
	Skipped      bool
	Keys         int
	Lead         time.Duration // expiresAt was set this far ahead
	AckedBeforeT int           // keys whose status.expiresAt showed the new time before it came
	Lags         []time.Duration
	Expired      int
}

type memoryResult struct {
	Skipped       bool
	Keys          int
	Issued        int
	Unrelated     int
	HWMBeforeKiB  int64
	RSSBeforeKiB  int64
	HWMAfterKiB   int64
	RSSAfterKiB   int64
	CreateTook    time.Duration
	UnrelatedMiB  float64
	ManagerWrites map[string]float64
	// The control plane at Keys keys, before the unrelated Secrets: etcd's
	// database size and the resident memory of etcd and kube-apiserver.
	StorageBytes       float64
	ControlPlaneRSSKiB map[string]int64
}

type runResult struct {
	Took        time.Duration
	FloorOne    batchResult
	FloorSpread batchResult
	Latency     latencyResult
	One         batchResult
	Idle        idleResult
	Expiry      expiryResult
	Spread      batchResult
	Curve       batchResult
	Memory      memoryResult
}

// tenant creates a namespace with TenantSettings on and room for perNS
// keys: an Application "app" with room for up to 1000 keys (and as many per
// owner), and past 1000 keys (the most one Application or one owner may
// hold) as many Applications and owners as perNS needs, with the tenant's
// maxKeys raised to perNS (see spread).
func (b *bench) tenant(ctx context.Context, c client.Client, ns string, perNS int) error {
	room := int32(min(max(perNS, 1), keysPerGroup))
	settings := keyward.TenantSettingsSpec{APIKeysEnabled: ptr.To(true), MaxKeysPerOwner: room}
	if perNS > keyward.DefaultMaxKeys {
		settings.MaxKeys = int32(perNS)
	}
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: keyward.TenantSettingsName}, Spec: settings},
	}
	for g := range groups(perNS) {
		app, _ := spread(g, perNS)
		objs = append(objs, &keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: app},
			Spec: keyward.ApplicationSpec{MaxAccessKeys: room}})
	}
	for _, o := range objs {
		if err := retry(ctx, func() error { return c.Create(ctx, o) }); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating %T %s/%s: %w", o, o.GetNamespace(), o.GetName(), err)
		}
	}
	return nil
}

// keysPerGroup is the most keys one Application (maxAccessKeys) or one
// owner (maxKeysPerOwner) may hold.
const keysPerGroup = 1000

// groups is how many Applications and owners perNS keys of one namespace
// are spread over.
func groups(perNS int) int { return max(1, (perNS+keysPerGroup-1)/keysPerGroup) }

// spread is the Application and owner of the j-th of perNS keys of one
// namespace: up to 1000 keys all go to "app" with the creator as owner (as
// before); more go round-robin to "app", "app-1", ... and owners
// "bench-owner-0", ..., so that every Application fills at once.
func spread(j, perNS int) (app, owner string) {
	n := groups(perNS)
	if n == 1 {
		return "app", ""
	}
	g := j % n
	app = "app"
	if g > 0 {
		app = fmt.Sprintf("app-%d", g)
	}
	return app, fmt.Sprintf("bench-owner-%d", g)
}

// retry retries a write a bounded number of times (the API server may
// answer 429 or 503 under load).
func retry(ctx context.Context, f func() error) error {
	var err error
	for i := range 8 {
		if err = f(); err == nil || apierrors.IsAlreadyExists(err) || apierrors.IsInvalid(err) || apierrors.IsForbidden(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(100*(i+1)) * time.Millisecond):
		}
	}
	return err
}

func newKey(ns, name string) *keyward.AccessKey {
	return &keyward.AccessKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: keyward.AccessKeySpec{Application: "app"}}
}

// newKeyOf is the j-th of perNS keys of a namespace (see spread).
func newKeyOf(ns, name string, j, perNS int) *keyward.AccessKey {
	k := newKey(ns, name)
	k.Spec.Application, k.Spec.Owner = spread(j, perNS)
	return k
}

// parallel runs f for i in [0, n) on `writers` goroutines.
func parallel(ctx context.Context, n, writers int, f func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := f(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// batch creates perNS keys in each of nsCount fresh namespaces at once with
// concurrent writers and waits until all are Active with their Secrets (or
// the cap). With mgr set, it also counts the manager's API writes, CPU and
// memory.
func (b *bench) batch(ctx context.Context, cl *cluster, obs *observer, prefix string, nsCount, perNS int, mgr *cluster) (batchResult, error) {
	res := batchResult{Keys: nsCount * perNS, Namespaces: nsCount, Cap: b.capFor(b.BatchCap)}
	c := cl.clients.admin
	nss := make([]string, nsCount)
	for i := range nss {
		nss[i] = prefix
		if nsCount > 1 {
			nss[i] = fmt.Sprintf("%s-%03d", prefix, i)
		}
	}
	if err := parallel(ctx, nsCount, b.Writers, func(i int) error { return b.tenant(ctx, c, nss[i], perNS) }); err != nil {
		return res, err
	}
	names := make([]string, 0, res.Keys)
	index := make(map[string]int, res.Keys) // a key's place in its namespace
	for _, ns := range nss {
		for j := range perNS {
			names = append(names, fmt.Sprintf("%s/k-%05d", ns, j))
			index[names[len(names)-1]] = j
		}
	}
	// Interleave the namespaces so all of them fill at once.
	if nsCount > 1 {
		inter := make([]string, 0, len(names))
		for j := range perNS {
			for i := range nsCount {
				inter = append(inter, names[i*perNS+j])
			}
		}
		names = inter
	}

	var before requestCounts
	var cpuBefore cpu
	var mmBefore managerMetrics
	if mgr != nil {
		time.Sleep(2 * time.Second) // let the manager settle the new tenants and Applications first
		var err error
		if before, err = cl.apiserverRequests(ctx); err != nil {
			return res, err
		}
		mmBefore, _ = cl.scrapeManager()
	}
	cpuBefore = cl.cpuNow()

	logln("%s: creating %d keys in %d namespace(s) with %d writers (cap %s)", prefix, res.Keys, nsCount, b.Writers, res.Cap)
	t0 := time.Now()
	if err := parallel(ctx, len(names), b.Writers, func(i int) error {
		ns, name, _ := cutSlash(names[i])
		return retry(ctx, func() error { return c.Create(ctx, newKeyOf(ns, name, index[names[i]], perNS)) })
	}); err != nil {
		return res, fmt.Errorf("creating keys: %w", err)
	}
	res.CreateTook = time.Since(t0)
	alive := func() error { return nil }
	if mgr != nil {
		alive = mgr.managerAlive
	}
	last, issued, err := obs.waitIssued(ctx, names, t0.Add(res.Cap), alive)
	if err != nil {
		return res, err
	}
	res.Issued, res.Finished = issued, issued == res.Keys
	if res.Finished {
		res.Took = last.Sub(t0)
	} else {
		res.Took = time.Since(t0)
	}
	res.CPU = cl.cpuNow().since(cpuBefore)
	logln("%s: %d of %d keys Active with their Secret after %s (creating took %s)", prefix, issued, res.Keys, res.Took.Round(10*time.Millisecond), res.CreateTook.Round(10*time.Millisecond))

	if mgr != nil {
		time.Sleep(2 * time.Second) // trailing writes of this batch (counts on Applications and tenants)
		after, err := cl.apiserverRequests(ctx)
		if err != nil {
			return res, err
		}
		res.Writes, res.Conflicts = writes(before, after)
		mm, _ := cl.scrapeManager()
		res.Reconciles, res.ClientReqs = diff(mm.reconciles, mmBefore.reconciles), diff(mm.requests, mmBefore.requests)
		res.HWMKiB = procStatusKiB(mgr.managerPid(), "VmHWM")
		res.RSSKiB = procStatusKiB(mgr.managerPid(), "VmRSS")
	}
	return res, nil
}

func diff(a, b map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range a {
		if d := v - b[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

func cutSlash(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			return s[:i], s[i+1:], true
		}
	}
	return "", s, false
}

// latency creates keys one at a time on an otherwise idle system and
// measures from the create returning to the key Active with its Secret.
func (b *bench) latency(ctx context.Context, cl *cluster, obs *observer) (latencyResult, error) {
	var res latencyResult
	c := cl.clients.admin
	if err := b.tenant(ctx, c, "latency", 1000); err != nil {
		return res, err
	}
	time.Sleep(2 * time.Second)
	logln("latency: %d keys, one at a time", b.Latency)
	for i := range b.Latency {
		if err := cl.managerAlive(); err != nil {
			return res, err
		}
		name := fmt.Sprintf("k-%05d", i)
		if err := retry(ctx, func() error { return c.Create(ctx, newKey("latency", name)) }); err != nil {
			return res, err
		}
		created := time.Now()
		t, ok := obs.waitOne(ctx, "latency/"+name, b.capFor(30*time.Second))
		if !ok {
			res.Missed++
			continue
		}
		res.Samples = append(res.Samples, max(t.Sub(created), 0))
		// A random gap, so that creates are not phase-locked to whole
		// seconds (creationTimestamp has second precision, and the
		// manager's timers may be derived from it).
		time.Sleep(100*time.Millisecond + mrand.N(time.Second))
	}
	p50, p99, _ := percentiles(res.Samples)
	logln("latency: p50 %s, p99 %s, %d missed", p50, p99, res.Missed)
	return res, nil
}

// idle counts the manager's writes while nothing changes.
func (b *bench) idle(ctx context.Context, cl *cluster) (idleResult, error) {
	res := idleResult{Window: b.Idle}
	before, err := cl.apiserverRequests(ctx)
	if err != nil {
		return res, err
	}
	c0 := cl.cpuNow()
	logln("idle: counting writes for %s", b.Idle)
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(b.Idle):
	}
	after, err := cl.apiserverRequests(ctx)
	if err != nil {
		return res, err
	}
	res.Writes, _ = writes(before, after)
	res.CPU = cl.cpuNow().since(c0)
	logln("idle: %g writes in %s", sum(res.Writes), b.Idle)
	return res, cl.managerAlive()
}

// expiry gives the issued keys of a batch the same spec.expiresAt, far
// enough ahead for the manager to take in the change (half the time their
// issuance took, plus 5 s, at most 2 min), and measures from expiresAt to
// each key seen Expired.
func (b *bench) expiry(ctx context.Context, cl *cluster, obs *observer, one batchResult) (expiryResult, error) {
	var res expiryResult
	if b.remaining() < time.Minute {
		res.Skipped = true
		return res, nil
	}
	var names []string
	for j := range one.Keys {
		k := fmt.Sprintf("one/k-%05d", j)
		if _, ok := obs.issuedAt(k); ok {
			names = append(names, k)
		}
	}
	res.Keys = len(names)
	if res.Keys == 0 {
		res.Skipped = true
		return res, nil
	}
	res.Lead = min(max(one.Took/2+5*time.Second, 5*time.Second), 2*time.Minute)
	expiresAt := time.Now().Add(res.Lead).Truncate(time.Second).Add(time.Second) // whole seconds: RFC 3339 in the API
	res.Lead = time.Until(expiresAt)
	logln("expiry: %d keys expire at %s (in %s)", res.Keys, expiresAt.UTC().Format(time.RFC3339), res.Lead.Round(time.Second))
	c := cl.clients.admin
	patch := client.RawPatch(types.MergePatchType, fmt.Appendf(nil, `{"spec":{"expiresAt":%q}}`, expiresAt.UTC().Format(time.RFC3339)))
	if err := parallel(ctx, len(names), b.Writers, func(i int) error {
		ns, name, _ := cutSlash(names[i])
		return retry(ctx, func() error { return c.Patch(ctx, newKey(ns, name), patch) })
	}); err != nil {
		return res, err
	}
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(time.Until(expiresAt)):
	}
	for _, k := range names {
		if s := obs.snapshot(k); s.statusExpiresAt.Equal(expiresAt) {
			res.AckedBeforeT++
		}
	}
	_, expired, err := obs.waitExpired(ctx, names, expiresAt.Add(b.capFor(b.ExpiryCap)), cl.managerAlive)
	if err != nil {
		return res, err
	}
	res.Expired = expired
	for _, k := range names {
		if s := obs.snapshot(k); !s.expired.IsZero() {
			res.Lags = append(res.Lags, s.expired.Sub(expiresAt))
		}
	}
	p50, p99, mx := percentiles(res.Lags)
	logln("expiry: %d of %d Expired; lag p50 %s p99 %s max %s; %d had status.expiresAt before it came", expired, res.Keys, p50, p99, mx, res.AckedBeforeT)
	return res, nil
}

// unrelated measures the manager's memory, then adds Secrets Keyward does
// not generate (10 KiB of random bytes each, no Keyward label) and measures
// again.
func (b *bench) unrelated(ctx context.Context, cl *cluster, keys int) (memoryResult, error) {
	res := memoryResult{Keys: keys, Unrelated: b.Unrelated}
	if b.remaining() < 45*time.Second {
		res.Skipped = true
		return res, nil
	}
	pid := cl.managerPid()
	res.HWMBeforeKiB, res.RSSBeforeKiB = procStatusKiB(pid, "VmHWM"), procStatusKiB(pid, "VmRSS")
	res.ControlPlaneRSSKiB = cl.controlPlaneRSSKiB()
	if sz, err := cl.storageBytes(ctx); err == nil {
		res.StorageBytes = sz
	}
	c := cl.clients.admin
	if err := retry(ctx, func() error {
		return c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "unrelated"}})
	}); err != nil && !apierrors.IsAlreadyExists(err) {
		return res, err
	}
	before, err := cl.apiserverRequests(ctx)
	if err != nil {
		return res, err
	}
	logln("memory: manager VmHWM %d MiB at %d keys; adding %d unrelated 10 KiB Secrets", res.HWMBeforeKiB/1024, keys, b.Unrelated)
	t0 := time.Now()
	if err := parallel(ctx, b.Unrelated, b.Writers, func(i int) error {
		data := make([]byte, 10*1024)
		_, _ = rand.Read(data)
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "unrelated", Name: fmt.Sprintf("s-%05d", i),
			Labels: map[string]string{"app": "unrelated"}}, Data: map[string][]byte{"blob": data}}
		return retry(ctx, func() error { return c.Create(ctx, s) })
	}); err != nil {
		return res, err
	}
	res.CreateTook = time.Since(t0)
	res.UnrelatedMiB = float64(b.Unrelated) * 10 / 1024
	time.Sleep(10 * time.Second)
	after, err := cl.apiserverRequests(ctx)
	if err != nil {
		return res, err
	}
	res.ManagerWrites, _ = writes(before, after)
	// The harness's own Secrets; the manager may create some too (still issuing).
	if res.ManagerWrites["POST secrets"] -= float64(b.Unrelated); res.ManagerWrites["POST secrets"] <= 0 {
		delete(res.ManagerWrites, "POST secrets")
	}
	res.HWMAfterKiB, res.RSSAfterKiB = procStatusKiB(pid, "VmHWM"), procStatusKiB(pid, "VmRSS")
	logln("memory: VmHWM %d → %d MiB, VmRSS %d → %d MiB", res.HWMBeforeKiB/1024, res.HWMAfterKiB/1024, res.RSSBeforeKiB/1024, res.RSSAfterKiB/1024)
	return res, cl.managerAlive()
}

func percentiles(d []time.Duration) (p50, p99, mx time.Duration) {
	if len(d) == 0 {
		return 0, 0, 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	at := func(q float64) time.Duration {
		i := int(q*float64(len(s))+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return at(0.50), at(0.99), s[len(s)-1]
}

func sum(m map[string]float64) float64 {
	t := 0.0
	for _, v := range m {
		t += v
	}
	return t
}
