// Package smoke proves the test harness gives every suite a real control
// plane: Keyward's CRDs are served, and kube-controller-manager's garbage
// collector and namespace controller act on owner references and namespace
// deletion.
package smoke

import (
	"context"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"keyward.dev/keyward/test/harness/testenv"
)

var (
	env *testenv.Env
	ctx = context.Background()
)

func TestSmoke(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Smoke suite: real kube-apiserver, etcd and garbage collector")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	var err error
	env, err = testenv.Start()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() {
		Expect(env.Stop()).To(Succeed())
	})
})
