package manager

import (
	"github.com/prometheus/client_golang/prometheus"

	"keyward.dev/keyward/internal/version"
)

// RegisterBuildInfo makes the build visible where operators already look:
// the metrics endpoint serves keyward_build_info{version, revision,
// goversion} 1, as --version prints it. internal/version says how a build is
// stamped.
func RegisterBuildInfo(reg prometheus.Registerer) error {
	info := version.Get()
	return reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "keyward_build_info",
		Help:        "Always 1; the labels name the manager's version, source revision and Go version.",
		ConstLabels: prometheus.Labels{"version": info.Version, "revision": info.Revision, "goversion": info.GoVersion},
	}, func() float64 { return 1 }))
}
