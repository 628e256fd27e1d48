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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/secrets"
)

// Issue 12, item 7: the tampering cases of issue 14 (controllers/
// isolation_test.go, acceptance_test.go, hostile_test.go) repeated against
// the manager binary while it is SIGKILLed and restarted at random moments.
// Each case must end as it does with one undisturbed manager, and at every
// sampled moment: nothing adopted, no material left behind a revocation,
// no key re-issued without the Event that says so.

const (
	tamperNamespaces = 2
	tamperMinRounds  = 3
	tamperMaxRounds  = 60 // a cap: rounds (about 1 s each) go on until the kills are done
	tamperMinKills   = 6
	bystandersPerNS  = 8
	bystanderSlots   = 6
	// tamperSettleBound is how long after the last restart every case may
	// take to reach its outcome and every other key to settle.
	tamperSettleBound = 60 * time.Second
	// caseBound is how long one case may take while the manager is being
	// killed (each kill costs a restart and a cache sync).
	caseBound        = 60 * time.Second
	tamperFinalizer  = "backup.example.com/hold"
	tamperEditedNote = "added-by"
)

// The cases: each is a tampering from issue 14 and the outcome the
// single-manager test asserts for it.
const (
	caseLookAlike    = "lookalike"    // look-alike Secret: Keyward's labels and the key ID, foreign material, no owner → Pending/SecretNameConflict, never adopted
	caseEdited       = "edited"       // Secret data edited, an annotation added → re-issued into a new Secret, SecretRecreated
	caseDeleted      = "deleted"      // Secret deleted → re-issued, SecretRecreated
	caseOwnerless    = "ownerless"    // owner reference stripped → taken back, same key
	caseUnlabelled   = "unlabelled"   // managed-by label stripped → healed, same key
	caseStripRevoke  = "strip-revoke" // owner reference and key label stripped, then revoked → Secret destroyed
	caseFinRevoke    = "fin-revoke"   // foreign finalizer, then revoked → Secret emptied and Terminating
	caseFinDelete    = "fin-delete"   // foreign finalizer, then the key deleted → Secret emptied (secret-scrubber)
	casePlanted      = "planted"      // material planted in a Secret that exists before the key → Pending/SecretNameConflict, never issued
	caseAppReplaced  = "replaced"     // Application deleted and created again (replace --force) → old key goes with the old one, never re-tied
	tamperCaseLabelK = "chaos"
	tamperCaseLabelV = "tamper"
)

var tamperCases = []string{caseLookAlike, caseEdited, caseDeleted, caseOwnerless, caseUnlabelled,
	caseStripRevoke, caseFinRevoke, caseFinDelete, casePlanted, caseAppReplaced}

// tamperRun is one case in one round. Key material is kept as
// keyformat.Key, which prints redacted, and compared by hash.
type tamperRun struct {
	kind, ns, name, app string
	round               int
	before              keyformat.Key // the key's material before the tampering
	planted             keyformat.Key // foreign material (look-alike, planted)
	secretUID           types.UID     // the Secret as tampered
	newAppUID           types.UID     // replaced: the Application created again
	fresh               string        // replaced: a key created under the new Application
	tampered            atomic.Bool
	killsAtTamper       int32
	managerUpAtTamper   bool
	killsAtOutcome      int32
	released            bool // a foreign finalizer was removed again
}

func (r *tamperRun) key() types.NamespacedName {
	return types.NamespacedName{Namespace: r.ns, Name: r.name}
}

func tamperKey(ns, name, app string) *keyward.AccessKey {
	return &keyward.AccessKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{tamperCaseLabelK: tamperCaseLabelV}},
		Spec: keyward.AccessKeySpec{Application: app}}
}

// editSecret changes the Secret at name with a fresh read on every conflict
// (the manager may be writing it too) and returns it as written.
func editSecret(ns, name string, edit func(*corev1.Secret)) *corev1.Secret {
	GinkgoHelper()
	var s corev1.Secret
	Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &s); err != nil {
			return err
		}
		edit(&s)
		return env.Client.Update(ctx, &s)
	})).To(Succeed(), "editing Secret %s/%s", ns, name)
	return &s
}

