// Package manager wires the Keyward manager: its flags, logging, memory
// limit, metrics server, health checks and the admission-policy check around
// controller-runtime's manager. main.go calls it step by step; the
// controllers and the verifier set themselves up (controllers, verify).
package manager

import (
	"flag"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"keyward.dev/keyward/controllers"
	"keyward.dev/keyward/internal/health"
)

// Flags are the manager's own command-line options (docs/operations.md lists
// them); the verifier and the token service bind theirs (serve.Options.BindFlags).
type Flags struct {
	Version                 bool
	Metrics                 MetricsFlags
	ProbeAddr               string
	PprofAddr               string
	LeaderElect             bool
	LeaderElectionNamespace string
	ShutdownTimeout         time.Duration
	AdmissionCheckInterval  time.Duration
	UnreachableGrace        time.Duration
	KubeAPIQPS              float64
	KubeAPIBurst            int
	Controllers             controllers.Options
	Zap                     zap.Options
}

// NewFlags returns the defaults, before any flag is parsed.
func NewFlags() *Flags {
	return &Flags{Controllers: controllers.DefaultOptions(), Zap: zap.Options{Development: false}}
}

// Bind registers every flag on fs.
func (f *Flags) Bind(fs *flag.FlagSet) {
	fs.BoolVar(&f.Version, "version", false, "Print the version, source revision, Go version and platform, and exit.")
	f.Metrics.Bind(fs)
	fs.StringVar(&f.ProbeAddr, "health-probe-bind-address", ":8081", "Address the health and readiness probes bind to.")
	fs.StringVar(&f.PprofAddr, "pprof-bind-address", "", "Address Go's pprof profiles are served on, for profiling (empty: off; keep it on loopback).")
	fs.BoolVar(&f.LeaderElect, "leader-elect", false, "Enable leader election so that only one replica reconciles.")
	fs.StringVar(&f.LeaderElectionNamespace, "leader-election-namespace", "", "Namespace of the leader-election lease (default: the pod's namespace).")
	fs.BoolVar(&f.Controllers.APIKeysEnabledByDefault, "api-keys-enabled-by-default", false,
		"Switch API keys on in tenants whose TenantSettings is missing or leaves apiKeysEnabled unset.")
	fs.DurationVar(&f.Controllers.MaxRequeue, "max-requeue", f.Controllers.MaxRequeue, "Upper bound of every reconcile timer, so a lost timer heals (at least 1s).")
	fs.DurationVar(&f.ShutdownTimeout, "graceful-shutdown-timeout", 15*time.Second,
		"How long the manager waits for its work to stop after SIGTERM; it exits 5s later whatever state it is in.")
	fs.DurationVar(&f.AdmissionCheckInterval, "admission-check-interval", health.DefaultAdmissionCheckInterval,
		"How often every replica looks for Keyward's admission policies (reported on every TenantSettings and as keyward_admission_policies_installed).")
	fs.DurationVar(&f.UnreachableGrace, "api-unreachable-grace", health.DefaultUnreachableGrace,
		"How long a replica whose informers cannot reach the API server (refused, timed out, 429/503/504) stays ready, answering verifications from its cache; 0: not ready after 3 such failures, like any other watch failure.")
	fs.IntVar(&f.Controllers.MaxConcurrentReconciles, "max-concurrent-reconciles", 4, "Reconciles each controller runs at once.")
	fs.Float64Var(&f.KubeAPIQPS, "kube-api-qps", 400, "Client-side limit of requests per second to the API server, per resource (a negative value switches client-side limiting off); docs/benchmarks.md shows why 400.")
	fs.IntVar(&f.KubeAPIBurst, "kube-api-burst", 800, "Requests allowed above --kube-api-qps in a burst.")
	f.Zap.BindFlags(fs)
}

// Validate reports the first flag value the manager cannot run with.
func (f *Flags) Validate() error { return f.Controllers.Validate() }
