package verify_test

import (
	"net/http"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/verify"
)

var _ = Describe("A key being deleted", func() {
	It("is refused within 1 s at /v1/verify, /v1/auth, gRPC, /v1/token and introspection while a finalizer holds it", func() {
		const finalizer = "example.com/audit-hold"
		ns := newTenant(true)
		newApp(ns, "billing", "", sc("orders", keyward.ReadWrite))
		held := newKey(ns, "held", "billing", func(k *keyward.AccessKey) { controllerutil.AddFinalizer(k, finalizer) })
		caller := issued(newKey(ns, "caller", "billing"))
		plain := issued(held)
		DeferCleanup(func() {
			update(held, func(k *keyward.AccessKey) { controllerutil.RemoveFinalizer(k, finalizer) })
		})

		var provider *oidc.Provider
		Eventually(func() (err error) { provider, err = oidc.NewProvider(ctx, issuer); return err }, timeout, interval).Should(Succeed())
		tok, err := exchange(provider, plain)
		Expect(err).NotTo(HaveOccurred())
		Expect(auth(plain, nextClientIP()).Status).To(Equal(http.StatusOK))
		code, body := introspect(verifyURL, caller, tok.AccessToken)
		Expect(code).To(Equal(http.StatusOK))
		Expect(body["active"]).To(BeTrue())

		Expect(k8s.Delete(ctx, held)).To(Succeed())
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(held), held)).To(Succeed(), "the finalizer keeps the object")
		Expect(held.DeletionTimestamp).NotTo(BeNil())

		Eventually(func() string { return auth(plain, nextClientIP()).Reason }, time.Second, 10*time.Millisecond).Should(Equal(string(verify.ReasonUnknown)))
		Expect(verifyJSON(verify.VerifyRequest{Key: plain, SourceIP: nextClientIP()}).Reason).To(Equal(verify.ReasonUnknown))
		Expect(grpcStatus(check(plain, nextClientIP(), "GET", "/"))).To(Equal(http.StatusUnauthorized))
		_, err = exchange(provider, plain)
		Expect(err).To(MatchError(ContainSubstring("invalid_client")))
		code, body = introspect(verifyURL, caller, tok.AccessToken)
		Expect(code).To(Equal(http.StatusOK))
		Expect(body["active"]).To(BeFalse())
		Expect(auth(caller, nextClientIP()).Status).To(Equal(http.StatusOK), "the tenant's other keys are served")
	})
})