// getSecret returns the Secret at name, nil when there is none.
func getSecret(g Gomega, ns, name string) *corev1.Secret {
	var s corev1.Secret
	err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &s)
	if apierrors.IsNotFound(err) {
		return nil
	}
	g.Expect(err).NotTo(HaveOccurred())
	return &s
}

// getKey returns the key, nil when it is gone.
func getKey(g Gomega, n types.NamespacedName) *keyward.AccessKey {
	var k keyward.AccessKey
	err := env.Client.Get(ctx, n, &k)
	if apierrors.IsNotFound(err) {
		return nil
	}
	g.Expect(err).NotTo(HaveOccurred())
	return &k
}

func readyReason(k *keyward.AccessKey) string {
	if c := meta.FindStatusCondition(k.Status.Conditions, keyward.ConditionReady); c != nil {
		return c.Reason
	}
	return ""
}

// materialHash is the hash of the key material s holds, "" when none.
func materialHash(s *corev1.Secret) string {
	m, ok := secrets.Material(s)
	if !ok {
		return ""
	}
	return keyformat.HashSecret(m.Secret)
}

// holdsMaterial reports whether any entry of s holds a full key with the
// given key ID, whatever its name, labels or owner references.
func holdsMaterial(s *corev1.Secret, keyID string) bool {
	for _, v := range s.Data {
		if m, err := keyformat.Parse(string(v)); err == nil && m.ID == keyID {
			return true
		}
	}
	return false
}

// setup creates what the case needs before its key is issued; for the
// planted case that is the Secret with foreign material, then the key.
func (r *tamperRun) setup() {
	GinkgoHelper()
	switch r.kind {
	case casePlanted:
		var err error
		r.planted, err = keyformat.Generate()
		Expect(err).NotTo(HaveOccurred())
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: r.name,
				Labels: map[string]string{secrets.LabelManagedBy: secrets.ManagedByValue, secrets.LabelAccessKey: r.name}},
			Type: secrets.SecretType,
			Data: map[string][]byte{secrets.DataAccessKey: []byte(r.planted.Plaintext()), secrets.DataKeyID: []byte(r.planted.ID),
				secrets.DataApplication: []byte(r.app)},
		}
		Expect(env.Client.Create(ctx, s)).To(Succeed())
		r.secretUID = s.UID
	case caseAppReplaced:
		Expect(env.Client.Create(ctx, &keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: r.app},
			Spec: keyward.ApplicationSpec{MaxAccessKeys: 5}})).To(Succeed())
	}
	Expect(env.Client.Create(ctx, tamperKey(r.ns, r.name, r.app))).To(Succeed())
}

// issued waits for the key to be Active (tied to its Application, for the
// replaced case) and keeps its material.
func (r *tamperRun) issued(obs *observations) {
	GinkgoHelper()
	if r.kind == casePlanted {
		return
	}
	r.before = activeKey(r.ns, r.name, caseBound)
	obs.record(r.key(), r.before.ID)
	if r.kind == caseAppReplaced {
		var app keyward.Application
		Expect(env.Client.Get(ctx, types.NamespacedName{Namespace: r.ns, Name: r.app}, &app)).To(Succeed())
		Eventually(func(g Gomega) []metav1.OwnerReference {
			return getKey(g, r.key()).OwnerReferences
		}, caseBound, 200*time.Millisecond).Should(ContainElement(HaveField("UID", app.UID)), "%s is tied to its Application", r.key())
	}
}

