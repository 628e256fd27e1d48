// Command manager runs the Keyward controllers.
package main

import (
	"crypto/tls"
	"flag"
	"os"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	keywardv1alpha1 "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/controllers"
)

var scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(keywardv1alpha1.AddToScheme(scheme))
}

func main() {
	var (
		metricsAddr          string
		probeAddr            string
		secureMetrics        bool
		enableLeaderElection bool
		leaderElectionNS     string
		maxConcurrent        int
		kubeAPIQPS           float64
		kubeAPIBurst         int
		opts                 = controllers.DefaultOptions()
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "Address the metrics endpoint binds to; 0 disables it.")
	flag.BoolVar(&secureMetrics, "metrics-secure", false, "Serve metrics over HTTPS with authentication and authorization.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address the health and readiness probes bind to.")
	flag.BoolVar(&enableLeaderElection, "leader-elect", false, "Enable leader election so that only one replica reconciles.")
	flag.StringVar(&leaderElectionNS, "leader-election-namespace", "", "Namespace of the leader-election lease (default: the pod's namespace).")
	flag.BoolVar(&opts.APIKeysEnabledByDefault, "api-keys-enabled-by-default", false,
		"Switch API keys on in tenants whose TenantSettings is missing or leaves apiKeysEnabled unset.")
	flag.DurationVar(&opts.SettleDelay, "settle-delay", opts.SettleDelay,
		"How long a new key waits after its creation second before taking a slot, so keys created together are ranked by age.")
	flag.DurationVar(&opts.MaxRequeue, "max-requeue", opts.MaxRequeue, "Upper bound of every reconcile timer, so a lost timer heals.")
	flag.IntVar(&maxConcurrent, "max-concurrent-reconciles", 4, "Reconciles each controller runs at once.")
	flag.Float64Var(&kubeAPIQPS, "kube-api-qps", 50, "Client-side limit of requests per second to the API server (a negative value switches client-side limiting off).")
	flag.IntVar(&kubeAPIBurst, "kube-api-burst", 100, "Requests allowed above --kube-api-qps in a burst.")
	zapOpts := zap.Options{Development: false}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()

	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("setup")

	cfg := ctrl.GetConfigOrDie()
	cfg.QPS, cfg.Burst = float32(kubeAPIQPS), kubeAPIBurst
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:     scheme,
		Controller: config.Controller{MaxConcurrentReconciles: maxConcurrent},
		Metrics: metricsserver.Options{
			BindAddress:   metricsAddr,
			SecureServing: secureMetrics,
			TLSOpts:       []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }},
		},
		HealthProbeBindAddress:  probeAddr,
		LeaderElection:          enableLeaderElection,
		LeaderElectionID:        "keyward.keyward.dev",
		LeaderElectionNamespace: leaderElectionNS,
		Cache:                   controllers.CacheOptions(),
		Client:                  client.Options{FieldOwner: controllers.FieldOwner},
	})
	if err != nil {
		log.Error(err, "unable to create manager")
		os.Exit(1)
	}
	ctx := ctrl.SetupSignalHandler()
	if err := controllers.SetupWithManager(ctx, mgr, opts); err != nil {
		log.Error(err, "unable to set up controllers")
		os.Exit(1)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		log.Error(err, "unable to set up health check")
		os.Exit(1)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		log.Error(err, "unable to set up ready check")
		os.Exit(1)
	}
	log.Info("starting manager")
	if err := mgr.Start(ctx); err != nil {
		log.Error(err, "manager exited with an error")
		os.Exit(1)
	}
}
