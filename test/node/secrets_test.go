//go:build node

package node_test

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/secrets"
	"keyward.dev/keyward/test/harness/testenv"
)

// envVar is the entry the suite's keys are renamed to with
// secretTemplate.dataKeys, so that envFrom sets it directly.
const envVar = "API_KEY"

var _ = Describe("Pods mounting a key's Secret", func() {
	var ns string
	BeforeEach(func() {
		ns = newTenant()
		Expect(k8s.Create(ctx, &keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shop"},
			Spec: keyward.ApplicationSpec{Group: "shop", Team: "payments", MaxAccessKeys: 10}})).To(Succeed())
	})

	It("verify with the key they mounted, as a volume and through envFrom with dataKeys", func() {
		key := newKey(ns, "k1", nil)
		fp := fingerprint(material(key))
		pod := runProbe(ns, "probe", key)
		for _, source := range []string{"file", "env"} {
			Eventually(func(g Gomega) {
				r, ok := reports.last(pod, source)
				g.Expect(ok).To(BeTrue(), "no report from the Pod's %s yet", source)
				g.Expect(r.Fingerprint).To(Equal(fp), "the Pod's %s holds the key", source)
				g.Expect(r.Status).To(Equal(200))
			}, 2*timeout, interval).Should(Succeed())
		}
	})

	It("keep verifying through a rotation with the default grace, and the refreshed volume holds the new key", func() {
		// No grace period on the key or its tenant: the default
		// (DefaultRotationGracePeriod) covers the kubelet's refresh.
		key := newKey(ns, "k2", nil)
		oldFP := fingerprint(material(key))
		pod := runProbe(ns, "probe", key)
		Eventually(func(g Gomega) {
			r, ok := reports.last(pod, "file")
			g.Expect(ok).To(BeTrue())
			g.Expect(r.Status).To(Equal(200))
		}, 2*timeout, interval).Should(Succeed())

		rotatedAt := time.Now()
		update(key, func(k *keyward.AccessKey) {
			if k.Annotations == nil {
				k.Annotations = map[string]string{}
			}
			k.Annotations[keyward.RotateAnnotation] = "r1"
		})
		var newFP string
		Eventually(func(g Gomega) {
			cur := &keyward.AccessKey{}
			g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(key), cur)).To(Succeed())
			g.Expect(cur.Status.PreviousKey).NotTo(BeNil())
			newFP = fingerprint(material(cur))
			g.Expect(newFP).NotTo(Equal(oldFP))
		}, timeout, interval).Should(Succeed())

		// The kubelet refreshes the volume within about syncFrequency.
		var refreshedAt time.Time
		Eventually(func(g Gomega) {
			r, ok := reports.last(pod, "file")
			g.Expect(ok).To(BeTrue())
			g.Expect(r.Fingerprint).To(Equal(newFP), "the mounted file holds the new key")
			g.Expect(r.Status).To(Equal(200))
			refreshedAt = r.At
		}, 6*syncFrequency+timeout, interval).Should(Succeed())
		GinkgoWriter.Printf("the mounted file held the new key %s after the rotation\n", refreshedAt.Sub(rotatedAt).Round(time.Second))

		// Every call since the rotation succeeded: the old key from the
		// file until the refresh, the new one after, and the old one from
		// the environment (set at start) throughout.
		for _, source := range []string{"file", "env"} {
			got := reports.since(pod, source, rotatedAt)
			Expect(got).NotTo(BeEmpty())
			for _, r := range got {
				Expect(r.Status).To(Equal(200), "a %s call at %s after the rotation", source, r.At.Sub(rotatedAt).Round(time.Millisecond))
				Expect(r.Fingerprint).To(BeElementOf(oldFP, newFP))
			}
		}
		env, _ := reports.last(pod, "env")
		Expect(env.Fingerprint).To(Equal(oldFP), "envFrom keeps the key the container started with")
	})

	It("are refused once the key is revoked", func() {
		key := newKey(ns, "k3", nil)
		fp := fingerprint(material(key))
		pod := runProbe(ns, "probe", key)
		Eventually(func(g Gomega) {
			r, ok := reports.last(pod, "env")
			g.Expect(ok).To(BeTrue())
			g.Expect(r.Fingerprint).To(Equal(fp))
			g.Expect(r.Status).To(Equal(200))
		}, 2*timeout, interval).Should(Succeed())

		update(key, func(k *keyward.AccessKey) { k.Spec.Revoked = true })
		revokedAt := time.Now()
		var refusedAt time.Time
		Eventually(func(g Gomega) {
			r, ok := reports.last(pod, "env")
			g.Expect(ok).To(BeTrue())
			g.Expect(r.At).To(BeTemporally(">", revokedAt))
			g.Expect(r.Status).To(Equal(401), "the Pod's call with the key from its environment is refused")
			refusedAt = r.At
		}, timeout, interval).Should(Succeed())
		// From then on no call succeeds. The file's key is refused too, or
		// is gone from the file if the kubelet refreshed the volume while
		// the Secret was emptied (revocation empties, then deletes it; the
		// kubelet keeps a deleted Secret's last content, so the refused key
		// may stay in the file).
		Eventually(func() []report { return reports.since(pod, "file", refusedAt) }, timeout, interval).ShouldNot(BeEmpty())
		Consistently(func(g Gomega) {
			for _, source := range []string{"env", "file"} {
				for _, r := range reports.since(pod, source, refusedAt) {
					g.Expect(r.Status).NotTo(Equal(200), "a %s call after the revocation", source)
					if r.Status == 0 {
						g.Expect(r.Error).To(Equal("reading the key file failed"), "a %s call after the revocation", source)
					} else {
						g.Expect(r.Status).To(Equal(401), "a %s call after the revocation", source)
					}
				}
			}
		}, 3*time.Second, interval).Should(Succeed())
	})
})