// tamper does the case's tampering.
func (r *tamperRun) tamper(kills int32, up bool) {
	GinkgoHelper()
	r.killsAtTamper, r.managerUpAtTamper = kills, up
	switch r.kind {
	case caseLookAlike:
		var err error
		r.planted, err = keyformat.Generate()
		Expect(err).NotTo(HaveOccurred())
		s := editSecret(r.ns, r.name, func(s *corev1.Secret) {
			s.OwnerReferences = nil
			s.Data[secrets.DataAccessKey] = []byte(keyformat.Key{ID: r.before.ID, Secret: r.planted.Secret}.Plaintext())
		})
		r.planted.ID = r.before.ID
		r.secretUID = s.UID
	case caseEdited:
		s := editSecret(r.ns, r.name, func(s *corev1.Secret) {
			if s.Annotations == nil {
				s.Annotations = map[string]string{}
			}
			s.Annotations[tamperEditedNote] = "someone"
			s.Data[secrets.DataAccessKey] = []byte("kw_edited_by_hand")
		})
		r.secretUID = s.UID
	case caseDeleted:
		Expect(env.Client.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: r.name}})).To(Succeed())
	case caseOwnerless:
		r.secretUID = editSecret(r.ns, r.name, func(s *corev1.Secret) { s.OwnerReferences = nil }).UID
	case caseUnlabelled:
		r.secretUID = editSecret(r.ns, r.name, func(s *corev1.Secret) { delete(s.Labels, secrets.LabelManagedBy) }).UID
	case caseStripRevoke:
		r.secretUID = editSecret(r.ns, r.name, func(s *corev1.Secret) {
			s.OwnerReferences = nil
			delete(s.Labels, secrets.LabelAccessKey)
		}).UID
		Expect(mergePatch(tamperKey(r.ns, r.name, r.app), `{"spec":{"revoked":true}}`)).To(Succeed())
	case caseFinRevoke:
		r.secretUID = editSecret(r.ns, r.name, func(s *corev1.Secret) { controllerutil.AddFinalizer(s, tamperFinalizer) }).UID
		Expect(mergePatch(tamperKey(r.ns, r.name, r.app), `{"spec":{"revoked":true}}`)).To(Succeed())
	case caseFinDelete:
		r.secretUID = editSecret(r.ns, r.name, func(s *corev1.Secret) { controllerutil.AddFinalizer(s, tamperFinalizer) }).UID
		Expect(env.Client.Delete(ctx, tamperKey(r.ns, r.name, r.app))).To(Succeed())
	case casePlanted:
		// The tampering happened before the key existed (setup).
	case caseAppReplaced:
		app := &keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: r.app}}
		Expect(env.Client.Delete(ctx, app)).To(Succeed())
		again := &keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: r.app},
			Spec: keyward.ApplicationSpec{MaxAccessKeys: 5, Scopes: []keyward.Scope{{Name: "admin", Access: keyward.ReadWrite}}}}
		Eventually(func() error { return env.Client.Create(ctx, again) }, caseBound, 100*time.Millisecond).Should(Succeed())
		r.newAppUID = again.UID
		r.fresh = r.name + "-new"
		Expect(env.Client.Create(ctx, tamperKey(r.ns, r.fresh, r.app))).To(Succeed())
	}
	r.tampered.Store(true)
}

