package manager

import (
	"context"
	"crypto/tls"
	"flag"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"keyward.dev/keyward/internal/health"
)

// The metrics endpoint authenticates every scrape with a TokenReview and
// authorizes it with a SubjectAccessReview (get on the non-resource URL
// /metrics, which the ClusterRole keyward-metrics-reader grants).
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// MetricsFlags are the manager's metrics options: HTTPS with authentication
// and authorization on :8443 by default (as kubebuilder scaffolds it);
// --metrics-secure=false serves plain HTTP without either, for a loopback
// address on a developer's machine.
type MetricsFlags struct {
	addr    string
	secure  bool
	certDir string
}

func (m *MetricsFlags) Bind(fs *flag.FlagSet) {
	fs.StringVar(&m.addr, "metrics-bind-address", ":8443", "Address the metrics endpoint binds to; 0 disables it.")
	fs.BoolVar(&m.secure, "metrics-secure", true,
		"Serve metrics over HTTPS, authenticating callers with TokenReview and authorizing them with SubjectAccessReview; false serves plain HTTP to anyone (local use only).")
	fs.StringVar(&m.certDir, "metrics-cert-dir", "",
		"Directory holding tls.crt and tls.key for the metrics endpoint; empty = a self-signed certificate generated at start.")
}

func (m *MetricsFlags) options() metricsserver.Options {
	o := metricsserver.Options{
		BindAddress:   m.addr,
		SecureServing: m.secure,
		CertDir:       m.certDir,
		// HTTP/2 stays off (CVE-2023-44487, CVE-2023-39325), as kubebuilder does.
		TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }},
	}
	if m.secure {
		o.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	return o
}

// managerCollectors are the manager's own metrics besides the verifier's
// (serve.SetupWithManager registers those), keyward_build_info
// (RegisterBuildInfo) and controller-runtime's (registered when its packages
// load): the watch monitor's, the admission check's, one readiness gauge per
// readiness check and leadership. Manager.RegisterMetrics registers them;
// the metric inventory test builds the registry with the same function.
func managerCollectors(watches *health.WatchMonitor, admission *health.AdmissionPolicies,
	elected <-chan struct{}, checks map[string]healthz.Checker) []prometheus.Collector {
	out := append(watches.Collectors(), admission.Collectors()...)
	for name, check := range checks {
		out = append(out, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "keyward_ready",
			Help:        "1 while the readiness check named by check passes on this replica, 0 while it fails (the replica is then out of the verifier's Service).",
			ConstLabels: prometheus.Labels{"check": name},
		}, func() float64 { return passing(check) }))
	}
	out = append(out, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "keyward_leader",
		Help: "1 on the replica that holds the leader lease (it reconciles and reports the per-key series), 0 on the others.",
	}, func() float64 {
		select {
		case <-elected:
			return 1
		default:
			return 0
		}
	}))
	return out
}

// passing runs a readiness check as /readyz would, bounded in time.
func passing(check healthz.Checker) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "/readyz", nil)
	if err != nil || check(req) != nil {
		return 0
	}
	return 1
}
