//go:build node

package image_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/secrets"
	"keyward.dev/keyward/internal/serve"
	"keyward.dev/keyward/test/harness/testenv"
)

var _ = Describe("The manager image on the node, as config/default deploys it", Ordered, func() {
	var leader string

	It("runs 2 replicas, Ready through their probes, one of them leading", func() {
		Eventually(func(g Gomega) {
			pods := readyManagers(g)
			g.Expect(pods).To(HaveLen(2))
			leader = leaseHolder(g)
			g.Expect(pods).To(ContainElement(HaveField("Name", leader)))
		}, 2*timeout, interval).Should(Succeed())
	})

	It("issues a key that every replica's verifier accepts", func() {
		key := issue("k1")
		var pods []corev1.Pod
		Eventually(func(g Gomega) { pods = readyManagers(g); g.Expect(pods).To(HaveLen(2)) }, timeout, interval).Should(Succeed())
		for _, p := range pods {
			Eventually(func(g Gomega) {
				g.Expect(auth(g, p.Status.PodIP, key)).To(Equal(200), "the verifier in %s", p.Name)
			}, timeout, interval).Should(Succeed())
			Expect(auth(Default, p.Status.PodIP, key[:len(key)-1]+"x")).To(Equal(401))
		}
	})

	It("hands over when the leader's Pod is deleted, and the Deployment restores 2 Ready replicas", func() {
		Expect(leader).NotTo(BeEmpty())
		old := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: leader}}
		Expect(k8s.Delete(ctx, old)).To(Succeed())
		Eventually(func(g Gomega) {
			h := leaseHolder(g)
			g.Expect(h).NotTo(BeEmpty())
			g.Expect(h).NotTo(Equal(leader))
		}, 2*timeout, interval).Should(Succeed())
		issue("k2") // the new leader issues
		Eventually(func(g Gomega) {
			pods := readyManagers(g)
			g.Expect(pods).To(HaveLen(2))
			g.Expect(pods).NotTo(ContainElement(HaveField("Name", leader)))
		}, 2*timeout, interval).Should(Succeed())
	})

	AfterAll(func() {
		// No key material in any AccessKey or Event (the Pods' logs stay
		// on the node).
		Expect(testenv.FindKeyMaterial(ctx, k8s, seen, "")).To(Succeed())
	})
})

var seen = map[string]bool{}

// readyManagers are the manager Pods that are Running and Ready, not being
// deleted.
func readyManagers(g Gomega) []corev1.Pod {
	var pods corev1.PodList
	g.Expect(k8s.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{"app.kubernetes.io/component": "manager"})).To(Succeed())
	var out []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
			continue
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				out = append(out, p)
			}
		}
	}
	return out
}

// leaseHolder is the Pod holding the leader-election Lease (controller-runtime
// names the holder <hostname>_<uuid>; a Pod's hostname is its name).
func leaseHolder(g Gomega) string {
	var l coordinationv1.Lease
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "keyward.keyward.dev"}, &l)).To(Succeed())
	g.Expect(l.Spec.HolderIdentity).NotTo(BeNil())
	h, _, _ := strings.Cut(*l.Spec.HolderIdentity, "_")
	return h
}

var tenant string

// issue creates a key in the suite's tenant and returns its material once
// the manager in the Pods has issued it.
func issue(name string) string {
	GinkgoHelper()
	if tenant == "" {
		tenant = "t-" + rand.String(6)
		Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: tenant}})).To(Succeed())
		Expect(k8s.Create(ctx, &keyward.TenantSettings{
			ObjectMeta: metav1.ObjectMeta{Namespace: tenant, Name: keyward.TenantSettingsName},
			Spec:       keyward.TenantSettingsSpec{APIKeysEnabled: ptr.To(true), MaxKeysPerOwner: 10},
		})).To(Succeed())
		Expect(k8s.Create(ctx, &keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: tenant, Name: "shop"},
			Spec: keyward.ApplicationSpec{Group: "shop", Team: "payments", MaxAccessKeys: 10}})).To(Succeed())
	}
	k := &keyward.AccessKey{ObjectMeta: metav1.ObjectMeta{Namespace: tenant, Name: name},
		Spec: keyward.AccessKeySpec{Application: "shop", Owner: "alice"}}
	Expect(k8s.Create(ctx, k)).To(Succeed())
	var key string
	Eventually(func(g Gomega) {
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(k), k)).To(Succeed())
		g.Expect(k.Status.Phase).To(Equal(keyward.PhaseActive))
		var s corev1.Secret
		g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: tenant, Name: k.SecretName()}, &s)).To(Succeed())
		m, ok := secrets.Material(&s)
		g.Expect(ok).To(BeTrue())
		g.Expect(m.ID).To(Equal(k.Status.KeyID))
		key = m.Plaintext()
		seen[key], seen[m.Secret] = true, true
	}, timeout, interval).Should(Succeed())
	return key
}

// verifierClient trusts the CA the manager publishes in the ConfigMap
// keyward-verifier-ca, as a gateway in the cluster would, and checks the
// certificate for the Service's name (a Pod IP is not in it).
func verifierClient(g Gomega) *http.Client {
	var cm corev1.ConfigMap
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: serve.DefaultTLSCAConfigMap}, &cm)).To(Succeed())
	pool := x509.NewCertPool()
	g.Expect(pool.AppendCertsFromPEM([]byte(cm.Data["ca.crt"]))).To(BeTrue(), "the published CA bundle parses")
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pool, ServerName: serve.DNSNames(serve.DefaultServiceName, ns)[0], MinVersion: tls.VersionTLS12}}}
}

// auth calls a replica's GET /v1/auth (port 8082 over TLS, config/manager)
// at its Pod IP, routed over the veth to the node's bridge.
func auth(g Gomega, podIP, key string) int {
	req, err := http.NewRequest(http.MethodGet, "https://"+net.JoinHostPort(podIP, "8082")+"/v1/auth", nil)
	g.Expect(err).NotTo(HaveOccurred())
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := verifierClient(g).Do(req)
	g.Expect(err).NotTo(HaveOccurred(), "the replica's certificate verifies against the published CA")
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}