// outcome checks that the case ended as it does with one undisturbed
// manager (controllers/isolation_test.go and acceptance_test.go). The
// verifier is asked about keys too, so it must be up.
func (r *tamperRun) outcome(g Gomega, verifyAddr string, recreated map[types.NamespacedName]int) {
	n := r.key()
	k := getKey(g, n)
	s := getSecret(g, r.ns, r.name)
	switch r.kind {
	case caseLookAlike, casePlanted:
		g.Expect(k).NotTo(BeNil())
		g.Expect(k.Status.Phase).To(Equal(keyward.PhasePending))
		g.Expect(readyReason(k)).To(Equal(keyward.ReasonSecretNameConflict))
		if r.kind == caseLookAlike {
			g.Expect(k.Status.KeyID).To(Equal(r.before.ID), "no material was issued into the look-alike")
		} else {
			g.Expect(k.Status.IssuedAt).To(BeNil(), "never issued")
			g.Expect(k.Status.KeyID).To(BeEmpty(), "never issued")
		}
		g.Expect(s).NotTo(BeNil())
		g.Expect(s.UID).To(Equal(r.secretUID))
		g.Expect(metav1.GetControllerOf(s)).To(BeNil(), "the foreign Secret was not adopted")
		g.Expect(materialHash(s)).To(Equal(keyformat.HashSecret(r.planted.Secret)), "the foreign Secret keeps its own data")
		g.Expect(verifyKey(verifyAddr, r.planted.Plaintext())).To(Equal("unknown"), "the foreign material never verifies")
	case caseEdited, caseDeleted:
		g.Expect(k).NotTo(BeNil())
		g.Expect(k.Status.Phase).To(Equal(keyward.PhaseActive))
		g.Expect(readyReason(k)).To(Equal(keyward.ReasonIssued))
		g.Expect(k.Status.KeyID).NotTo(Equal(r.before.ID), "fresh material")
		g.Expect(s).NotTo(BeNil())
		g.Expect(metav1.IsControlledBy(s, k)).To(BeTrue())
		if r.kind == caseEdited {
			g.Expect(s.UID).NotTo(Equal(r.secretUID), "a new Secret, not the edited one")
			g.Expect(s.Annotations).NotTo(HaveKey(tamperEditedNote))
		}
		m, ok := secrets.Material(s)
		g.Expect(ok).To(BeTrue())
		g.Expect(m.ID).To(Equal(k.Status.KeyID))
		g.Expect(keyformat.HashSecret(m.Secret)).To(Equal(k.Status.SecretHash))
		g.Expect(recreated[n]).To(BeNumerically(">=", 1), "a SecretRecreated Event says so")
		g.Expect(verifyKey(verifyAddr, m.Plaintext())).To(Equal("ok"))
		g.Expect(verifyKey(verifyAddr, r.before.Plaintext())).NotTo(Equal("ok"), "the lost key no longer verifies")
	case caseOwnerless, caseUnlabelled:
		g.Expect(k).NotTo(BeNil())
		g.Expect(k.Status.Phase).To(Equal(keyward.PhaseActive))
		g.Expect(k.Status.KeyID).To(Equal(r.before.ID), "the same key")
		g.Expect(s).NotTo(BeNil())
		g.Expect(s.UID).To(Equal(r.secretUID), "the same Secret, taken back")
		g.Expect(metav1.IsControlledBy(s, k)).To(BeTrue(), "the controller reference is restored")
		g.Expect(s.Labels).To(HaveKeyWithValue(secrets.LabelManagedBy, secrets.ManagedByValue))
		g.Expect(materialHash(s)).To(Equal(k.Status.SecretHash))
		g.Expect(recreated[n]).To(BeZero(), "nothing was re-issued")
		g.Expect(verifyKey(verifyAddr, r.before.Plaintext())).To(Equal("ok"))
	case caseStripRevoke, caseFinRevoke:
		g.Expect(k).NotTo(BeNil())
		g.Expect(k.Status.Phase).To(Equal(keyward.PhaseRevoked))
		g.Expect(k.Status.SecretHash).To(BeEmpty())
		g.Expect(k.Status.PreviousKey).To(BeNil())
		expectSecretDestroyed(g, s, r.kind == caseStripRevoke || r.released)
		g.Expect(verifyKey(verifyAddr, r.before.Plaintext())).To(Equal("revoked"))
	case caseFinDelete:
		g.Expect(k).To(BeNil(), "the key is deleted")
		expectSecretDestroyed(g, s, r.released) // emptied by the secret-scrubber
		g.Expect(verifyKey(verifyAddr, r.before.Plaintext())).To(Equal("unknown"))
	case caseAppReplaced:
		g.Expect(k).To(BeNil(), "the old key goes with the deleted Application")
		g.Expect(s).To(BeNil(), "and its Secret with it")
		fresh := getKey(g, types.NamespacedName{Namespace: r.ns, Name: r.fresh})
		g.Expect(fresh).NotTo(BeNil())
		g.Expect(fresh.Status.Phase).To(Equal(keyward.PhaseActive), "a key created under the new Application is issued")
		g.Expect(verifyKey(verifyAddr, r.before.Plaintext())).NotTo(Equal("ok"), "the old key never verifies for the new Application")
	}
}

// expectSecretDestroyed checks that s is gone when nothing holds it, and
// otherwise (a foreign finalizer keeps it) Terminating with no data left.
func expectSecretDestroyed(g Gomega, s *corev1.Secret, gone bool) {
	if gone {
		g.Expect(s).To(BeNil(), "the Secret is gone")
		return
	}
	g.Expect(s).NotTo(BeNil())
	g.Expect(s.DeletionTimestamp.IsZero()).To(BeFalse(), "the Secret is being deleted")
	g.Expect(s.Data).To(BeEmpty(), "the Terminating Secret keeps no data")
}

