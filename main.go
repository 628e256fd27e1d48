// Command manager runs the Keyward controllers.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

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
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	keywardv1alpha1 "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/controllers"
	"keyward.dev/keyward/internal/health"
	"keyward.dev/keyward/internal/serve"
	"keyward.dev/keyward/internal/version"
)

var scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(keywardv1alpha1.AddToScheme(scheme))
}

func main() {
	var (
		metricsOpts          metricsFlags
		probeAddr            string
		pprofAddr            string
		enableLeaderElection bool
		leaderElectionNS     string
		shutdownTimeout      time.Duration
		admissionInterval    time.Duration
		unreachableGrace     time.Duration
		maxConcurrent        int
		kubeAPIQPS           float64
		kubeAPIBurst         int
		opts                 = controllers.DefaultOptions()
		verifyOpts           = serve.DefaultOptions()
		showVersion          bool
	)
	flag.BoolVar(&showVersion, "version", false, "Print the version, source revision, Go version and platform, and exit.")
	metricsOpts.bind(flag.CommandLine)
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address the health and readiness probes bind to.")
	flag.StringVar(&pprofAddr, "pprof-bind-address", "", "Address Go's pprof profiles are served on, for profiling (empty: off; keep it on loopback).")
	flag.BoolVar(&enableLeaderElection, "leader-elect", false, "Enable leader election so that only one replica reconciles.")
	flag.StringVar(&leaderElectionNS, "leader-election-namespace", "", "Namespace of the leader-election lease (default: the pod's namespace).")
	flag.BoolVar(&opts.APIKeysEnabledByDefault, "api-keys-enabled-by-default", false,
		"Switch API keys on in tenants whose TenantSettings is missing or leaves apiKeysEnabled unset.")
	flag.DurationVar(&opts.MaxRequeue, "max-requeue", opts.MaxRequeue, "Upper bound of every reconcile timer, so a lost timer heals (at least 1s).")
	flag.DurationVar(&shutdownTimeout, "graceful-shutdown-timeout", 15*time.Second,
		"How long the manager waits for its work to stop after SIGTERM; it exits 5s later whatever state it is in.")
	flag.DurationVar(&admissionInterval, "admission-check-interval", health.DefaultAdmissionCheckInterval,
		"How often every replica looks for Keyward's admission policies (reported on every TenantSettings and as keyward_admission_policies_installed).")
	flag.DurationVar(&unreachableGrace, "api-unreachable-grace", health.DefaultUnreachableGrace,
		"How long a replica whose informers cannot reach the API server (refused, timed out, 429/503/504) stays ready, answering verifications from its cache; 0: not ready after 3 such failures, like any other watch failure.")
	verifyOpts.BindFlags(flag.CommandLine)
	flag.IntVar(&maxConcurrent, "max-concurrent-reconciles", 4, "Reconciles each controller runs at once.")
	flag.Float64Var(&kubeAPIQPS, "kube-api-qps", 400, "Client-side limit of requests per second to the API server, per resource (a negative value switches client-side limiting off); docs/benchmarks.md shows why 400.")
	flag.IntVar(&kubeAPIBurst, "kube-api-burst", 800, "Requests allowed above --kube-api-qps in a burst.")
	zapOpts := zap.Options{Development: false}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	if showVersion {
		fmt.Println("keyward-manager", version.Get())
		return
	}

	ctrl.SetLogger(capVerbosity(zap.New(zap.UseFlagOptions(&zapOpts)), maxLogVerbosity))
	log := ctrl.Log.WithName("setup")
	opts.MaxConcurrentReconciles = maxConcurrent
	if err := opts.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "keyward:", err)
		os.Exit(2)
	}

	// A stalled informer must show: readiness fails, and a log line, a
	// metric and an Event on this Pod say why.
	watches := health.NewWatchMonitor(ctrl.Log.WithName("watch"))
	watches.UnreachableGrace = unreachableGrace
	cacheOpts := controllers.CacheOptions()
	cacheOpts.DefaultWatchErrorHandler = watches.Handle

	cfg := ctrl.GetConfigOrDie()
	cfg.QPS, cfg.Burst = float32(kubeAPIQPS), kubeAPIBurst
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Controller:              config.Controller{MaxConcurrentReconciles: maxConcurrent},
		Metrics:                 metricsOpts.options(),
		HealthProbeBindAddress:  probeAddr,
		PprofBindAddress:        pprofAddr,
		LeaderElection:          enableLeaderElection,
		LeaderElectionID:        "keyward.keyward.dev",
		LeaderElectionNamespace: leaderElectionNS,
		Cache:                   cacheOpts,
		GracefulShutdownTimeout: &shutdownTimeout,
		Client:                  client.Options{FieldOwner: controllers.FieldOwner},
	})
	if err != nil {
		log.Error(err, "unable to create manager")
		os.Exit(1)
	}
	if limit := setMemoryLimit(); limit > 0 {
		log.Info("Go memory limit set from the container's", "bytes", limit, "share", memoryLimitShare)
	}
	ctx := ctrl.SetupSignalHandler()
	go exitAfterShutdownTimeout(ctx, shutdownTimeout+5*time.Second)
	if pod := thisPod(); pod != nil {
		watches.Recorder, watches.Pod = mgr.GetEventRecorder(controllers.EventSource), pod
	}
	admissionChanged := make(chan event.GenericEvent, 1)
	admission := &health.AdmissionPolicies{Reader: mgr.GetAPIReader(), Log: ctrl.Log.WithName("admission"), Interval: admissionInterval,
		OnChange: func(bool) {
			select { // one pending event is enough: it re-reports every TenantSettings
			case admissionChanged <- event.GenericEvent{Object: &keywardv1alpha1.TenantSettings{}}:
			default:
			}
		}}
	opts.AdmissionPolicies, opts.AdmissionChanged = admission, admissionChanged
	if err := mgr.Add(admission); err != nil {
		log.Error(err, "unable to set up the admission policy check")
		os.Exit(1)
	}
	if err := controllers.SetupWithManager(ctx, mgr, opts); err != nil {
		log.Error(err, "unable to set up controllers")
		os.Exit(1)
	}
	verifyOpts.APIKeysEnabledByDefault = opts.APIKeysEnabledByDefault
	verification, err := serve.SetupWithManager(ctx, mgr, verifyOpts)
	if err != nil {
		log.Error(err, "unable to set up the verifier")
		os.Exit(1)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		log.Error(err, "unable to set up health check")
		os.Exit(1)
	}
	readiness := map[string]healthz.Checker{
		"informers-synced": health.CacheSynced(mgr.GetCache()),
		"watches":          watches.Check,
	}
	for name, check := range readiness {
		if err := mgr.AddReadyzCheck(name, check); err != nil {
			log.Error(err, "unable to set up ready check", "check", name)
			os.Exit(1)
		}
	}
	readiness[serve.ReadyzCheck] = verification.Ready // registered by serve.SetupWithManager
	metrics.Registry.MustRegister(managerCollectors(watches, admission, mgr.Elected(), readiness)...)
	log.Info("starting manager")
	if err := mgr.Start(ctx); err != nil {
		log.Error(err, "manager exited with an error")
		os.Exit(1)
	}
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
