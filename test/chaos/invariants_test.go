//go:build chaos

package chaos

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/secrets"
)

// keyIDs maps each key of a namespace that has one to its status.keyID.
func keyIDs(ns string) map[string]string {
	GinkgoHelper()
	var keys keyward.AccessKeyList
	Expect(env.Client.List(ctx, &keys, client.InNamespace(ns))).To(Succeed())
	ids := map[string]string{}
	for _, k := range keys.Items {
		if k.Status.KeyID != "" {
			ids[k.Name] = k.Status.KeyID
		}
	}
	return ids
}

// tenantState is what expectInvariants found in one namespace.
type tenantState struct {
	phases map[keyward.KeyPhase][]string // key names by phase
	active []keyformat.Key               // the material of every Active key (never printed)
}

// summary counts keys by phase, e.g. "Active 25, Rejected 2".
func (s tenantState) summary() string {
	var out []string
	for p, names := range s.phases {
		out = append(out, fmt.Sprintf("%s %d", p, len(names)))
	}
	sort.Strings(out)
	return fmt.Sprint(out)
}

// expectInvariants waits (up to within) until no key of the namespace is
// Pending or without a phase, then checks what must hold whatever happened
// to the manager and the API server: every Active key has exactly one
// Secret, holding the key status names and hashing to status.secretHash;
// revoked and rejected keys have none; no Keyward Secret exists without
// its AccessKey; no more keys were issued than the Application allows; and
// no key issued before (issuedBefore: name → key ID) has another key ID now
// (nothing re-issued without a rotation).
func expectInvariants(ns string, maxAccessKeys int, issuedBefore map[string]string, within time.Duration) tenantState {
	GinkgoHelper()
	var keys keyward.AccessKeyList
	Eventually(func(g Gomega) {
		g.Expect(env.Client.List(ctx, &keys, client.InNamespace(ns))).To(Succeed())
		for _, k := range keys.Items {
			g.Expect(k.Status.Phase).NotTo(BeElementOf(keyward.PhasePending, keyward.KeyPhase("")), "%s/%s is stuck", ns, k.Name)
		}
	}, within, 250*time.Millisecond).Should(Succeed(), "every key of %s settles", ns)

	var list corev1.SecretList
	Expect(env.Client.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels(secrets.ManagedLabels()))).To(Succeed())
	secretsOfKey := map[string][]corev1.Secret{}
	for _, s := range list.Items {
		secretsOfKey[s.Labels[secrets.LabelAccessKey]] = append(secretsOfKey[s.Labels[secrets.LabelAccessKey]], s)
	}
	st := tenantState{phases: map[keyward.KeyPhase][]string{}}
	exists := map[string]bool{}
	issued := 0
	for _, k := range keys.Items {
		exists[k.Name] = true
		st.phases[k.Status.Phase] = append(st.phases[k.Status.Phase], k.Name)
		if k.Status.IssuedAt != nil {
			issued++
		}
		if id, ok := issuedBefore[k.Name]; ok {
			Expect(k.Status.KeyID).To(Or(Equal(id), BeEmpty()), "%s/%s has a new key ID without a rotation", ns, k.Name)
		}
		own := secretsOfKey[k.Name]
		switch k.Status.Phase {
		case keyward.PhaseActive:
			Expect(own).To(HaveLen(1), "Secrets of Active key %s/%s", ns, k.Name)
			m, ok := secrets.Material(&own[0])
			Expect(ok).To(BeTrue(), "the Secret of %s/%s holds a key", ns, k.Name)
			Expect(m.ID).To(Equal(k.Status.KeyID), "%s/%s: Secret and status name the same key ID", ns, k.Name)
			Expect(keyformat.HashSecret(m.Secret)).To(Equal(k.Status.SecretHash), "%s/%s: the Secret's key hashes to status.secretHash", ns, k.Name)
			st.active = append(st.active, m)
		case keyward.PhaseRevoked:
			Expect(own).To(BeEmpty(), "revoked key %s/%s keeps no Secret", ns, k.Name)
			Expect(k.Status.SecretHash).To(BeEmpty(), "revoked key %s/%s keeps no hash", ns, k.Name)
		case keyward.PhaseRejected:
			Expect(own).To(BeEmpty(), "rejected key %s/%s has no Secret", ns, k.Name)
		}
	}
	for name := range secretsOfKey {
		Expect(exists).To(HaveKey(name), "a Keyward Secret in %s of a missing AccessKey %s", ns, name)
	}
	Expect(issued).To(BeNumerically("<=", maxAccessKeys), "keys issued in %s (%s)", ns, st.summary())
	return st
}

