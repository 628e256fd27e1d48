//go:build chaos

package chaos

import (
	"fmt"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/secrets"
)

func mergePatch(obj client.Object, patch string) error {
	return env.Client.Patch(ctx, obj, client.RawPatch(types.MergePatchType, []byte(patch)))
}

// secretsOf lists the Keyward Secrets of the named keys in a namespace.
func secretsOf(ns string, names map[string]bool) []string {
	GinkgoHelper()
	var list corev1.SecretList
	Expect(env.Client.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels(secrets.ManagedLabels()))).To(Succeed())
	var out []string
	for _, s := range list.Items {
		if names[s.Labels[secrets.LabelAccessKey]] {
			out = append(out, s.Name)
		}
	}
	return out
}

var _ = Describe("Races, many rounds", Ordered, func() {
	const ns = "races"
	var m *managerProc
	BeforeAll(func() {
		tenant(ns, 500)
		m = startManager(freeAddr(), freeAddr())
		DeferCleanup(m.stop)
		Eventually(m.ready, time.Minute, 200*time.Millisecond).Should(BeTrue())
	})

	It("rotate and revoke of one key at the same time: revoked wins, no material survives", func() {
		const rounds = 10
		for r := 0; r < rounds; r++ {
			name := fmt.Sprintf("rr-%02d", r)
			Expect(env.Client.Create(ctx, newKey(ns, name))).To(Succeed())
			old := activeKey(ns, name, time.Minute)
			var wg sync.WaitGroup
			errs := make([]error, 2)
			wg.Add(2)
			go func() {
				defer wg.Done()
				errs[0] = mergePatch(newKey(ns, name), fmt.Sprintf(`{"metadata":{"annotations":{%q:"race"}}}`, keyward.RotateAnnotation))
			}()
			go func() { defer wg.Done(); errs[1] = mergePatch(newKey(ns, name), `{"spec":{"revoked":true}}`) }()
			wg.Wait()
			Expect(errs).To(HaveEach(BeNil()))
			Eventually(func(g Gomega) {
				var k keyward.AccessKey
				g.Expect(env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &k)).To(Succeed())
				g.Expect(k.Status.Phase).To(Equal(keyward.PhaseRevoked))
				g.Expect(k.Status.SecretHash).To(BeEmpty())
				g.Expect(k.Status.PreviousKey).To(BeNil())
				g.Expect(secretsOf(ns, map[string]bool{name: true})).To(BeEmpty())
			}, time.Minute, 200*time.Millisecond).Should(Succeed(), "round %d", r)
			// Revoked at once, or rotated first (then the old ID is no
			// longer the key's: unknown) — never valid.
			Expect(verifyKey(m.verify, old.Plaintext())).To(BeElementOf("revoked", "unknown"))
		}
		AddReportEntry("races: rotate+revoke rounds", fmt.Sprintf("%d rounds, revoked won every time, no Secret or hash left", rounds))
	})

	It("an Application deleted while its keys are being issued orphans nothing", func() {
		const rounds, keys = 3, 6
		untied := 0
		for r := 0; r < rounds; r++ {
			app := fmt.Sprintf("gone-%d", r)
			Expect(env.Client.Create(ctx, &keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: app},
				Spec: keyward.ApplicationSpec{MaxAccessKeys: keys}})).To(Succeed())
			names := map[string]bool{}
			for i := 0; i < keys; i++ {
				k := newKey(ns, fmt.Sprintf("%s-%d", app, i))
				k.Spec.Application = app
				Expect(env.Client.Create(ctx, k)).To(Succeed())
				names[k.Name] = true
			}
			if r > 0 { // round 0 deletes at once; later rounds once some keys are issued
				activeKey(ns, app+"-0", time.Minute)
			}
			Expect(env.Client.Delete(ctx, &keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: app}})).To(Succeed())
			// Keys tied to the Application (owner reference) or issued go
			// with it, Secrets with them. A key deleted-for before the
			// owner-reference controller tied it has no owner reference for
			// the garbage collector: it stays, never issued, Pending
			// (ApplicationNotFound) and without material, like any key
			// naming an Application that does not exist.
			Eventually(func(g Gomega) {
				var list keyward.AccessKeyList
				g.Expect(env.Client.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
				for _, k := range list.Items {
					if !names[k.Name] {
						continue
					}
					g.Expect(k.Status.IssuedAt).To(BeNil(), "issued key %s outlived its Application", k.Name)
					g.Expect(k.OwnerReferences).To(BeEmpty(), "key %s tied to its Application outlived it", k.Name)
					g.Expect(k.Status.Phase).To(Equal(keyward.PhasePending), "key %s", k.Name)
					g.Expect(k.Status.SecretHash).To(BeEmpty())
				}
				g.Expect(secretsOf(ns, names)).To(BeEmpty(), "Secrets outlived their Application")
			}, time.Minute, 500*time.Millisecond).Should(Succeed(), "round %d", r)
			var list keyward.AccessKeyList
			Expect(env.Client.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
			for _, k := range list.Items {
				if names[k.Name] {
					untied++
				}
			}
		}
		AddReportEntry("races: application deletion rounds", fmt.Sprintf("%d rounds of %d keys: no Secret and no issued or tied key left; %d never-tied keys stay Pending without material",
			rounds, keys, untied))
	})

	It("TenantSettings switched off and on during a burst: every key ends Active with one Secret", func() {
		const keys, toggles = 20, 6
		ts := &keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: keyward.TenantSettingsName}}
		Expect(env.Client.Create(ctx, newKey(ns, "switch-steady"))).To(Succeed())
		steady := activeKey(ns, "switch-steady", time.Minute)
		for i := 0; i < keys; i++ {
			Expect(env.Client.Create(ctx, newKey(ns, fmt.Sprintf("burst-%02d", i)))).To(Succeed())
			if i%(keys/toggles) == 0 {
				Expect(mergePatch(ts, fmt.Sprintf(`{"spec":{"apiKeysEnabled":%t}}`, (i/(keys/toggles))%2 == 1))).To(Succeed())
			}
		}
		Expect(mergePatch(ts, `{"spec":{"apiKeysEnabled":false}}`)).To(Succeed())
		// While off, an issued key is kept but does not verify.
		Eventually(func() string { return verifyKey(m.verify, steady.Plaintext()) }, 10*time.Second, 200*time.Millisecond).Should(Equal("tenant_disabled"))
		Expect(mergePatch(ts, `{"spec":{"apiKeysEnabled":true}}`)).To(Succeed())
		for i := 0; i < keys; i++ {
			k := activeKey(ns, fmt.Sprintf("burst-%02d", i), time.Minute)
			Eventually(func() string { return verifyKey(m.verify, k.Plaintext()) }, 10*time.Second, 200*time.Millisecond).Should(Equal("ok"))
		}
		Expect(verifyKey(m.verify, steady.Plaintext())).To(Equal("ok"), "switching on restores the same key")
		AddReportEntry("races: tenant switch", fmt.Sprintf("%d keys created while the switch flipped %d times; all Active, one Secret each, verifying", keys, toggles+2))
	})
})
