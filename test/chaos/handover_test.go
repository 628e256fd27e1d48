//go:build chaos

package chaos

import (
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/secrets"
)

// tenant creates a namespace with keys switched on and one Application.
func tenant(ns string, maxKeys int32) {
	GinkgoHelper()
	Expect(env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
	Expect(env.Client.Create(ctx, &keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: keyward.TenantSettingsName},
		Spec: keyward.TenantSettingsSpec{APIKeysEnabled: ptr.To(true), MaxKeysPerOwner: 1000}})).To(Succeed())
	Expect(env.Client.Create(ctx, &keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app"},
		Spec: keyward.ApplicationSpec{MaxAccessKeys: maxKeys}})).To(Succeed())
}

func newKey(ns, name string) *keyward.AccessKey {
	return &keyward.AccessKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: keyward.AccessKeySpec{Application: "app"}}
}

// activeKey waits for a key to be Active and returns its material from its
// Secret (never printed).
func activeKey(ns, name string, within time.Duration) keyformat.Key {
	GinkgoHelper()
	var k keyward.AccessKey
	Eventually(func() keyward.KeyPhase {
		_ = env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &k)
		return k.Status.Phase
	}, within, 200*time.Millisecond).Should(Equal(keyward.PhaseActive), "%s/%s", ns, name)
	return secretOf(&k)
}

// secretOf checks that an issued key has exactly one Secret, holding the
// key status describes, and returns its material.
func secretOf(k *keyward.AccessKey) keyformat.Key {
	GinkgoHelper()
	var list corev1.SecretList
	Expect(env.Client.List(ctx, &list, client.InNamespace(k.Namespace), client.MatchingLabels{secrets.LabelAccessKey: k.Name})).To(Succeed())
	Expect(list.Items).To(HaveLen(1), "Secrets of %s/%s", k.Namespace, k.Name)
	m, ok := secrets.Material(&list.Items[0])
	Expect(ok).To(BeTrue())
	Expect(m.ID).To(Equal(k.Status.KeyID))
	Expect(keyformat.HashSecret(m.Secret)).To(Equal(k.Status.SecretHash))
	return m
}

// leads reports whether a manager has acquired the leader lease (its log says so).
func (m *managerProc) leads() bool {
	out := strings.ToLower(string(m.session.Err.Contents()) + string(m.session.Out.Contents()))
	return strings.Contains(out, "successfully acquired lease")
}

var _ = Describe("Leader hand-over: two managers, the leader killed mid-burst", func() {
	It("hands over within the lease time and the non-leader's verifier answers throughout", func() {
		const (
			ns     = "handover"
			rounds = 2
			burst  = 20
			// controller-runtime's defaults: lease 15 s, renew deadline
			// 10 s, retry period 2 s (jittered up to 4.4 s). A killed
			// leader never releases its lease, so the standby waits out
			// the lease from when it last saw it renewed (up to one retry
			// late), then acquires on its next retry: at most about
			// 15 + 4.4 + 4.4 s; measured 16–19 s on 2 loaded cores.
			takeoverBound = 30 * time.Second
		)
		tenant(ns, 200)
		le := []string{"--leader-elect", "--leader-election-namespace=default"}
		a := startManager(freeAddr(), freeAddr(), le...)
		DeferCleanup(a.stop)
		b := startManager(freeAddr(), freeAddr(), le...)
		DeferCleanup(b.stop)
		Eventually(func() bool { return a.ready() && b.ready() }, time.Minute, 200*time.Millisecond).Should(BeTrue())
		Eventually(func() bool { return a.leads() || b.leads() }, time.Minute, 200*time.Millisecond).Should(BeTrue())

		Expect(env.Client.Create(ctx, newKey(ns, "steady"))).To(Succeed())
		steady := activeKey(ns, "steady", time.Minute)

		created := 0
		var takeovers []string
		for round := 0; round < rounds; round++ {
			leader, standby := a, b
			if b.leads() && !a.leads() {
				leader, standby = b, a
			}
			By(fmt.Sprintf("round %d: a burst of %d keys, the leader killed in the middle of it", round+1, burst))
			for i := 0; i < burst/2; i++ {
				Expect(env.Client.Create(ctx, newKey(ns, fmt.Sprintf("r%d-%02d", round, i)))).To(Succeed())
			}
			leader.kill()
			killedAt := time.Now()
			for i := burst / 2; i < burst; i++ {
				Expect(env.Client.Create(ctx, newKey(ns, fmt.Sprintf("r%d-%02d", round, i)))).To(Succeed())
			}
			created += burst

			// The standby's verifier answers the steady key throughout,
			// while it is not (yet) the leader.
			var answers, wrong atomic.Int32
			Eventually(func() bool {
				answers.Add(1)
				if r := verifyKey(standby.verify, steady.Plaintext()); r != "ok" {
					wrong.Add(1)
				}
				return standby.leads()
			}, takeoverBound, 100*time.Millisecond).Should(BeTrue(), "the standby took over within %v", takeoverBound)
			took := time.Since(killedAt)
			takeovers = append(takeovers, took.Round(100*time.Millisecond).String())
			Expect(wrong.Load()).To(BeZero(), "the non-leader's verifier refused a good key %d of %d times", wrong.Load(), answers.Load())

			By("every key of the burst issued by the new leader, one Secret each")
			for i := 0; i < burst; i++ {
				activeKey(ns, fmt.Sprintf("r%d-%02d", round, i), time.Minute)
			}
			Expect(verifyKey(standby.verify, steady.Plaintext())).To(Equal("ok"))
			// The killed leader comes back as the standby (its log starts afresh).
			leader.restart()
			Eventually(leader.ready, time.Minute, 200*time.Millisecond).Should(BeTrue())
			Expect(leader.leads()).To(BeFalse())
		}
		AddReportEntry("handover: hand-overs", fmt.Sprintf("%d hand-overs, takeover after the kill: %v (bound %v); %d keys issued across them",
			len(takeovers), takeovers, takeoverBound, created))
	})
})