// release removes the foreign finalizer once the case has shown the
// Secret emptied and Terminating, so that it goes.
func (r *tamperRun) release() {
	GinkgoHelper()
	if r.kind != caseFinRevoke && r.kind != caseFinDelete {
		return
	}
	Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var s corev1.Secret
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: r.ns, Name: r.name}, &s); err != nil {
			return client.IgnoreNotFound(err)
		}
		if !controllerutil.RemoveFinalizer(&s, tamperFinalizer) {
			return nil
		}
		return env.Client.Update(ctx, &s)
	})).To(Succeed())
	r.released = true
}

// sampledViolations checks what must hold at every moment, not only in the
// end. runs are the cases tampered before keys (one list of the spec's
// keys) was read; the Secrets are read after both. It returns the
// violations found (names, IDs and reasons only, never material).
func sampledViolations(keys []keyward.AccessKey, runs []*tamperRun, verifyAddr string) []string {
	var bad []string
	byName := map[types.NamespacedName]*keyward.AccessKey{}
	issued := map[string]int{}
	for i := range keys {
		k := &keys[i]
		byName[types.NamespacedName{Namespace: k.Namespace, Name: k.Name}] = k
		if k.Spec.Application == "bystanders" && k.Status.IssuedAt != nil {
			issued[k.Namespace]++
		}
	}
	for ns, c := range issued {
		if c > bystanderSlots {
			bad = append(bad, fmt.Sprintf("%s: %d bystander keys issued, limit %d", ns, c, bystanderSlots))
		}
	}
	secretsByNS := map[string][]corev1.Secret{}
	for i := 0; i < tamperNamespaces; i++ {
		ns := fmt.Sprintf("tamper-%d", i)
		var list corev1.SecretList
		if err := env.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return bad // the API server is busy: skip this sample
		}
		secretsByNS[ns] = list.Items
	}
	// A key whose status says it is revoked has no material left in any
	// Secret of its namespace (status is written after the destruction).
	for _, k := range keys {
		if k.Status.Phase != keyward.PhaseRevoked || k.Status.KeyID == "" {
			continue
		}
		for i := range secretsByNS[k.Namespace] {
			if s := &secretsByNS[k.Namespace][i]; holdsMaterial(s, k.Status.KeyID) {
				bad = append(bad, fmt.Sprintf("%s/%s is Revoked but Secret %s still holds key %s", k.Namespace, k.Name, s.Name, k.Status.KeyID))
			}
		}
	}
	for _, r := range runs {
		k := byName[r.key()]
		var s *corev1.Secret
		for i := range secretsByNS[r.ns] {
			if secretsByNS[r.ns][i].UID == r.secretUID {
				s = &secretsByNS[r.ns][i]
			}
		}
		switch r.kind {
		case caseLookAlike, casePlanted:
			if s != nil && metav1.GetControllerOf(s) != nil {
				bad = append(bad, fmt.Sprintf("%s: the foreign Secret was adopted", r.key()))
			}
			if s != nil && materialHash(s) != keyformat.HashSecret(r.planted.Secret) {
				bad = append(bad, fmt.Sprintf("%s: the foreign Secret's data was overwritten", r.key()))
			}
			if k != nil && r.kind == caseLookAlike && k.Status.KeyID != r.before.ID {
				bad = append(bad, fmt.Sprintf("%s: a new key ID %s next to a look-alike", r.key(), k.Status.KeyID))
			}
			if k != nil && r.kind == casePlanted && (k.Status.KeyID != "" || k.Status.IssuedAt != nil) {
				bad = append(bad, fmt.Sprintf("%s: issued (key ID %s) though a foreign Secret holds its name", r.key(), k.Status.KeyID))
			}
			if v := verifyKey(verifyAddr, r.planted.Plaintext()); v == "ok" {
				bad = append(bad, fmt.Sprintf("%s: the foreign material verified", r.key()))
			}
		case caseEdited:
			if s != nil {
				if m, ok := secrets.Material(s); ok {
					bad = append(bad, fmt.Sprintf("%s: key %s was written into the edited Secret", r.key(), m.ID))
				}
			}
		case caseOwnerless, caseUnlabelled:
			if k != nil && k.Status.KeyID != r.before.ID {
				bad = append(bad, fmt.Sprintf("%s: re-issued (key ID %s) though its Secret was intact", r.key(), k.Status.KeyID))
			}
		case caseAppReplaced:
			if k != nil {
				for _, ref := range k.OwnerReferences {
					if ref.UID == r.newAppUID {
						bad = append(bad, fmt.Sprintf("%s: tied to the Application created again", r.key()))
					}
				}
			}
		}
	}
	return bad
}

