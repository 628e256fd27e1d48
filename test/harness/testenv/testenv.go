// Package testenv is the shared integration-test harness: a real etcd and
// kube-apiserver (through controller-runtime's envtest) with Keyward's CRDs,
// ClusterRoles and admission policies installed, plus a real
// kube-controller-manager running the garbage collector and the namespace
// controller, so owner-reference cascades and namespace deletion behave as in
// a cluster.
//
//	env, err := testenv.Start()
//	...
//	defer env.Stop()
//
// The binaries come from KUBEBUILDER_ASSETS or, when unset, from
// <repo>/bin/k8s/<KUBERNETES_VERSION> (built by `make controlplane`). Logs of
// kube-apiserver and kube-controller-manager go to bin/testenv/.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	keywardv1alpha1 "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/devenv/controlplane"
)

// Env is a running control plane.
type Env struct {
	Config *rest.Config  // admin (system:masters)
	Client client.Client // admin client with scheme incl. clientgoscheme + keyward api/v1alpha1
	Scheme *runtime.Scheme

	env      *envtest.Environment
	bin      string
	kcm      *controlplane.ControllerManager
	watchdog *controlplane.Watchdog
	tmpDir   string
	logs     []*os.File
	stopOnce sync.Once
	stopErr  error
}

// How long the garbage collector may take to prove itself after
// kube-controller-manager starts (it usually takes 1–3 s).
const gcReadyTimeout = 90 * time.Second

var started atomic.Int32

// Start starts etcd and kube-apiserver, installs the CRDs from
// config/crd/bases, applies the ClusterRoles, ClusterRoleBindings and
// (Mutating|Validating)AdmissionPolicy(Binding)s found under config/rbac and
// config/admission, then starts kube-controller-manager (garbage collector and
// namespace controllers) and returns once a real owner-reference cascade has
// happened and Keyward's admission policies act on AccessKeys. The CRDs go
// in before kube-controller-manager starts because its garbage collector
// rediscovers resource types only every 30 s. On error nothing is left
// running.
func Start() (*Env, error) { return StartWith(Options{}) }

// Options change what Start starts.
type Options struct {
	// EtcdDataDir is etcd's data directory, kept after Stop; empty means a
	// new one of envtest's, removed on Stop. A directory that holds data
	// (a restored snapshot) starts the control plane on that data.
	EtcdDataDir string
}

// StartWith is Start with options.
func StartWith(o Options) (_ *Env, retErr error) {
	root, err := controlplane.RepoRoot()
	if err != nil {
		return nil, err
	}
	bin, err := controlplane.BinDir(root)
	if err != nil {
		return nil, err
	}

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(keywardv1alpha1.AddToScheme(scheme))

	e := &Env{Scheme: scheme, bin: bin}
	defer func() {
		if retErr != nil {
			_ = e.Stop()
		}
	}()

	if e.tmpDir, err = os.MkdirTemp("", "keyward-testenv-"); err != nil {
		return nil, err
	}
	if e.watchdog, err = controlplane.StartWatchdog(); err != nil {
		return nil, err
	}

	logDir := filepath.Join(root, "bin", "testenv")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, err
	}
	prefix := filepath.Join(logDir, logPrefix())
	apiLog, err := e.createLog(prefix + "kube-apiserver.log")
	if err != nil {
		return nil, err
	}

	// kube-apiserver's certificates (serving, client CA, service-account
	// keys) live in a directory of ours rather than one envtest creates and
	// deletes on stop, so StopAPIServer and StartAPIServer keep them.
	certDir := filepath.Join(e.tmpDir, "kube-apiserver")
	if err := os.Mkdir(certDir, 0o700); err != nil {
		return nil, err
	}
	apiServer := &envtest.APIServer{Out: apiLog, Err: apiLog, CertDir: certDir}
	// On SIGTERM, end open watches (their clients watch again) instead of
	// waiting out --request-timeout (60 s) for their connections to close,
	// so that StopAPIServer takes about a second even with managers
	// watching.
	apiServer.Configure().Set("shutdown-watch-termination-grace-period", "5s")
	e.env = &envtest.Environment{
		Scheme:                scheme,
		BinaryAssetsDirectory: bin,
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		ControlPlane:          envtest.ControlPlane{APIServer: apiServer, Etcd: &envtest.Etcd{DataDir: o.EtcdDataDir}},
	}
	if os.Getenv("KUBEBUILDER_CONTROLPLANE_START_TIMEOUT") == "" {
		// Two cores running several suites at once can be slow.
		e.env.ControlPlaneStartTimeout = 60 * time.Second
	}
	cfg, err := controlplane.StartEnvtest(e.env, bin, e.watchdog)
	if err != nil {
		return nil, fmt.Errorf("starting etcd and kube-apiserver from %s (log %s): %w", bin, apiLog.Name(), err)
	}
	e.Config = cfg
	if e.Client, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		return nil, err
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := controlplane.InstallClusterManifests(ctx, e.Client, root); err != nil {
		return nil, err
	}

	// kube-controller-manager, with its own system:masters identity.
	user, err := e.env.AddUser(envtest.User{Name: "kube-controller-manager", Groups: []string{"system:masters"}},
		&rest.Config{QPS: 1000, Burst: 2000})
	if err != nil {
		return nil, fmt.Errorf("provisioning the kube-controller-manager user: %w", err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return nil, err
	}
	kubeconfigPath := filepath.Join(e.tmpDir, "kube-controller-manager.kubeconfig")
	if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
		return nil, err
	}
	e.kcm = &controlplane.ControllerManager{
		Path:       filepath.Join(bin, "kube-controller-manager"),
		Kubeconfig: kubeconfigPath,
		LogFile:    prefix + "kube-controller-manager.log",
	}
	if err := e.kcm.Start(); err != nil {
		return nil, err
	}
	_ = e.watchdog.Add(e.kcm.Pid())
	if err := controlplane.WaitForGarbageCollector(ctx, e.Client, "default", gcReadyTimeout, e.kcm.Exited); err != nil {
		return nil, err
	}
	if err := controlplane.WaitForAdmissionPolicies(ctx, e.Client, "default", time.Minute); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *Env) createLog(path string) (*os.File, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	e.logs = append(e.logs, f)
	return f, nil
}