// expectAllVerify waits until every key verifies ("ok") through the
// verifier at addr; it names failing keys by ID only.
func expectAllVerify(addr string, keys []keyformat.Key, within time.Duration) {
	GinkgoHelper()
	Eventually(func() []string {
		var bad []string
		for _, k := range keys {
			if r := verifyKey(addr, k.Plaintext()); r != "ok" {
				bad = append(bad, k.ID+":"+r)
			}
		}
		return bad
	}, within, time.Second).Should(BeEmpty(), "keys that do not verify at %s (key ID:reason)", addr)
}

// What the specs that kill the manager share: the kill schedule, the
// observations sampled between kills, and the invariants checked once the
// keys have settled after the last restart.

// killAtRandom kills m with SIGKILL at a random moment 1.5–4.5 s after each
// (re)start — during start-up, cache sync, issuance or idling — and restarts
// it at once, as a kubelet would, as long as more(kills so far) says so;
// between kills it calls sample every 700 ms. It returns the number of kills.
func killAtRandom(m *managerProc, rng *rand.Rand, sample func(), more func(kills int) bool) int {
	GinkgoHelper()
	sampleTick := time.NewTicker(700 * time.Millisecond)
	defer sampleTick.Stop()
	kills := 0
	for more(kills) {
		killAt := time.NewTimer(1500*time.Millisecond + time.Duration(rng.IntN(3000))*time.Millisecond)
	wait:
		for {
			select {
			case <-killAt.C:
				break wait
			case <-sampleTick.C:
				sample()
			}
		}
		m.kill()
		m.restart()
		kills++
	}
	return kills
}

// observations made while the manager is being killed.
type observations struct {
	// selector picks the spec's AccessKeys; maxPerApp and maxPerOwner are
	// the limits every sample checks.
	selector               client.MatchingLabels
	maxPerApp, maxPerOwner int

	mu sync.Mutex
	// keyIDs seen in status.keyID, per key.
	keyIDs  map[types.NamespacedName]map[string]bool
	samples int
}

func newObservations(selector client.MatchingLabels, maxPerApp, maxPerOwner int) *observations {
	return &observations{selector: selector, maxPerApp: maxPerApp, maxPerOwner: maxPerOwner,
		keyIDs: map[types.NamespacedName]map[string]bool{}}
}