var _ = Describe("Tampering while the manager is being killed", func() {
	It("ends every tampering case as with one manager: nothing adopted, no material left behind, no silent re-issue", func() {
		rng := rand.New(rand.NewPCG(uint64(GinkgoRandomSeed()), 14))
		inSpec := func(ns string) bool { return strings.HasPrefix(ns, "tamper-") }
		By("two tenants with bystander keys over their limit, and a manager without leader election")
		var nss []string
		for i := 0; i < tamperNamespaces; i++ {
			ns := fmt.Sprintf("tamper-%d", i)
			nss = append(nss, ns)
			tenant(ns, 1000)
			Expect(env.Client.Create(ctx, &keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bystanders"},
				Spec: keyward.ApplicationSpec{MaxAccessKeys: bystanderSlots}})).To(Succeed())
			for b := 0; b < bystandersPerNS; b++ {
				Expect(env.Client.Create(ctx, tamperKey(ns, fmt.Sprintf("bystander-%d", b), "bystanders"))).To(Succeed())
			}
		}
		// The spec asks the verifier about foreign and destroyed keys from
		// one address: its guess limiter (tested in internal/verify) is off.
		m := startManager(freeAddr(), freeAddr(), "--verify-failure-rate=0")
		DeferCleanup(m.stop)
		Eventually(m.ready, time.Minute, 200*time.Millisecond).Should(BeTrue())
		obs := newObservations(client.MatchingLabels{tamperCaseLabelK: tamperCaseLabelV}, 1000, 1000)
		bystandersSettled := func(g Gomega) {
			var keys keyward.AccessKeyList
			g.Expect(env.Client.List(ctx, &keys, client.MatchingLabels{tamperCaseLabelK: tamperCaseLabelV})).To(Succeed())
			phases := map[string]map[keyward.KeyPhase]int{}
			for _, k := range keys.Items {
				if k.Spec.Application != "bystanders" {
					continue
				}
				if phases[k.Namespace] == nil {
					phases[k.Namespace] = map[keyward.KeyPhase]int{}
				}
				phases[k.Namespace][k.Status.Phase]++
			}
			for _, ns := range nss {
				g.Expect(phases[ns]).To(Equal(map[keyward.KeyPhase]int{keyward.PhaseActive: bystanderSlots, keyward.PhaseRejected: bystandersPerNS - bystanderSlots}), ns)
			}
		}
		Eventually(bystandersSettled, time.Minute, 500*time.Millisecond).Should(Succeed())
		for _, k := range obs.sample() {
			obs.record(types.NamespacedName{Namespace: k.Namespace, Name: k.Name}, k.Status.KeyID)
		}

		var (
			mu         sync.Mutex
			runs       []*tamperRun
			kills      atomic.Int32
			roundsDone atomic.Bool
			stopWorker atomic.Bool // set on a violation or when the spec ends
			rounds     int
			workerDone = make(chan struct{})
			violations []string
		)
		By(fmt.Sprintf("rounds of %d cases while the manager is killed at random moments (at least %d kills)", len(tamperCases), tamperMinKills))
		// outcome polls a case's outcome; it gives up at once when the
		// worker is told to stop.
		outcome := func(run *tamperRun) func(g Gomega) {
			return func(g Gomega) {
				if !stopWorker.Load() {
					run.outcome(g, m.verify, recreatedEvents(g))
				}
			}
		}
		go func() {
			defer GinkgoRecover()
			defer close(workerDone)
			defer roundsDone.Store(true)
			for r := 0; r < tamperMaxRounds && (r < tamperMinRounds || kills.Load() < tamperMinKills) && !stopWorker.Load(); r++ {
				var round []*tamperRun
				for i, kind := range tamperCases {
					run := &tamperRun{kind: kind, round: r, ns: nss[(r+i)%len(nss)], name: fmt.Sprintf("%s-r%d", kind, r), app: "app"}
					if kind == caseAppReplaced {
						run.app = fmt.Sprintf("replaced-r%d", r)
					}
					round = append(round, run)
				}
				mu.Lock()
				runs = append(runs, round...)
				mu.Unlock()
				for _, run := range round {
					run.setup()
				}
				for _, run := range round {
					run.issued(obs)
				}
				for _, run := range round {
					run.tamper(kills.Load(), m.ready())
				}
				for _, run := range round {
					Eventually(outcome(run), caseBound, 250*time.Millisecond).Should(Succeed(), "%s (round %d)", run.key(), r)
					run.killsAtOutcome = kills.Load()
					if run.kind == caseFinRevoke || run.kind == caseFinDelete {
						run.release()
						Eventually(outcome(run), caseBound, 250*time.Millisecond).Should(Succeed(), "%s released (round %d)", run.key(), r)
					}
				}
				rounds = r + 1
				fmt.Fprintf(GinkgoWriter, "tamper round %d done, %d kills so far\n", r, kills.Load())
			}
		}()
		// Should this spec fail, its worker stops before the next spec.
		DeferCleanup(func() { stopWorker.Store(true); <-workerDone })
		sample := func() {
			// Only cases tampered before anything is read are checked.
			mu.Lock()
			var tampered []*tamperRun
			for _, run := range runs {
				if run.tampered.Load() {
					tampered = append(tampered, run)
				}
			}
			mu.Unlock()
			keys := obs.sample()
			if keys == nil {
				return
			}
			if bad := sampledViolations(keys, tampered, m.verify); len(bad) > 0 {
				violations = append(violations, bad...)
				stopWorker.Store(true)
			}
		}
		total := killAtRandom(m, rng, sample, func(k int) bool {
			kills.Store(int32(k))
			return !roundsDone.Load()
		})
		Eventually(workerDone, 3*time.Minute).Should(BeClosed())
		Expect(violations).To(BeEmpty(), "at sampled moments")
		Expect(total).To(BeNumerically(">=", 5), "kills while the cases ran")

		By(fmt.Sprintf("within %v of the last restart: every case as with one manager, every other key settled", tamperSettleBound))
		lastRestart := time.Now()
		Eventually(func(g Gomega) {
			recreated := recreatedEvents(g)
			for _, run := range runs {
				run.outcome(g, m.verify, recreated)
			}
			bystandersSettled(g)
		}, tamperSettleBound, time.Second).Should(Succeed())
		AddReportEntry("tamper: settled after the last restart", time.Since(lastRestart).Round(100*time.Millisecond).String())
		sample()
		Expect(violations).To(BeEmpty(), "after settling")

		By("every Active key has exactly one Secret whose key hashes to status.secretHash, and it verifies; no Secret without its key; no silent re-issue")
		out := expectSettled(m.verify, obs, inSpec, func(types.NamespacedName) int { return 0 })

		spanned, down := map[string]int{}, 0
		for _, run := range runs {
			if run.killsAtOutcome > run.killsAtTamper {
				spanned[run.kind]++
			}
			if !run.managerUpAtTamper {
				down++
			}
		}
		var perCase []string
		for _, kind := range tamperCases {
			perCase = append(perCase, fmt.Sprintf("%s %d", kind, spanned[kind]))
		}
		sort.Strings(perCase)
		AddReportEntry("tamper: kills survived", fmt.Sprintf("%d kills (%d restarts) over %d rounds of %d cases (%d runs, %d of them tampered while the manager was down or starting); %d samples, %d violations; runs whose tampering-to-outcome window spanned a kill: %v",
			total, m.restarts, rounds, len(tamperCases), len(runs), down, obs.samples, len(violations), perCase))
		AddReportEntry("tamper: outcome", fmt.Sprintf("%d keys (%v); %d Active keys verified; %d keys re-issued, %d with a SecretRecreated Event",
			out.keys, out.phases, out.activeVerified, out.reissued, out.recreated))
	})
})
