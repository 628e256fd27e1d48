package verify

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// Names of what usage reporting writes, defined once.
const (
	// EventHeavyUse is the reason of the Warning Event on a key used more
	// often than --heavy-use-threshold.
	EventHeavyUse = "HeavyUse"
	// eventActionVerify is the Event's action.
	eventActionVerify = "Verify"
	// HeavyUseEventInterval: at most one HeavyUse Event per key per interval.
	HeavyUseEventInterval = time.Hour
	// LastUsedFieldManager is the field manager of the lastUsedAt patches:
	// not the controllers' "keyward", so managedFields tell them apart.
	LastUsedFieldManager = "keyward-verifier"
)

// Usage records uses of keys on the request path (a map update under a
// mutex) and, off it, every FlushInterval: writes status.lastUsedAt in a
// batch, and raises or clears heavy use.
//
// lastUsedAt is written at most once per Granularity per key, as a JSON
// merge patch of that one field on the status subresource, without
// resourceVersion: it never conflicts with the controller's writes (which
// patch only what they change), and it is written only when the use is at
// least Granularity after the value in the cache, so it never moves back.
type Usage struct {
	// Granularity: lastUsedAt is written at most once per Granularity per key.
	Granularity time.Duration
	// HeavyUseThreshold is the requests per minute (on this replica) above
	// which a key is in heavy use; 0 turns the check off.
	HeavyUseThreshold int
	// FlushInterval is how often uses are written and heavy use evaluated.
	FlushInterval time.Duration

	Store    Store
	Writer   client.SubResourceWriter // the status writer
	Recorder events.EventRecorder
	Metrics  *Metrics
	Log      logr.Logger
	Now      func() time.Time

	shards [usageShards]usageShard
}

// usageShards spread Record's lock over keys, so concurrent verifications
// of different keys do not queue on one mutex.
const usageShards = 64

type usageShard struct {
	mu   sync.Mutex
	keys map[types.NamespacedName]*keyUse
}

func (u *Usage) shard(nn types.NamespacedName) *usageShard {
	// FNV-1a over namespace, a separator and name, without allocating.
	h := uint32(2166136261)
	mix := func(s string) {
		for i := 0; i < len(s); i++ {
			h = (h ^ uint32(s[i])) * 16777619
		}
	}
	mix(nn.Namespace)
	mix("/")
	mix(nn.Name)
	return &u.shards[h%usageShards]
}

type keyUse struct {
	lastUse time.Time // latest successful verification
	written time.Time // latest lastUsedAt this replica wrote
	minute  int64     // the minute window count belongs to
	count   int       // verifications in that minute
	prev    int       // verifications in the minute before it
	shown   bool      // the heavy-use gauge shows this key
	event   time.Time // last HeavyUse Event
}

// Record notes that the key verified at now.
func (u *Usage) Record(namespace, name string, now time.Time) {
	if name == "" {
		return
	}
	nn := types.NamespacedName{Namespace: namespace, Name: name}
	minute := now.Unix() / 60
	sh := u.shard(nn)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.keys == nil {
		sh.keys = map[types.NamespacedName]*keyUse{}
	}
	e := sh.keys[nn]
	if e == nil {
		e = &keyUse{}
		sh.keys[nn] = e
	}
	if now.After(e.lastUse) {
		e.lastUse = now
	}
	if e.minute != minute {
		e.prev = 0
		if e.minute == minute-1 {
			e.prev = e.count
		}
		e.minute, e.count = minute, 0
	}
	e.count++
}

func (u *Usage) heavy(count int) bool { return u.HeavyUseThreshold > 0 && count > u.HeavyUseThreshold }

type usageWork struct {
	nn        types.NamespacedName
	lastUsed  time.Time // zero: nothing to write
	heavy     bool
	showHeavy bool // change the gauge
	event     bool
	count     int
}

