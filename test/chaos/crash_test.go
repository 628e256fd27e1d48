//go:build chaos

package chaos

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/secrets"
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

// observations made while the manager is being killed.
type observations struct {
	mu sync.Mutex
	// keyIDs seen in status.keyID, per key.
	keyIDs  map[types.NamespacedName]map[string]bool
	samples int
}

// sample reads every AccessKey once (one consistent list) and checks the
// limits at that moment; it records each key's current key ID.
func (o *observations) sample() {
	GinkgoHelper()
	var keys keyward.AccessKeyList
	if err := env.Client.List(ctx, &keys, client.MatchingLabels{"chaos": "crash"}); err != nil {
		return // the API server may be busy; a sample is skipped, not failed
	}
	perApp, perOwner := map[string]int{}, map[string]int{}
	holders := map[string][]string{} // for the failure message: names, phases, creation and issue times
	o.mu.Lock()
	defer o.mu.Unlock()
	o.samples++
	for _, k := range keys.Items {
		if k.Status.IssuedAt != nil { // issued keys hold their slot for good (revoked ones too)
			perApp[k.Namespace+"/"+k.Spec.Application]++
			perOwner[k.Namespace+"/"+k.Spec.Owner]++
			issued := "never"
			if k.Status.IssuedAt != nil {
				issued = k.Status.IssuedAt.Format(time.StampMilli)
			}
			desc := fmt.Sprintf("%s %s created %s issued %s", k.Name, k.Status.Phase, k.CreationTimestamp.Format(time.StampMilli), issued)
			holders[k.Namespace+"/"+k.Spec.Application] = append(holders[k.Namespace+"/"+k.Spec.Application], desc)
			holders[k.Namespace+"/"+k.Spec.Owner] = append(holders[k.Namespace+"/"+k.Spec.Owner], desc)
		}
		if k.Status.KeyID != "" {
			n := types.NamespacedName{Namespace: k.Namespace, Name: k.Name}
			if o.keyIDs[n] == nil {
				o.keyIDs[n] = map[string]bool{}
			}
			o.keyIDs[n][k.Status.KeyID] = true
		}
	}
	for app, n := range perApp {
		Expect(n).To(BeNumerically("<=", maxAccessKeys), "application %s holds %d issued keys at a sampled moment:\n%s", app, n, strings.Join(holders[app], "\n"))
	}
	for owner, n := range perOwner {
		Expect(n).To(BeNumerically("<=", maxKeysPerOwner), "owner %s holds %d issued keys at a sampled moment:\n%s", owner, n, strings.Join(holders[owner], "\n"))
	}
}

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

		obs := &observations{keyIDs: map[types.NamespacedName]map[string]bool{}}
		sampleTick := time.NewTicker(700 * time.Millisecond)
		defer sampleTick.Stop()
		for i := 0; i < kills; i++ {
			// The kill schedule: a random moment 1.5–4.5 s after the last
			// restart (during start-up, cache sync, issuance or idling).
			killAt := time.NewTimer(1500*time.Millisecond + time.Duration(rng.IntN(3000))*time.Millisecond)
		wait:
			for {
				select {
				case <-killAt.C:
					break wait
				case <-sampleTick.C:
					obs.sample()
				}
			}
			m.kill()
			m.restart()
		}
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
		var keys keyward.AccessKeyList
		Expect(env.Client.List(ctx, &keys, client.MatchingLabels{"chaos": "crash"})).To(Succeed())
		var secretList corev1.SecretList
		Expect(env.Client.List(ctx, &secretList, client.MatchingLabels(secrets.ManagedLabels()))).To(Succeed())
		byKey := map[types.NamespacedName][]corev1.Secret{}
		for _, s := range secretList.Items {
			if !strings.HasPrefix(s.Namespace, "crash-") {
				continue // other specs' tenants
			}
			n := types.NamespacedName{Namespace: s.Namespace, Name: s.Labels[secrets.LabelAccessKey]}
			byKey[n] = append(byKey[n], s)
		}
		keyByName := map[types.NamespacedName]*keyward.AccessKey{}
		phases := map[keyward.KeyPhase]int{}
		var activeMaterial []keyformat.Key
		for i := range keys.Items {
			k := &keys.Items[i]
			n := types.NamespacedName{Namespace: k.Namespace, Name: k.Name}
			keyByName[n] = k
			phases[k.Status.Phase]++
			switch k.Status.Phase {
			case keyward.PhaseActive:
				Expect(byKey[n]).To(HaveLen(1), "Secrets of Active key %s", n)
				mat, ok := secrets.Material(&byKey[n][0])
				Expect(ok).To(BeTrue(), "the Secret of %s holds a key", n)
				Expect(mat.ID).To(Equal(k.Status.KeyID), "%s: Secret and status name the same key ID", n)
				Expect(keyformat.HashSecret(mat.Secret)).To(Equal(k.Status.SecretHash), "%s: the Secret's key hashes to status.secretHash", n)
				activeMaterial = append(activeMaterial, mat)
			case keyward.PhaseRevoked:
				Expect(byKey[n]).To(BeEmpty(), "revoked key %s keeps no Secret", n)
				Expect(k.Status.SecretHash).To(BeEmpty(), "revoked key %s keeps no hash", n)
			case keyward.PhaseRejected:
				Expect(byKey[n]).To(BeEmpty(), "rejected key %s has no Secret", n)
			}
		}
		Expect(activeMaterial).NotTo(BeEmpty())
		Eventually(func() []string {
			var bad []string
			for _, mat := range activeMaterial {
				if r := verifyKey(m.verify, mat.Plaintext()); r != "ok" {
					bad = append(bad, mat.ID+":"+r)
				}
			}
			return bad
		}, 30*time.Second, time.Second).Should(BeEmpty(), "Active keys that do not verify (key ID:reason)")

		By("no Keyward Secret without its AccessKey")
		for n := range byKey {
			Expect(keyByName[n]).NotTo(BeNil(), "a Keyward Secret of a missing AccessKey %s", n)
		}

		By("no re-issue without a rotation request or a SecretRecreated Event")
		var events eventsv1.EventList
		Expect(env.Client.List(ctx, &events)).To(Succeed())
		recreated := map[types.NamespacedName]int{}
		for _, e := range events.Items {
			n := types.NamespacedName{Namespace: e.Regarding.Namespace, Name: e.Regarding.Name}
			if e.Reason == "SecretRecreated" {
				recreated[n]++
			}
		}
		reissued := 0
		obs.mu.Lock()
		for n, ids := range obs.keyIDs {
			var requested int32
			if c, ok := rotations.Load(n); ok {
				requested = c.(*atomic.Int32).Load()
			}
			Expect(len(ids)-1).To(BeNumerically("<=", int(requested)+recreated[n]),
				"%s had %d key IDs with %d rotations requested and %d SecretRecreated Events", n, len(ids), requested, recreated[n])
			if len(ids) > 1 {
				reissued++
			}
		}
		obs.mu.Unlock()
		var phaseList []string
		for p, c := range phases {
			phaseList = append(phaseList, fmt.Sprintf("%s %d", p, c))
		}
		sort.Strings(phaseList)
		AddReportEntry("crash: outcome", fmt.Sprintf("%d keys (%v); %d Active keys verified; %d keys rotated; %d SecretRecreated Events",
			len(keys.Items), phaseList, len(activeMaterial), reissued, len(recreated)))
	})
})
