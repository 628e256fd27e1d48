package manager

import (
	"crypto/tls"
	"flag"

	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
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
