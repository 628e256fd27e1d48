// Command manager runs the Keyward controllers and the verifier: every
// replica verifies, the elected leader reconciles (docs/operations.md).
// internal/manager does the wiring; this file is the order of it.
package main

import (
	"flag"
	"fmt"
	"os"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"keyward.dev/keyward/controllers"
	"keyward.dev/keyward/internal/manager"
	"keyward.dev/keyward/internal/serve"
	"keyward.dev/keyward/internal/version"
)

func main() {
	flags := manager.NewFlags()
	flags.Bind(flag.CommandLine)
	verifyOpts := serve.DefaultOptions()
	verifyOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	if flags.Version {
		fmt.Println("keyward-manager", version.Get())
		return
	}

	manager.SetupLogging(flags)
	log := ctrl.Log.WithName("setup")
	if err := flags.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "keyward:", err)
		os.Exit(2)
	}
	exitOn := func(err error, msg string) {
		if err != nil {
			log.Error(err, msg)
			os.Exit(1)
		}
	}
	exitOn(manager.RegisterBuildInfo(metrics.Registry), "unable to register keyward_build_info")

	ctx := ctrl.SetupSignalHandler()
	mgr, err := manager.New(ctx, flags)
	exitOn(err, "unable to create manager")
	exitOn(controllers.SetupWithManager(ctx, mgr, flags.Controllers), "unable to set up controllers")
	verifyOpts.APIKeysEnabledByDefault = flags.Controllers.APIKeysEnabledByDefault
	verification, err := serve.SetupWithManager(ctx, mgr, verifyOpts)
	exitOn(err, "unable to set up the verifier")
	exitOn(mgr.RegisterMetrics(metrics.Registry, map[string]healthz.Checker{serve.ReadyzCheck: verification.Ready}),
		"unable to register the manager's metrics")

	log.Info("starting manager")
	exitOn(mgr.Start(ctx), "manager exited with an error")
}
