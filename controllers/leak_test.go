package controllers_test

import (
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"keyward.dev/keyward/internal/secrets"
	"keyward.dev/keyward/test/harness/testenv"
)

// expectNoKeyMaterialLeaked runs after every spec: every key the suite ever
// saw in a Secret (plus every key still in one) must appear nowhere else —
// not in an AccessKey's status, not in an Event, not in the manager's log.
// A failure names the place, never the key.
func expectNoKeyMaterialLeaked() {
	var list corev1.SecretList
	Expect(k8s.List(ctx, &list, client.MatchingLabels(secrets.ManagedLabels()))).To(Succeed())
	for i := range list.Items {
		if m, ok := secrets.Material(&list.Items[i]); ok {
			seenKeys.keys[m.Plaintext()] = true
			seenKeys.keys[m.Secret] = true
		}
	}
	Expect(len(seenKeys.keys)).To(BeNumerically(">", 20), "the suite issued keys to look for")

	var events corev1.EventList
	Expect(k8s.List(ctx, &events)).To(Succeed())
	Expect(events.Items).NotTo(BeEmpty(), "Events to look in")
	logs := managerLog.String()
	Expect(logs).NotTo(BeEmpty(), "a log to look in")
	Expect(testenv.FindKeyMaterial(ctx, k8s, seenKeys.keys, logs)).To(Succeed())
}
