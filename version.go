package main

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"keyward.dev/keyward/internal/version"
)

// The build is visible where operators already look: the metrics endpoint
// serves keyward_build_info{version, revision, goversion} 1, and --version
// prints it. internal/version says how a build is stamped.
func init() {
	info := version.Get()
	metrics.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "keyward_build_info",
		Help:        "Always 1; the labels name the manager's version, source revision and Go version.",
		ConstLabels: prometheus.Labels{"version": info.Version, "revision": info.Revision, "goversion": info.GoVersion},
	}, func() float64 { return 1 }))
}
