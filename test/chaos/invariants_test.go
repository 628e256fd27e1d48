//go:build chaos

package chaos

import (
	"fmt"
	"sort"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
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