// Start runs the flush loop until ctx ends; it implements manager.Runnable.
func (u *Usage) Start(ctx context.Context) error {
	t := time.NewTicker(u.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			flushCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			u.Flush(flushCtx)
			cancel()
			return nil
		case <-t.C:
			u.Flush(ctx)
		}
	}
}

// NeedLeaderElection is false: every replica reports what it saw.
func (u *Usage) NeedLeaderElection() bool { return false }

// Flush writes due lastUsedAt values and evaluates heavy use.
func (u *Usage) Flush(ctx context.Context) {
	now := u.Now()
	minute := now.Unix() / 60
	idle := max(u.Granularity, HeavyUseEventInterval)
	var work []usageWork
	for i := range u.shards {
		work = u.collect(&u.shards[i], now, minute, idle, work)
	}

	for _, w := range work {
		if w.showHeavy && u.Metrics != nil {
			u.Metrics.SetHeavyUse(w.nn.Namespace, w.nn.Name, w.heavy)
		}
		if !w.lastUsed.IsZero() || w.event {
			u.flushKey(ctx, w)
		}
	}
}

// collect takes what is due from one shard.
func (u *Usage) collect(sh *usageShard, now time.Time, minute int64, idle time.Duration, work []usageWork) []usageWork {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for nn, e := range sh.keys {
		w := usageWork{nn: nn, count: max(e.count, e.prev)}
		if !e.lastUse.IsZero() && (e.written.IsZero() || e.lastUse.Sub(e.written) >= u.Granularity) {
			w.lastUsed = e.lastUse
		}
		// heavy while this or the last whole minute was over the threshold
		w.heavy = (e.minute >= minute-1 && u.heavy(e.count)) || (e.minute == minute && u.heavy(e.prev))
		if w.heavy != e.shown {
			w.showHeavy, e.shown = true, w.heavy
		}
		if w.heavy && (e.event.IsZero() || now.Sub(e.event) >= HeavyUseEventInterval) {
			w.event, e.event = true, now
		}
		if !w.lastUsed.IsZero() || w.showHeavy || w.event {
			work = append(work, w)
		}
		if now.Sub(e.lastUse) > idle && !e.shown {
			delete(sh.keys, nn)
		}
	}
	return work
}

func (u *Usage) flushKey(ctx context.Context, w usageWork) {
	k, err := u.Store.AccessKey(ctx, w.nn.Namespace, w.nn.Name)
	if err != nil || k == nil {
		return
	}
	if w.event && u.Recorder != nil {
		u.Recorder.Eventf(k.DeepCopy(), nil, corev1.EventTypeWarning, EventHeavyUse, eventActionVerify,
			"key %s was verified %d times within a minute on one verifier replica, above the heavy-use threshold of %d per minute",
			k.Status.KeyID, w.count, u.HeavyUseThreshold)
	}
	if w.lastUsed.IsZero() || u.Writer == nil {
		return
	}
	use := w.lastUsed.UTC().Truncate(time.Second)
	if cached := k.Status.LastUsedAt; cached != nil && (!use.After(cached.Time) || use.Sub(cached.Time) < u.Granularity) {
		u.markWritten(w.nn, cached.Time)
		return
	}
	patch := fmt.Appendf(nil, `{"status":{"lastUsedAt":%q}}`, metav1.NewTime(use).UTC().Format(time.RFC3339))
	obj := &keyward.AccessKey{ObjectMeta: metav1.ObjectMeta{Namespace: w.nn.Namespace, Name: w.nn.Name}}
	err = u.Writer.Patch(ctx, obj, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(LastUsedFieldManager))
	switch {
	case err == nil:
		u.markWritten(w.nn, use)
	case apierrors.IsNotFound(err):
	default:
		u.Log.Error(err, "writing lastUsedAt", "namespace", w.nn.Namespace, "accessKey", w.nn.Name)
	}
}

func (u *Usage) markWritten(nn types.NamespacedName, t time.Time) {
	sh := u.shard(nn)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e := sh.keys[nn]; e != nil && t.After(e.written) {
		e.written = t
	}
}
