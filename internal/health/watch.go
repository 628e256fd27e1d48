// Package health tells whether the manager can do its job, so that a
// stalled manager is noticed: its readiness probe, the watch-failure
// monitor behind it, and the check that the shipped admission policies are
// installed. Each failure shows as a log line, a metric and an Event.
package health

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
)

// Event reasons recorded on the manager's Pod.
const (
	EventWatchFailing   = "WatchFailing"
	EventWatchRecovered = "WatchRecovered"
)

// Defaults of the watch monitor: a watch that failed this many times, the
// last within the window, is failing; one that stayed quiet for the window
// has recovered (the reflector retries at most every 30 s, so a failing
// watch always fails again within it).
const (
	DefaultFailureThreshold = 3
	DefaultFailureWindow    = 90 * time.Second
)

// WatchMonitor follows the informers' list and watch failures. A single
// undecodable object, an RBAC gap or an unreachable API server make an
// informer fail again and again while the manager looks alive; the
// monitor turns that into a failing readiness check, an error log line,
// the metric keyward_watch_failing and a Warning Event on the manager's Pod.
type WatchMonitor struct {
	Log logr.Logger
	// Recorder and Pod, when set, receive an Event when a watch starts or
	// stops failing (the Pod is this manager's, from the downward API).
	Recorder recorder.EventRecorder
	Pod      *corev1.Pod
	// Threshold and Window: see DefaultFailureThreshold and DefaultFailureWindow.
	Threshold int
	Window    time.Duration
	// Now is the clock; tests may replace it.
	Now func() time.Time

	mu       sync.Mutex
	failures map[string]*failureRun
}

type failureRun struct {
	count    int
	last     time.Time
	reported bool
}

// NewWatchMonitor returns a monitor with the default threshold and window.
func NewWatchMonitor(log logr.Logger) *WatchMonitor {
	return &WatchMonitor{Log: log, Threshold: DefaultFailureThreshold, Window: DefaultFailureWindow, Now: time.Now}
}

var (
	watchErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyward_watch_errors_total",
		Help: "List and watch failures of the manager's informers, by resource.",
	}, []string{"resource"})
)

// Collectors returns the monitor's metrics, for registration with
// controller-runtime's metrics registry.
func (m *WatchMonitor) Collectors() []prometheus.Collector {
	failing := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "keyward_watch_failing",
		Help: "Number of the manager's informers whose list or watch keeps failing (0 when healthy).",
	}, func() float64 { return float64(len(m.Failing())) })
	return []prometheus.Collector{watchErrors, failing}
}

// Handle is a cache.Options.DefaultWatchErrorHandler: it keeps client-go's
// own handling and records the failure.
func (m *WatchMonitor) Handle(ctx context.Context, r *toolscache.Reflector, err error) {
	toolscache.DefaultWatchErrorHandler(ctx, r, err)
	m.Record(r.TypeDescription(), err)
}

// Record counts one failure of the informer of resource.
func (m *WatchMonitor) Record(resource string, err error) {
	watchErrors.WithLabelValues(resource).Inc()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failures == nil {
		m.failures = map[string]*failureRun{}
	}
	now := m.Now()
	run := m.failures[resource]
	if run == nil || now.Sub(run.last) > m.Window {
		run = &failureRun{}
		m.failures[resource] = run
	}
	run.count++
	run.last = now
	if run.count == m.Threshold {
		run.reported = true
		m.Log.Error(err, "the informer's list or watch keeps failing: no object of this kind is seen in any namespace until it recovers; the manager reports not ready",
			"resource", resource, "failures", run.count)
		m.event(corev1.EventTypeWarning, EventWatchFailing,
			fmt.Sprintf("list or watch of %s failed %d times in a row; the manager is not ready", resource, run.count))
	}
}

// Failing lists the resources whose informer keeps failing, and reports
// those that recovered.
func (m *WatchMonitor) Failing() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.Now()
	var failing []string
	for resource, run := range m.failures {
		if now.Sub(run.last) > m.Window {
			if run.reported {
				m.Log.Info("the informer's list and watch recovered", "resource", resource)
				m.event(corev1.EventTypeNormal, EventWatchRecovered, fmt.Sprintf("list and watch of %s recovered", resource))
			}
			delete(m.failures, resource)
			continue
		}
		if run.count >= m.Threshold {
			failing = append(failing, resource)
		}
	}
	sort.Strings(failing)
	return failing
}

// Check is a readiness check: it fails while any informer keeps failing.
func (m *WatchMonitor) Check(_ *http.Request) error {
	if failing := m.Failing(); len(failing) > 0 {
		return fmt.Errorf("list or watch keeps failing for %s", strings.Join(failing, ", "))
	}
	return nil
}

func (m *WatchMonitor) event(eventType, reason, note string) {
	if m.Recorder == nil || m.Pod == nil {
		return
	}
	m.Recorder.Eventf(m.Pod, nil, eventType, reason, reason, "%s", note)
}

// CacheSynced is a readiness check that fails until every informer of c
// has synced, so a manager whose caches cannot fill is never Ready.
func CacheSynced(c cache.Cache) healthz.Checker {
	return func(req *http.Request) error {
		ctx, cancel := context.WithTimeout(req.Context(), 200*time.Millisecond)
		defer cancel()
		if !c.WaitForCacheSync(ctx) {
			return errors.New("the informer caches have not synced")
		}
		return nil
	}
}
