package manager

import (
	"testing"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
)

// client-go logs request and response bodies at 8: whatever verbosity the
// flags ask for, nothing above 7 may get through, also not through loggers
// derived with names and values.
func TestCapVerbosityDropsRequestBodies(t *testing.T) {
	var lines []string
	base := funcr.New(func(prefix, args string) { lines = append(lines, prefix+" "+args) }, funcr.Options{Verbosity: 10})
	log := capVerbosity(base, maxLogVerbosity).WithName("client").WithValues("controller", "accesskey")

	log.V(8).Info("Request Body", "body", "kw_secret")
	log.V(10).Info("Response Body", "body", "kw_secret")
	if log.V(8).Enabled() || log.V(9).Enabled() {
		t.Error("verbosity above the cap reported enabled")
	}
	if len(lines) != 0 {
		t.Fatalf("lines above the cap were written: %d", len(lines))
	}
	log.V(7).Info("Request Headers")
	log.Info("issued")
	log.Error(nil, "failed")
	if len(lines) != 3 {
		t.Fatalf("got %d lines at or below the cap, want 3", len(lines))
	}
	var _ logr.CallDepthLogSink = &verbosityCap{}
}
