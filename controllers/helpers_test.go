package controllers_test

import (
	"fmt"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/secrets"
)

// seenKeys remembers every full key the tests read from a Secret, so the
// leak check at the end can look for each of them everywhere else.
var seenKeys = struct {
	sync.Mutex
	keys map[string]bool
}{keys: map[string]bool{}}

// newTenant creates a namespace with API keys switched on (unless the
// options say otherwise) and returns its name.
func newTenant(opts ...func(*keyward.TenantSettings)) string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "t-" + rand.String(8)}}
	Expect(k8s.Create(ctx, ns)).To(Succeed())
	ts := &keyward.TenantSettings{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: keyward.TenantSettingsName},
		Spec:       keyward.TenantSettingsSpec{APIKeysEnabled: ptr.To(true), MaxKeysPerOwner: 1000},
	}
	for _, o := range opts {
		o(ts)
	}
	Expect(k8s.Create(ctx, ts)).To(Succeed())
	return ns.Name
}

// newNamespace creates a namespace without TenantSettings.
func newNamespace() string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "n-" + rand.String(8)}}
	Expect(k8s.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

func newApp(ns, name string, opts ...func(*keyward.Application)) *keyward.Application {
	app := &keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	for _, o := range opts {
		o(app)
	}
	Expect(k8s.Create(ctx, app)).To(Succeed())
	return app
}

func newKey(ns, name, app string, opts ...func(*keyward.AccessKey)) *keyward.AccessKey {
	key := buildKey(ns, name, app, opts...)
	Expect(k8s.Create(ctx, key)).To(Succeed())
	return key
}

func buildKey(ns, name, app string, opts ...func(*keyward.AccessKey)) *keyward.AccessKey {
	key := &keyward.AccessKey{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       keyward.AccessKeySpec{Application: app, Owner: "alice"},
	}
	for _, o := range opts {
		o(key)
	}
	return key
}

func get[T client.Object](obj T) T {
	GinkgoHelper()
	Expect(k8s.Get(ctx, client.ObjectKeyFromObject(obj), obj)).To(Succeed())
	return obj
}

// update re-reads obj, applies mutate and writes it as the admin, retrying
// on conflicts with the controllers' own writes.
func update[T client.Object](obj T, mutate func(T)) {
	GinkgoHelper()
	Expect(updateAs(k8s, obj, mutate)).To(Succeed())
}

// updateAs re-reads obj with c, applies mutate and writes it with c,
// retrying on conflicts; it returns the first other outcome.
func updateAs[T client.Object](c client.Client, obj T, mutate func(T)) error {
	return retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		mutate(obj)
		return c.Update(ctx, obj)
	})
}

// eventuallyPhase waits until the key reports phase (and reason, when given)
// and returns it.
func eventuallyPhase(key *keyward.AccessKey, phase keyward.KeyPhase, reason ...string) *keyward.AccessKey {
	GinkgoHelper()
	got := &keyward.AccessKey{}
	Eventually(func(g Gomega) {
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(key), got)).To(Succeed())
		g.Expect(got.Status.Phase).To(Equal(phase), "reason %s: %s", readyReason(got), readyMessage(got))
		if len(reason) > 0 {
			g.Expect(readyReason(got)).To(Equal(reason[0]))
		}
	}, timeout, interval).Should(Succeed())
	return got
}

// consistentlyPhase checks a key stays in phase for a while (used only to
// show that something does NOT happen, after the change that could cause it
// has been observed by the controller).
func consistentlyPhase(key *keyward.AccessKey, phase keyward.KeyPhase, d time.Duration) {
	GinkgoHelper()
	Consistently(func(g Gomega) {
		got := &keyward.AccessKey{}
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(key), got)).To(Succeed())
		g.Expect(got.Status.Phase).To(Equal(phase))
	}, d, interval).Should(Succeed())
}

func readyCondition(k *keyward.AccessKey) *metav1.Condition {
	return meta.FindStatusCondition(k.Status.Conditions, keyward.ConditionReady)
}

func readyReason(k *keyward.AccessKey) string {
	if c := readyCondition(k); c != nil {
		return c.Reason
	}
	return ""
}

func readyMessage(k *keyward.AccessKey) string {
	if c := readyCondition(k); c != nil {
		return c.Message
	}
	return ""
}

// secretOf returns the key's Secret, or nil when there is none.
func secretOf(key *keyward.AccessKey) *corev1.Secret {
	GinkgoHelper()
	s := &corev1.Secret{}
	err := k8s.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: key.SecretName()}, s)
	if apierrors.IsNotFound(err) {
		return nil
	}
	Expect(err).NotTo(HaveOccurred())
	return s
}

// hasSecret reports whether the key's Secret exists. Assertions use it rather
// than the Secret itself, so that a failure never prints key material.
func hasSecret(key *keyward.AccessKey) bool {
	GinkgoHelper()
	return secretOf(key) != nil
}

// fingerprint identifies key material by its ID and hash, so tests compare
// keys without ever printing one.
func fingerprint(m keyformat.Key) string { return m.ID + " " + keyformat.HashSecret(m.Secret) }

// materialOf returns the parsed key held in the key's Secret. It records the
// full key for the leak check and never prints it.
func materialOf(key *keyward.AccessKey) keyformat.Key {
	GinkgoHelper()
	s := secretOf(key)
	Expect(s).NotTo(BeNil(), "secret of %s", key.Name)
	m, ok := secrets.Material(s)
	Expect(ok).To(BeTrue(), "the Secret of %s holds a well-formed key", key.Name)
	seenKeys.Lock()
	seenKeys.keys[m.Plaintext()] = true
	seenKeys.keys[m.Secret] = true
	seenKeys.Unlock()
	return m
}

// eventReasons lists the reasons of the Events recorded for an object.
func eventReasons(obj client.Object) func() []string {
	return func() []string {
		var list corev1.EventList
		if err := k8s.List(ctx, &list, client.InNamespace(obj.GetNamespace())); err != nil {
			return nil
		}
		var reasons []string
		for _, e := range list.Items {
			if e.InvolvedObject.Name == obj.GetName() && e.InvolvedObject.Kind == "AccessKey" {
				reasons = append(reasons, e.Reason)
			}
		}
		return reasons
	}
}

func withMaxKeys(n int32) func(*keyward.Application) {
	return func(a *keyward.Application) { a.Spec.MaxAccessKeys = n }
}

func withScopes(scopes ...keyward.Scope) func(*keyward.Application) {
	return func(a *keyward.Application) { a.Spec.Scopes = scopes }
}

func keyScopes(scopes ...keyward.Scope) func(*keyward.AccessKey) {
	return func(k *keyward.AccessKey) { k.Spec.Scopes = scopes }
}

func ownedBy(owner string) func(*keyward.AccessKey) {
	return func(k *keyward.AccessKey) { k.Spec.Owner = owner }
}

func expiringAt(t time.Time) func(*keyward.AccessKey) {
	return func(k *keyward.AccessKey) { k.Spec.ExpiresAt = keyward.NewTimestamp(t) }
}

func name(prefix string, i int) string { return fmt.Sprintf("%s-%02d", prefix, i) }
