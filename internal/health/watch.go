// Package health tells whether the manager can do its job, so that a
// stalled manager is noticed: its readiness probe, the watch-failure
// monitor behind it, and the check that the shipped admission policies are
// installed. Each failure shows as a log line, a metric and an Event.
package health

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilnet "k8s.io/apimachinery/pkg/util/net"
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
	// DefaultUnreachableGrace is how long informers that cannot reach the
	// API server at all leave readiness alone (docs/decisions.md): while
	// nobody can reach the API server nobody can revoke a key either, so
	// the cache is the best answer there is, and if every replica went
	// unready a Service would drop every verifier endpoint at once. The
	// bound is how stale the answers of a replica cut off on its own (a
	// network partition) may get before it steps out of its Service.
	DefaultUnreachableGrace = 5 * time.Minute
)

// WatchMonitor follows the informers' list and watch failures. A single
// undecodable object, an RBAC gap or a missing CRD make an informer fail
// again and again while the manager looks alive; the monitor turns that
// into a failing readiness check, an error log line, the metric
// keyward_watch_failing and a Warning Event on the manager's Pod.
//
// Failures that only say the API server cannot be reached (Unreachable:
// connection refused or reset, timeouts, 429, 503, 504) are counted apart:
// they fail readiness only once they have lasted UnreachableGrace, and
// meanwhile show as keyward_watch_unreachable and a log line. The caches
// keep what they had, and the verifier answers from them.
type WatchMonitor struct {
	Log logr.Logger
	// Recorder and Pod, when set, receive an Event when a watch starts or
	// stops failing (the Pod is this manager's, from the downward API).
	Recorder recorder.EventRecorder
	Pod      *corev1.Pod
	// Threshold and Window: see DefaultFailureThreshold and DefaultFailureWindow.
	Threshold int
	Window    time.Duration
	// UnreachableGrace: see DefaultUnreachableGrace; 0 counts Unreachable
	// failures like any other.
	UnreachableGrace time.Duration
	// Now is the clock; tests may replace it.
	Now func() time.Time

	mu       sync.Mutex
	failures map[string]*failureRun
}

// failureRun is one informer's failures, each within Window of the last.
type failureRun struct {
	count            int       // failures other than Unreachable ones
	unreachable      int       // Unreachable failures
	unreachableSince time.Time // the first Unreachable failure of the run
	last             time.Time // the last failure of either kind
	reported         bool      // readiness failed for it (logged, Event recorded)
	reportedOutage   bool      // the Unreachable run was logged
}

// NewWatchMonitor returns a monitor with the default threshold, window and
// grace.
func NewWatchMonitor(log logr.Logger) *WatchMonitor {
	return &WatchMonitor{Log: log, Threshold: DefaultFailureThreshold, Window: DefaultFailureWindow,
		UnreachableGrace: DefaultUnreachableGrace, Now: time.Now}
}

// Unreachable reports whether a list or watch error only says that no
// answer came from the API server: a refused, reset or lost connection, a
// network or TLS-handshake timeout, a DNS or routing failure — any failure
// of the HTTP round trip itself — or the API server's own "try later"
// (429, 503, 504, ServerTimeout). Anything else is an answer that
// retrying will not change: Forbidden, Unauthorized, NotFound (a CRD
// gone), an internal error, an object that does not decode, or a TLS peer
// that is not trusted or does not trust us.
func Unreachable(err error) bool {
	if err == nil {
		return false
	}
	if apierrors.IsTooManyRequests(err) || apierrors.IsServiceUnavailable(err) ||
		apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) {
		return true
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return false // any other answer of the API server
	}
	if untrusted(err) {
		return false
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	if utilnet.IsConnectionRefused(err) || utilnet.IsConnectionReset(err) || utilnet.IsTimeout(err) ||
		utilnet.IsProbableEOF(err) || utilnet.IsHTTP2ConnectionLost(err) {
		return true
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.ECONNABORTED, syscall.ETIMEDOUT, syscall.EPIPE:
			return true
		}
	}
	var (
		dns *net.DNSError
		op  *net.OpError // dialing, reading or writing the connection failed
		ue  *url.Error   // the round trip failed: no response at all
	)
	return errors.As(err, &dns) || errors.As(err, &op) || errors.As(err, &ue)
}

// untrusted reports a TLS failure of trust: the API server's certificate
// does not verify, or it refused ours (an alert). Those are configuration
// (or an impostor), not an outage.
func untrusted(err error) bool {
	var (
		verify    *tls.CertificateVerificationError
		alert     tls.AlertError
		remote    *net.OpError // crypto/tls reports the peer's alerts as "remote error"
		record    tls.RecordHeaderError
		authority x509.UnknownAuthorityError
		invalid   x509.CertificateInvalidError
		host      x509.HostnameError
	)
	return errors.As(err, &verify) || errors.As(err, &alert) || (errors.As(err, &remote) && remote.Op == "remote error") ||
		errors.As(err, &record) || errors.As(err, &authority) || errors.As(err, &invalid) || errors.As(err, &host)
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
	unreachable := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "keyward_watch_unreachable",
		Help: "Number of the manager's informers that could not reach the API server within the last failure window; they answer from the cache meanwhile (0 when healthy).",
	}, func() float64 { return float64(len(m.Unreachable())) })
	return []prometheus.Collector{watchErrors, failing, unreachable}
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
	run.last = now
	if m.UnreachableGrace > 0 && Unreachable(err) {
		if run.unreachable == 0 {
			run.unreachableSince = now
		}
		run.unreachable++
		if run.unreachable == m.Threshold && !run.reportedOutage {
			run.reportedOutage = true
			m.Log.Info("the API server cannot be reached: answering from the cache, as it was when the informer last heard from the API server; the manager stays ready for the grace period",
				"resource", resource, "failures", run.unreachable, "since", run.unreachableSince, "grace", m.UnreachableGrace, "error", err.Error())
		}
		return
	}
	run.count++
	if run.count == m.Threshold && !run.reported {
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
		switch {
		case run.count >= m.Threshold:
			failing = append(failing, resource)
		case run.unreachable >= m.Threshold && now.Sub(run.unreachableSince) >= m.UnreachableGrace:
			if !run.reported {
				run.reported = true
				m.Log.Error(nil, "the API server has been unreachable for longer than the grace period: the cache may be stale; the manager reports not ready",
					"resource", resource, "since", run.unreachableSince, "grace", m.UnreachableGrace)
				m.event(corev1.EventTypeWarning, EventWatchFailing,
					fmt.Sprintf("list or watch of %s could not reach the API server for %s; the manager is not ready", resource, now.Sub(run.unreachableSince).Round(time.Second)))
			}
			failing = append(failing, resource)
		}
	}
	sort.Strings(failing)
	return failing
}

// Unreachable lists the resources whose informer could not reach the API
// server within the window (failing readiness or not yet).
func (m *WatchMonitor) Unreachable() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.Now()
	var out []string
	for resource, run := range m.failures {
		if run.unreachable > 0 && now.Sub(run.last) <= m.Window {
			out = append(out, resource)
		}
	}
	sort.Strings(out)
	return out
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
