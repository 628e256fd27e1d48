package controllers_test

import (
	"encoding/json"
	"strings"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/secrets"
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

	var keys keyward.AccessKeyList
	Expect(k8s.List(ctx, &keys)).To(Succeed())
	var statuses strings.Builder
	for _, k := range keys.Items {
		b, err := json.Marshal(k.Status)
		Expect(err).NotTo(HaveOccurred())
		statuses.Write(b)
	}
	var events corev1.EventList
	Expect(k8s.List(ctx, &events)).To(Succeed())
	var notes strings.Builder
	for _, e := range events.Items {
		notes.WriteString(e.Message + "\n" + e.Reason + "\n" + e.Action + "\n")
	}
	Expect(events.Items).NotTo(BeEmpty())
	logs := managerLog.String()
	Expect(logs).NotTo(BeEmpty())

	for material := range seenKeys.keys {
		Expect(strings.Contains(statuses.String(), material)).To(BeFalse(), "key material found in an AccessKey status")
		Expect(strings.Contains(notes.String(), material)).To(BeFalse(), "key material found in an Event")
		Expect(strings.Contains(logs, material)).To(BeFalse(), "key material found in the manager's log")
	}
}
