package controlplane

import (
	"fmt"
	"path/filepath"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// StartEnvtest starts env (etcd and kube-apiserver from bin) and hands the
// processes it launched to the watchdog, even when Start fails or panics
// (envtest panics on some misconfigurations; the panic becomes an error). The
// caller must call env.Stop() on error too.
func StartEnvtest(env *envtest.Environment, bin string, wd *Watchdog) (cfg *rest.Config, err error) {
	defer func() {
		if wd != nil {
			_ = wd.Add(ChildProcesses(filepath.Join(bin, "etcd"), filepath.Join(bin, "kube-apiserver"))...)
		}
		if r := recover(); r != nil {
			err = fmt.Errorf("envtest panicked: %v", r)
		}
	}()
	return env.Start()
}
