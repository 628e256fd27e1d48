package main

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// version and revision are stamped at link time by `make image` (through
// hack/image/build.sh) and by the Dockerfile:
//
//	go build -ldflags "-X main.version=v0.3.0 -X main.revision=<commit>"
//
// An unstamped build (go build, go run, make local) reports "dev" and the
// commit Go recorded from the checkout, if any.
var (
	version  = "dev"
	revision = ""
)

// The build is visible where operators already look: the metrics endpoint
// serves keyward_build_info{version, revision, goversion} 1.
func init() {
	if revision == "" {
		revision = vcsRevision()
	}
	metrics.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
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