// logPrefix names log files after the test binary (e.g. "smoke.test."), with
// a counter when one binary starts several environments.
func logPrefix() string {
	name := strings.TrimSuffix(filepath.Base(os.Args[0]), ".exe")
	if n := started.Add(1); n > 1 {
		name = fmt.Sprintf("%s-%d", name, n)
	}
	return name + "."
}

// Stop stops kube-controller-manager, then kube-apiserver and etcd. It is safe
// to call more than once and on a partly started Env.
func (e *Env) Stop() error {
	e.stopOnce.Do(func() {
		var errs []error
		if e.kcm != nil {
			errs = append(errs, e.kcm.Stop(15*time.Second))
		}
		if e.env != nil {
			errs = append(errs, e.env.Stop())
		}
		if e.watchdog != nil {
			e.watchdog.Release()
		}
		for _, f := range e.logs {
			_ = f.Close()
		}
		if e.tmpDir != "" {
			_ = os.RemoveAll(e.tmpDir)
		}
		e.stopErr = errors.Join(errs...)
	})
	return e.stopErr
}

// EtcdURL is the address etcd serves its clients on (plain HTTP on
// loopback), e.g. for `etcdctl snapshot save`.
func (e *Env) EtcdURL() string { return e.env.ControlPlane.Etcd.URL.String() }

// BinDir is the directory the control-plane binaries came from.
func (e *Env) BinDir() string { return e.bin }

// StopAPIServer stops kube-apiserver as a real shutdown does (SIGTERM, then
// waits for it to exit); etcd and kube-controller-manager keep running.
func (e *Env) StopAPIServer() error {
	return e.env.ControlPlane.APIServer.Stop()
}

// StartAPIServer starts kube-apiserver again after StopAPIServer: a new
// process on the same address, with the same etcd, certificates and flags,
// so every client and kubeconfig made before keeps working. It returns once
// the new process answers /healthz.
func (e *Env) StartAPIServer() error {
	if err := e.env.ControlPlane.APIServer.Start(); err != nil {
		return fmt.Errorf("starting kube-apiserver again: %w", err)
	}
	_ = e.watchdog.Add(controlplane.ChildProcesses(filepath.Join(e.bin, "kube-apiserver"))...)
	return nil
}

// ClientAs returns a client impersonating user (with groups) — for admission
// and RBAC tests. The API server adds system:authenticated itself.
func (e *Env) ClientAs(user string, groups ...string) (client.Client, error) {
	cfg := rest.CopyConfig(e.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	return client.New(cfg, client.Options{Scheme: e.Scheme})
}

// RepoRoot returns the repository root (found by walking up to go.mod of
// keyward.dev/keyward). It panics when there is none: tests cannot run
// outside the repository.
func RepoRoot() string {
	root, err := controlplane.RepoRoot()
	if err != nil {
		panic(err)
	}
	return root
}
