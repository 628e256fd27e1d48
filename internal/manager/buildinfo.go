package manager

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// RegisterBuildInfo makes the build visible where operators already look:
// the metrics endpoint serves keyward_build_info{version, revision,
// goversion} 1. version and revision are what the link stamped into main
// (docs/image.md); an empty revision falls back to the commit the Go
// toolchain recorded from the checkout, if any.
func RegisterBuildInfo(reg prometheus.Registerer, version, revision string) error {
	if revision == "" {
		revision = vcsRevision()
	}
	return reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "keyward_build_info",
		Help:        "Always 1; the labels name the manager's version, source revision and Go version.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": runtime.Version()},
	}, func() float64 { return 1 }))
}

// vcsRevision is the commit the Go toolchain embedded (with a "-dirty" suffix
// for a modified tree), or "unknown".
func vcsRevision() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, dirty := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "unknown"
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
}
