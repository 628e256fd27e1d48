// Package verify_test runs the verifier inside the real manager, next to the
// real controllers, against a real kube-apiserver, etcd and garbage
// collector: keys are issued by the controllers, read from their Secrets,
// and checked through /v1/verify, /v1/auth, Envoy ext_authz gRPC and a real
// NGINX doing auth_request.
package verify_test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"keyward.dev/keyward/controllers"
	"keyward.dev/keyward/internal/serve"
	"keyward.dev/keyward/test/harness/testenv"
)

var (
	env    *testenv.Env
	k8s    client.Client
	ctx    context.Context
	cancel context.CancelFunc
	mgr    ctrl.Manager
	vf     *serve.Verification

	// verifyURL and grpcAddr are where the manager's verifier listens.
	verifyURL string
	grpcAddr  string
	// issuer is the token issuer: the verifier's own loopback URL, so
	// that go-oidc finds the discovery document where iss says.
	issuer string
	// signingNS holds the token signing Secrets.
	signingNS string

	managerLog *testenv.LogBuffer
)

const (
	timeout  = 20 * time.Second
	interval = 50 * time.Millisecond
	// heavyUseThreshold is low so that the suite can show heavy use.
	heavyUseThreshold = 30
	// failureBurst: guesses a client address may make before rate_limited.
	failureBurst = 5
)

func TestVerify(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Verify suite (the verifier in the real manager, real kube-apiserver, NGINX)")
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

	o := env.ManagerOptions(log)
	o.HealthProbeBindAddress = "127.0.0.1:0"
	mgr, err = ctrl.NewManager(env.Config, o)
	Expect(err).NotTo(HaveOccurred())
	opts := controllers.DefaultOptions()
	opts.MaxRequeue = 30 * time.Second
	Expect(controllers.SetupWithManager(ctx, mgr, opts)).To(Succeed())

	vopts := serve.DefaultOptions()
	vopts.BindAddress = "127.0.0.1:0"
	vopts.TLS = serve.TLSOff // the suite's clients and NGINX speak plaintext on loopback
	vopts.GRPCBindAddress = "127.0.0.1:0"
	// The suite's clients, NGINX and the gRPC caller all run on loopback
	// and act as proxies: each spec speaks for its own client address
	// through X-Forwarded-For, sourceIP or Envoy's source address.
	vopts.TrustedProxies = "127.0.0.1/32,::1/128"
	vopts.FailureRate = 0.01
	vopts.FailureBurst = failureBurst
	vopts.FlushInterval = 100 * time.Millisecond
	vopts.HeavyUseThreshold = heavyUseThreshold
	signingNS = "keyward-system"
	Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: signingNS}})).To(Succeed())
	vopts.BindAddress = freeLoopbackAddr()
	issuer = "http://" + vopts.BindAddress
	vopts.TokenIssuer = issuer
	vopts.TokenSigningNamespace = signingNS
	vopts.TokenSigningRefresh = 200 * time.Millisecond
	vf, err = serve.SetupWithManager(ctx, mgr, vopts)
	Expect(err).NotTo(HaveOccurred())

	go func() {
		defer GinkgoRecover()
		Expect(mgr.Start(ctx)).To(Succeed())
	}()
	Eventually(func() bool { return vf.HTTP.ListenAddr() != nil && vf.GRPC.ListenAddr() != nil }, timeout, interval).Should(BeTrue())
	verifyURL = "http://" + vf.HTTP.ListenAddr().String()
	grpcAddr = vf.GRPC.ListenAddr().String()
})

var _ = AfterSuite(func() {
	if env != nil {
		rememberSigningKeys()
		expectNoKeyMaterialLeaked()
	}
	if cancel != nil {
		cancel()
	}
	if env != nil {
		Expect(env.Stop()).To(Succeed())
	}
})

// freeLoopbackAddr is a loopback address with a port free now, for a
// listener whose URL must be known before it starts (the token issuer).
func freeLoopbackAddr() string {
	GinkgoHelper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	defer ln.Close()
	return ln.Addr().String()
}

var httpClient = &http.Client{Timeout: 5 * time.Second}