func newTenant() string {
	GinkgoHelper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "n-" + rand.String(8)}}
	Expect(k8s.Create(ctx, ns)).To(Succeed())
	Expect(k8s.Create(ctx, &keyward.TenantSettings{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: keyward.TenantSettingsName},
		Spec:       keyward.TenantSettingsSpec{APIKeysEnabled: ptr.To(true), MaxKeysPerOwner: 100},
	})).To(Succeed())
	// No service-account controller runs: the Pods' ServiceAccount is made
	// here (the Pods mount no token).
	Expect(k8s.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "default"}})).To(Succeed())
	return ns.Name
}

func newKey(ns, name string, mutate func(*keyward.AccessKey)) *keyward.AccessKey {
	GinkgoHelper()
	k := &keyward.AccessKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: keyward.AccessKeySpec{Application: "shop", Owner: "alice",
			SecretTemplate: &keyward.SecretTemplate{DataKeys: &keyward.SecretDataKeys{AccessKey: envVar}}}}
	if mutate != nil {
		mutate(k)
	}
	Expect(k8s.Create(ctx, k)).To(Succeed())
	Eventually(func(g Gomega) {
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(k), k)).To(Succeed())
		g.Expect(k.Status.Phase).To(Equal(keyward.PhaseActive))
	}, timeout, interval).Should(Succeed())
	return k
}

func update(obj *keyward.AccessKey, mutate func(*keyward.AccessKey)) {
	GinkgoHelper()
	Expect(retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		mutate(obj)
		return k8s.Update(ctx, obj)
	})).To(Succeed())
}

// seenKeys are the keys the suite read; the leak check looks for each.
var seenKeys = struct {
	sync.Mutex
	keys map[string]bool
}{keys: map[string]bool{}}

// material reads the key from its Secret (the entry dataKeys names), once
// the Secret holds the key the AccessKey's status describes. Never printed.
func material(k *keyward.AccessKey) string {
	GinkgoHelper()
	var m keyformat.Key
	Eventually(func(g Gomega) {
		var s corev1.Secret
		g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: k.Namespace, Name: k.SecretName()}, &s)).To(Succeed())
		g.Expect(s.Data).To(HaveKey(envVar), "dataKeys renamed the entry")
		var ok bool
		m, ok = secrets.Material(&s)
		g.Expect(ok).To(BeTrue())
		cur := &keyward.AccessKey{}
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(k), cur)).To(Succeed())
		g.Expect(m.ID).To(Equal(cur.Status.KeyID))
	}, timeout, interval).Should(Succeed())
	seenKeys.Lock()
	seenKeys.keys[m.Plaintext()] = true
	seenKeys.keys[m.Secret] = true
	seenKeys.Unlock()
	return m.Plaintext()
}

// fingerprint is keyprobe's: the first 16 hex digits of the key's SHA-256.
func fingerprint(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:8])
}

// runProbe starts keyprobe on the node with the key's Secret as a volume
// and through envFrom, and waits for it to run. It returns the name the
// Pod reports under.
func runProbe(ns, name string, key *keyward.AccessKey) string {
	GinkgoHelper()
	id := ns + "/" + name
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{
			NodeName:                      nd.Name, // no scheduler runs
			HostNetwork:                   true,
			AutomountServiceAccountToken:  ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			RestartPolicy:                 corev1.RestartPolicyAlways,
			Containers: []corev1.Container{{
				Name: "probe", Image: probeImage, ImagePullPolicy: corev1.PullNever,
				Env: []corev1.EnvVar{
					{Name: "KEY_FILE", Value: "/etc/keyward/" + envVar},
					{Name: "KEY_ENV", Value: envVar},
					{Name: "VERIFY_URL", Value: verifyURL},
					{Name: "REPORT_URL", Value: reportURL},
					{Name: "POD_NAME", Value: id},
					{Name: "INTERVAL", Value: "300ms"},
				},
				EnvFrom:      []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: key.SecretName()}}}},
				VolumeMounts: []corev1.VolumeMount{{Name: "key", MountPath: "/etc/keyward", ReadOnly: true}},
				SecurityContext: &corev1.SecurityContext{
					RunAsUser: ptr.To[int64](65532), RunAsNonRoot: ptr.To(true),
					AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
				},
			}},
			Volumes: []corev1.Volume{{Name: "key", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
				SecretName: key.SecretName(), DefaultMode: ptr.To[int32](0o444)}}}},
		},
	}
	Expect(k8s.Create(ctx, pod)).To(Succeed())
	DeferCleanup(func() {
		_ = k8s.Delete(ctx, pod, client.GracePeriodSeconds(0))
	})
	Eventually(func(g Gomega) {
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pod), pod)).To(Succeed())
		g.Expect(pod.Status.Phase).To(Equal(corev1.PodRunning), "Pod %s: %s", id, podState(pod))
	}, 2*timeout, interval).Should(Succeed())
	return id
}

func podState(p *corev1.Pod) string {
	s := string(p.Status.Phase)
	for _, c := range p.Status.ContainerStatuses {
		if w := c.State.Waiting; w != nil {
			s += " " + w.Reason + ": " + w.Message
		}
		if t := c.State.Terminated; t != nil {
			s += " terminated " + t.Reason + " exit " + strconv.Itoa(int(t.ExitCode))
		}
	}
	return s
}

func expectNoKeyMaterialLeaked() {
	GinkgoHelper()
	seenKeys.Lock()
	defer seenKeys.Unlock()
	Expect(testenv.FindKeyMaterial(ctx, k8s, seenKeys.keys, managerLog.String())).To(Succeed())
}
