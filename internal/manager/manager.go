package manager

import (
	"context"
	"fmt"
	"maps"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	keywardv1alpha1 "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/controllers"
	"keyward.dev/keyward/internal/health"
)

// Scheme holds the kinds the manager reads and writes: client-go's and
// keyward.dev/v1alpha1.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(keywardv1alpha1.AddToScheme(s))
	return s
}

// SetupLogging makes controller-runtime's logger from the --zap-* flags,
// capped at maxLogVerbosity: client-go logs Secrets' bodies above it
// (docs/security.md).
func SetupLogging(f *Flags) {
	ctrl.SetLogger(capVerbosity(zap.New(zap.UseFlagOptions(&f.Zap)), maxLogVerbosity))
}

// New makes the controller-runtime manager from the flags, with what keeps
// it observable: a stalled informer fails readiness and says why in a log
// line, a metric and an Event on this Pod; the admission-policy check runs
// on every replica and tells the controllers (through f.Controllers) when
// the policies come or go; the Go memory limit follows the container's.
// ctx is the signal handler's: once it is done the process leaves within
// the shutdown timeout plus 5s, whatever state it is in.
func New(ctx context.Context, f *Flags) (*Manager, error) {
	log := ctrl.Log.WithName("setup")
	watches := health.NewWatchMonitor(ctrl.Log.WithName("watch"))
	watches.UnreachableGrace = f.UnreachableGrace
	cacheOpts := controllers.CacheOptions()
	cacheOpts.DefaultWatchErrorHandler = watches.Handle

	cfg := ctrl.GetConfigOrDie()
	cfg.QPS, cfg.Burst = float32(f.KubeAPIQPS), f.KubeAPIBurst
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  Scheme(),
		Controller:              config.Controller{MaxConcurrentReconciles: f.Controllers.MaxConcurrentReconciles},
		Metrics:                 f.Metrics.options(),
		HealthProbeBindAddress:  f.ProbeAddr,
		PprofBindAddress:        f.PprofAddr,
		LeaderElection:          f.LeaderElect,
		LeaderElectionID:        "keyward.keyward.dev",
		LeaderElectionNamespace: f.LeaderElectionNamespace,
		Cache:                   cacheOpts,
		GracefulShutdownTimeout: &f.ShutdownTimeout,
		Client:                  client.Options{FieldOwner: controllers.FieldOwner},
	})
	if err != nil {
		return nil, err
	}
	if limit := setMemoryLimit(); limit > 0 {
		log.Info("Go memory limit set from the container's", "bytes", limit, "share", memoryLimitShare)
	}
	go exitAfterShutdownTimeout(ctx, f.ShutdownTimeout+5*time.Second)
	if pod := thisPod(); pod != nil {
		watches.Recorder, watches.Pod = mgr.GetEventRecorder(controllers.EventSource), pod
	}

	admissionChanged := make(chan event.GenericEvent, 1)
	admission := &health.AdmissionPolicies{Reader: mgr.GetAPIReader(), Log: ctrl.Log.WithName("admission"), Interval: f.AdmissionCheckInterval,
		OnChange: func(bool) {
			select { // one pending event is enough: it re-reports every TenantSettings
			case admissionChanged <- event.GenericEvent{Object: &keywardv1alpha1.TenantSettings{}}:
			default:
			}
		}}
	f.Controllers.AdmissionPolicies, f.Controllers.AdmissionChanged = admission, admissionChanged
	if err := mgr.Add(admission); err != nil {
		return nil, fmt.Errorf("unable to set up the admission policy check: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, fmt.Errorf("unable to set up health check: %w", err)
	}
	readiness := map[string]healthz.Checker{
		"informers-synced": health.CacheSynced(mgr.GetCache()),
		"watches":          watches.Check,
	}
	for name, check := range readiness {
		if err := mgr.AddReadyzCheck(name, check); err != nil {
			return nil, fmt.Errorf("unable to set up ready check %s: %w", name, err)
		}
	}
	return &Manager{Manager: mgr, watches: watches, admission: admission, readiness: readiness}, nil
}

// Manager is controller-runtime's manager with what New wired around it,
// kept for the manager's own metrics.
type Manager struct {
	ctrl.Manager
	watches   *health.WatchMonitor
	admission *health.AdmissionPolicies
	readiness map[string]healthz.Checker
}

// RegisterMetrics registers the manager's own metrics on reg: the watch
// monitor's and the admission check's, keyward_ready for each readiness
// check (New's and more, which others registered with the manager, such as
// the verifier's) and keyward_leader. Call it once everything is set up.
func (m *Manager) RegisterMetrics(reg prometheus.Registerer, more map[string]healthz.Checker) error {
	checks := maps.Clone(m.readiness)
	maps.Copy(checks, more)
	for _, c := range managerCollectors(m.watches, m.admission, m.Elected(), checks) {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// exitAfterShutdownTimeout ends the process once limit has passed after ctx
// is done: a manager whose caches never synced can be stuck in places that
// do not watch ctx, and it must still leave within its Pod's grace period.
func exitAfterShutdownTimeout(ctx context.Context, limit time.Duration) {
	<-ctx.Done()
	time.Sleep(limit)
	ctrl.Log.WithName("setup").Info("the manager did not stop within its shutdown timeout; exiting", "timeout", limit)
	os.Exit(1)
}

// thisPod is the manager's own Pod, from the downward API (POD_NAME and
// POD_NAMESPACE), for Events about the manager itself; nil outside a Pod.
func thisPod() *corev1.Pod {
	name, ns := os.Getenv("POD_NAME"), os.Getenv("POD_NAMESPACE")
	if name == "" || ns == "" {
		return nil
	}
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
}
