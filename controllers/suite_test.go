package controllers_test

import (
	"context"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"

	"keyward.dev/keyward/controllers"
	"keyward.dev/keyward/test/harness/testenv"
)

// The suite runs the real manager against a real kube-apiserver, etcd and
// kube-controller-manager (garbage collector), all from bin/k8s.
var (
	env    *testenv.Env
	k8s    client.Client // uncached admin client
	ctx    context.Context
	cancel context.CancelFunc

	// managerLog captures everything the manager logs, so the suite can
	// prove no key material ever reaches a log line.
	managerLog *testenv.LogBuffer

	// mgr is the manager under test, with main.go's cache options.
	mgr ctrl.Manager
	// stopMgr stops mgr and waits until it has stopped.
	stopMgr func()
)

// Timeouts for Eventually: reconciles take milliseconds; expiry tests wait
// for timers of a few seconds.
const (
	timeout  = 20 * time.Second
	interval = 100 * time.Millisecond
)

func TestControllers(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Controllers suite (real kube-apiserver, etcd and garbage collector)")
}

var _ = BeforeSuite(func() {
	var log logr.Logger
	log, managerLog = testenv.CaptureLogs(GinkgoWriter)
	ctrl.SetLogger(log)
	ctx, cancel = context.WithCancel(context.Background())

	var err error
	env, err = testenv.Start()
	Expect(err).NotTo(HaveOccurred())
	k8s = env.Client

	mgr, stopMgr = startManager()
})

// startManager starts a manager with main.go's cache options and the
// suite's options, and returns it with a function that stops it and waits
// until it has stopped (as a restart or a leader change would). Its
// client goes through wrap, when one is given.
func startManager(wrap ...func(client.Client) client.Client) (ctrl.Manager, func()) {
	GinkgoHelper()
	o := env.ManagerOptions(ctrl.Log)
	// Several managers run in this process, one after the other.
	o.Controller = config.Controller{SkipNameValidation: ptr.To(true)}
	for _, w := range wrap {
		o.NewClient = func(cfg *rest.Config, opts client.Options) (client.Client, error) {
			c, err := client.New(cfg, opts)
			if err != nil {
				return nil, err
			}
			return w(c), nil
		}
	}
	m, err := ctrl.NewManager(env.Config, o)
	Expect(err).NotTo(HaveOccurred())
	mctx, mcancel := context.WithCancel(ctx)
	// The manager's defaults: the periodic look at every key (--max-requeue)
	// stays out of the way of specs that count reconciles.
	opts := controllers.DefaultOptions()
	Expect(controllers.SetupWithManager(mctx, m, opts)).To(Succeed())
	done := make(chan struct{})
	go func() {
		defer GinkgoRecover()
		defer close(done)
		Expect(m.Start(mctx)).To(Succeed())
	}()
	return m, func() { mcancel(); <-done }
}

var _ = AfterSuite(func() {
	if env != nil {
		expectNoKeyMaterialLeaked()
	}
	if stopMgr != nil {
		stopMgr()
	}
	if cancel != nil {
		cancel()
	}
	if env != nil {
		Expect(env.Stop()).To(Succeed())
	}
})
