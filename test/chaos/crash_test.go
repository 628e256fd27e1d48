//go:build chaos

package chaos

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
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
)

const (
	namespaces      = 4
	appsPerNS       = 2
	keysPerApp      = 25 // 200 keys, more than the slots
	maxAccessKeys   = 20
	maxKeysPerOwner = 15
	ownersPerNS     = 3
	kills           = 12
	operations      = 300
	// pendingBound is how long after the last restart every key must have
	// left Pending and every rotation request must have been acted on.
	pendingBound = 90 * time.Second
)

var _ = Describe("Crash anywhere: SIGKILL at random moments during a burst", func() {
	It("loses nothing, issues nothing twice, overshoots no limit and orphans no Secret", func() {
		rng := rand.New(rand.NewPCG(uint64(GinkgoRandomSeed()), 12))
		By("tenants, applications, and a manager without leader election")
		var nss []string
		for i := 0; i < namespaces; i++ {
			ns := fmt.Sprintf("crash-%d", i)
			nss = append(nss, ns)
			Expect(env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
			Expect(env.Client.Create(ctx, &keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: keyward.TenantSettingsName},
				Spec: keyward.TenantSettingsSpec{APIKeysEnabled: ptr.To(true), MaxKeysPerOwner: maxKeysPerOwner}})).To(Succeed())
			for a := 0; a < appsPerNS; a++ {
				Expect(env.Client.Create(ctx, &keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("app-%d", a)},
					Spec: keyward.ApplicationSpec{MaxAccessKeys: maxAccessKeys}})).To(Succeed())
			}
		}
		m := startManager(freeAddr(), freeAddr())
		DeferCleanup(m.stop)
		Eventually(m.ready, time.Minute, 200*time.Millisecond).Should(BeTrue())

		var all []types.NamespacedName
		for _, ns := range nss {
			for a := 0; a < appsPerNS; a++ {
				for k := 0; k < keysPerApp; k++ {
					all = append(all, types.NamespacedName{Namespace: ns, Name: fmt.Sprintf("app-%d-key-%02d", a, k)})
				}
			}
		}
		rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })

		By(fmt.Sprintf("creating %d keys and running %d operations while the manager is killed %d times", len(all), operations, kills))
		var (
			rotations  sync.Map // NamespacedName → *atomic.Int32: rotations requested
			revoked    sync.Map // NamespacedName → true
			opErrors   atomic.Int32
			opsDone    atomic.Int32
			workStop   atomic.Bool
			workerDone = make(chan struct{})
		)
		go func() {
			defer GinkgoRecover()
			defer close(workerDone)
			wr := rand.New(rand.NewPCG(uint64(GinkgoRandomSeed()), 34))
			for i, n := range all {
				if workStop.Load() {
					return
				}
				var a, k int
				_, _ = fmt.Sscanf(n.Name, "app-%d-key-%d", &a, &k)
				key := &keyward.AccessKey{ObjectMeta: metav1.ObjectMeta{Namespace: n.Namespace, Name: n.Name, Labels: map[string]string{"chaos": "crash"}},
					Spec: keyward.AccessKeySpec{Application: fmt.Sprintf("app-%d", a), Owner: fmt.Sprintf("owner-%d", i%ownersPerNS)}}
				if err := env.Client.Create(ctx, key); err != nil {
					opErrors.Add(1)
				}
			}
			deadline := time.Now().Add(2 * time.Minute)
			pace := time.NewTicker(120 * time.Millisecond)
			defer pace.Stop()
			for i := 0; i < operations && !workStop.Load() && time.Now().Before(deadline); i++ {
				<-pace.C
				n := all[wr.IntN(len(all))]
				if _, gone := revoked.Load(n); gone {
					continue
				}
				var patch string
				switch p := wr.IntN(100); {
				case p < 35:
					c, _ := rotations.LoadOrStore(n, new(atomic.Int32))
					v := c.(*atomic.Int32).Add(1)
					patch = fmt.Sprintf(`{"metadata":{"annotations":{%q:"r%d"}}}`, keyward.RotateAnnotation, v)
				case p < 50:
					patch = `{"spec":{"state":"Inactive"}}`
				case p < 65:
					patch = `{"spec":{"state":"Active"}}`
				case p < 88:
					patch = fmt.Sprintf(`{"spec":{"expiresAt":%q}}`, time.Now().Add(time.Duration(24+wr.IntN(1000))*time.Hour).UTC().Format(time.RFC3339))
				default:
					revoked.Store(n, true)
					patch = `{"spec":{"revoked":true}}`
				}
				obj := &keyward.AccessKey{ObjectMeta: metav1.ObjectMeta{Namespace: n.Namespace, Name: n.Name}}
				if err := env.Client.Patch(ctx, obj, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
					opErrors.Add(1)
				}
				opsDone.Add(1)
			}
		}()

		// Should the spec fail while the manager is being killed, the driver
		// must stop with it rather than patch keys under the next spec.
		DeferCleanup(func() {
			workStop.Store(true)
			Eventually(workerDone, 3*time.Minute).Should(BeClosed())
		})
		obs := newObservations(client.MatchingLabels{"chaos": "crash"}, maxAccessKeys, maxKeysPerOwner)
		killAtRandom(m, rng, func() { obs.sample() }, func(k int) bool { return k < kills })
		workStop.Store(true)
		Eventually(workerDone, 3*time.Minute).Should(BeClosed())
		AddReportEntry("crash: kills survived", fmt.Sprintf("%d kills (%d restarts), %d operations, %d samples of the limits during the kills, %d API errors of the driver",
			m.killed, m.restarts, opsDone.Load(), obs.samples, opErrors.Load()))
		Expect(m.killed).To(BeNumerically(">=", 10))
		Expect(opsDone.Load()).To(BeNumerically(">=", operations/3), "the burst ran while the manager was being killed")

		By(fmt.Sprintf("within %v of the last restart: nothing Pending, every rotation acted on", pendingBound))
		lastRestart := time.Now()
		Eventually(func(g Gomega) {
			var keys keyward.AccessKeyList
			g.Expect(env.Client.List(ctx, &keys, client.MatchingLabels{"chaos": "crash"})).To(Succeed())
			g.Expect(keys.Items).To(HaveLen(len(all)))
			for _, k := range keys.Items {
				g.Expect(k.Status.Phase).NotTo(BeElementOf(keyward.PhasePending, keyward.KeyPhase("")), "%s/%s", k.Namespace, k.Name)
				if k.Status.Phase == keyward.PhaseActive || k.Status.Phase == keyward.PhaseInactive {
					want := k.Annotations[keyward.RotateAnnotation]
					if want != "" {
						g.Expect(k.Status.Rotation).NotTo(BeNil(), "%s/%s", k.Namespace, k.Name)
						g.Expect(k.Status.Rotation.LastRequest).To(Equal(want), "%s/%s rotation", k.Namespace, k.Name)
					}
				}
				if k.Spec.Revoked {
					g.Expect(k.Status.Phase).To(Equal(keyward.PhaseRevoked))
				} else if k.Status.Phase != keyward.PhaseRejected {
					wantPhase := keyward.PhaseActive
					if k.Spec.State == keyward.StateInactive {
						wantPhase = keyward.PhaseInactive
					}
					g.Expect(k.Status.Phase).To(Equal(wantPhase), "%s/%s", k.Namespace, k.Name)
				}
			}
		}, pendingBound, time.Second).Should(Succeed())
		AddReportEntry("crash: settled after the last restart", time.Since(lastRestart).Round(100*time.Millisecond).String())
		obs.sample()

		By("every Active key has exactly one Secret whose key hashes to status.secretHash, and it verifies")
		out := expectSettled(m.verify, obs, func(ns string) bool { return strings.HasPrefix(ns, "crash-") }, func(n types.NamespacedName) int {
			if c, ok := rotations.Load(n); ok {
				return int(c.(*atomic.Int32).Load())
			}
			return 0
		})
		AddReportEntry("crash: outcome", fmt.Sprintf("%d keys (%v); %d Active keys verified; %d keys rotated or re-issued; %d keys with a SecretRecreated Event",
			out.keys, out.phases, out.activeVerified, out.reissued, out.recreated))
	})
})