// record notes a key ID the key had (seen outside a sample).
func (o *observations) record(n types.NamespacedName, keyID string) {
	if keyID == "" {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.keyIDs[n] == nil {
		o.keyIDs[n] = map[string]bool{}
	}
	o.keyIDs[n][keyID] = true
}

// sample reads every AccessKey once (one consistent list) and checks the
// limits at that moment; it records each key's current key ID. It returns
// the list it read (nil when the API server could not answer: a sample is
// then skipped, not failed).
func (o *observations) sample() []keyward.AccessKey {
	GinkgoHelper()
	var keys keyward.AccessKeyList
	if err := env.Client.List(ctx, &keys, o.selector); err != nil {
		return nil
	}
	perApp, perOwner := map[string]int{}, map[string]int{}
	holders := map[string][]string{} // for the failure message: names, phases, creation and issue times
	for _, k := range keys.Items {
		if k.Status.IssuedAt != nil { // issued keys hold their slot for good (revoked ones too)
			perApp[k.Namespace+"/"+k.Spec.Application]++
			perOwner[k.Namespace+"/"+k.Spec.Owner]++
			desc := fmt.Sprintf("%s %s created %s issued %s", k.Name, k.Status.Phase, k.CreationTimestamp.Format(time.StampMilli), k.Status.IssuedAt.Format(time.StampMilli))
			holders[k.Namespace+"/"+k.Spec.Application] = append(holders[k.Namespace+"/"+k.Spec.Application], desc)
			holders[k.Namespace+"/"+k.Spec.Owner] = append(holders[k.Namespace+"/"+k.Spec.Owner], desc)
		}
		o.record(types.NamespacedName{Namespace: k.Namespace, Name: k.Name}, k.Status.KeyID)
	}
	o.mu.Lock()
	o.samples++
	o.mu.Unlock()
	for app, n := range perApp {
		Expect(n).To(BeNumerically("<=", o.maxPerApp), "application %s holds %d issued keys at a sampled moment:\n%s", app, n, strings.Join(holders[app], "\n"))
	}
	for owner, n := range perOwner {
		Expect(n).To(BeNumerically("<=", o.maxPerOwner), "owner %s holds %d issued keys at a sampled moment:\n%s", owner, n, strings.Join(holders[owner], "\n"))
	}
	return keys.Items
}

// recreatedEvents counts the SecretRecreated Events per key (an Event
// series counts each of its occurrences).
func recreatedEvents(g Gomega) map[types.NamespacedName]int {
	var events eventsv1.EventList
	g.Expect(env.Client.List(ctx, &events)).To(Succeed())
	recreated := map[types.NamespacedName]int{}
	for _, e := range events.Items {
		if e.Reason != keyward.EventSecretRecreated {
			continue
		}
		n := types.NamespacedName{Namespace: e.Regarding.Namespace, Name: e.Regarding.Name}
		c := 1
		if e.Series != nil && int(e.Series.Count) > c {
			c = int(e.Series.Count)
		}
		recreated[n] += c
	}
	return recreated
}

// settled sums up what expectSettled found.
type settled struct {
	keys           int
	phases         []string // "Active 12", ...
	activeVerified int
	reissued       int // keys that had more than one key ID
	recreated      int // keys with a SecretRecreated Event
}

// expectSettled checks the invariants that must hold once the spec's keys
// have settled (the caller waits for that): every Active key has exactly
// one Secret whose key hashes to status.secretHash, and it verifies through
// the verifier at verifyAddr; a revoked or rejected key keeps no Secret; no
// Keyward Secret in the spec's namespaces (inSpec) exists without its
// AccessKey; and no key had a new key ID without a rotation request
// (rotations) or a SecretRecreated Event. Key material is compared by hash
// and never printed.
func expectSettled(verifyAddr string, obs *observations, inSpec func(ns string) bool, rotations func(types.NamespacedName) int) settled {
	GinkgoHelper()
	var keys keyward.AccessKeyList
	Expect(env.Client.List(ctx, &keys, obs.selector)).To(Succeed())
	var secretList corev1.SecretList
	Expect(env.Client.List(ctx, &secretList, client.MatchingLabels(secrets.ManagedLabels()))).To(Succeed())
	byKey := map[types.NamespacedName][]corev1.Secret{}
	for _, s := range secretList.Items {
		if !inSpec(s.Namespace) {
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
		obs.record(n, k.Status.KeyID)
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
	expectAllVerify(verifyAddr, activeMaterial, 30*time.Second)

	By("no Keyward Secret without its AccessKey")
	for n := range byKey {
		Expect(keyByName[n]).NotTo(BeNil(), "a Keyward Secret of a missing AccessKey %s", n)
	}

	By("no re-issue without a rotation request or a SecretRecreated Event")
	recreated := recreatedEvents(Default)
	out := settled{keys: len(keys.Items), activeVerified: len(activeMaterial)}
	obs.mu.Lock()
	for n, ids := range obs.keyIDs {
		requested := rotations(n)
		Expect(len(ids)-1).To(BeNumerically("<=", requested+recreated[n]),
			"%s had %d key IDs with %d rotations requested and %d SecretRecreated Events", n, len(ids), requested, recreated[n])
		if len(ids) > 1 {
			out.reissued++
		}
	}
	obs.mu.Unlock()
	for n := range recreated {
		if keyByName[n] != nil {
			out.recreated++
		}
	}
	for p, c := range phases {
		out.phases = append(out.phases, fmt.Sprintf("%s %d", p, c))
	}
	sort.Strings(out.phases)
	return out
}
