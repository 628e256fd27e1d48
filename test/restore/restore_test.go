package restore

import (
	"os"
	"os/exec"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/secrets"
	"keyward.dev/keyward/test/harness/testenv"
)

var _ = Describe("Restore without re-keying", Ordered, func() {
	var (
		env   *testenv.Env
		mgr   *manager
		admin client.Client
		// etcdDir is the first control plane's etcd data, kept for the snapshot.
		etcdDir string
		// The keys restored into the new namespace, and what their clients hold.
		restored []*keyward.AccessKey
		material = map[string]held{}
	)

	BeforeAll(func() {
		etcdDir = filepath.Join(GinkgoT().TempDir(), "etcd")
		var err error
		env, err = testenv.StartWith(testenv.Options{EtcdDataDir: etcdDir})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { Expect(env.Stop()).To(Succeed()) })
		admin = env.Client
		mgr = startManager(env)
		DeferCleanup(func() { mgr.stop() })
	})

	It("restores a namespace object by object, as Velero does: the admin's import brings back the same keys, a look-alike is never adopted", func() {
		src, dst := "shop-"+rand.String(6), "shop-restored-"+rand.String(6)
		for _, ns := range []string{src, dst} {
			Expect(admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		}
		Expect(admin.Create(ctx, &keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: src, Name: "portal"},
			Spec: keyward.ApplicationSpec{MaxAccessKeys: 10}})).To(Succeed())
		keys := []*keyward.AccessKey{
			{ObjectMeta: metav1.ObjectMeta{Namespace: src, Name: "web"}, Spec: keyward.AccessKeySpec{Application: "portal"}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: src, Name: "env"}, Spec: keyward.AccessKeySpec{Application: "portal",
				SecretTemplate: &keyward.SecretTemplate{DataKeys: &keyward.SecretDataKeys{AccessKey: "API_KEY"}}}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: src, Name: "named"}, Spec: keyward.AccessKeySpec{Application: "portal",
				SecretTemplate: &keyward.SecretTemplate{Name: "portal-credentials"}}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: src, Name: "late"}, Spec: keyward.AccessKeySpec{Application: "portal"}},
		}
		before := map[string]held{}
		for _, k := range keys {
			Expect(admin.Create(ctx, k)).To(Succeed())
		}
		for _, k := range keys {
			Eventually(phaseOf(admin, k), timeout, interval).Should(Equal("Active/Issued"))
			before[k.Name] = materialOf(admin, k)
			Expect(mgr.verifies(before[k.Name].plaintext)()).To(Equal("valid"))
		}

		By("backing up the namespace as Velero does: objects without status, UIDs or owner references")
		var backupKeys keyward.AccessKeyList
		Expect(admin.List(ctx, &backupKeys, client.InNamespace(src))).To(Succeed())
		var backupSecrets corev1.SecretList
		Expect(admin.List(ctx, &backupSecrets, client.InNamespace(src), client.MatchingLabels(secrets.ManagedLabels()))).To(Succeed())
		Expect(backupKeys.Items).To(HaveLen(len(keys)))
		Expect(backupSecrets.Items).To(HaveLen(len(keys)))
		// What the admin reads from the backup's AccessKeys to name the material.
		recorded := map[string][2]string{}
		for _, k := range backupKeys.Items {
			recorded[k.Name] = [2]string{k.Status.KeyID, k.Status.SecretHash}
		}
		restoreMeta := func(m metav1.ObjectMeta) metav1.ObjectMeta {
			return metav1.ObjectMeta{Namespace: dst, Name: m.Name, Labels: m.Labels, Annotations: m.Annotations}
		}

		By("losing the namespace: its keys and Secrets are gone")
		Expect(admin.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: src}})).To(Succeed())
		Eventually(func() bool {
			err := admin.Get(ctx, client.ObjectKey{Name: src}, &corev1.Namespace{})
			return apierrors.IsNotFound(err)
		}, 2*time.Minute, interval).Should(BeTrue(), "namespace %s is never deleted", src)
		for _, k := range keys {
			Expect(mgr.verifies(before[k.Name].plaintext)()).NotTo(Equal("valid"))
		}

		By("restoring the Application and the Secrets, except the one restored late")
		Expect(admin.Create(ctx, &keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: dst, Name: "portal"},
			Spec: keyward.ApplicationSpec{MaxAccessKeys: 10}})).To(Succeed())
		var lateSecret *corev1.Secret
		for _, s := range backupSecrets.Items {
			r := &corev1.Secret{ObjectMeta: restoreMeta(s.ObjectMeta), Type: s.Type, Data: s.Data}
			if s.Labels[secrets.LabelAccessKey] == "late" {
				lateSecret = r
				continue
			}
			Expect(admin.Create(ctx, r)).To(Succeed())
		}

		By("the roles: a developer, and a tenant admin who holds the import verb")
		for user, role := range map[string]string{"dana": "keyward-developer", "ada": "keyward-tenant-admin"} {
			Expect(admin.Create(ctx, &rbacv1.RoleBinding{
				ObjectMeta: metav1.ObjectMeta{Namespace: dst, Name: user},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
				Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: user}},
			})).To(Succeed())
		}
		dana, err := env.ClientAs("dana")
		Expect(err).NotTo(HaveOccurred())
		ada, err := env.ClientAs("ada")
		Expect(err).NotTo(HaveOccurred())

		restoredKey := func(name string) *keyward.AccessKey {
			for _, k := range backupKeys.Items {
				if k.Name == name {
					return &keyward.AccessKey{ObjectMeta: restoreMeta(k.ObjectMeta), Spec: *k.Spec.DeepCopy()}
				}
			}
			Fail("no key " + name + " in the backup")
			return nil
		}
		importing := func(k *keyward.AccessKey) *keyward.AccessKey {
			if k.Annotations == nil {
				k.Annotations = map[string]string{}
			}
			k.Annotations[keyward.ImportKeyIDAnnotation] = recorded[k.Name][0]
			k.Annotations[keyward.ImportSecretHashAnnotation] = recorded[k.Name][1]
			return k
		}

		By("restoring key web as it was backed up: its Secret is a look-alike to it, never adopted and never overwritten")
		web := restoredKey("web")
		web.Spec.Owner = "dana"
		Expect(admin.Create(ctx, web)).To(Succeed())
		Eventually(phaseOf(admin, web), timeout, interval).Should(Equal("Pending/" + keyward.ReasonSecretNameConflict))
		var webSecret corev1.Secret
		Expect(admin.Get(ctx, client.ObjectKey{Namespace: dst, Name: "web"}, &webSecret)).To(Succeed())
		Expect(metav1.GetControllerOf(&webSecret)).To(BeNil())
		Expect(mgr.verifies(before["web"].plaintext)()).NotTo(Equal("valid"))

		By("the developer who owns it cannot import it: the API server refuses without the import verb")
		err = dana.Patch(ctx, importing(web.DeepCopy()), client.MergeFrom(web))
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "got %v", err)
		Expect(err.Error()).To(ContainSubstring("needs the import verb"))
		err = dana.Create(ctx, &keyward.AccessKey{ObjectMeta: metav1.ObjectMeta{Namespace: dst, Name: "web-copy",
			Annotations: map[string]string{keyward.ImportKeyIDAnnotation: recorded["web"][0], keyward.ImportSecretHashAnnotation: recorded["web"][1]}},
			Spec: keyward.AccessKeySpec{Application: "portal", SecretTemplate: &keyward.SecretTemplate{Name: "web"}}})
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "got %v", err)

		By("the tenant admin imports it: the key takes back the same material")
		Expect(admin.Get(ctx, client.ObjectKeyFromObject(web), web)).To(Succeed())
		Expect(ada.Patch(ctx, importing(web.DeepCopy()), client.MergeFrom(web))).To(Succeed())
		Eventually(phaseOf(admin, web), timeout, interval).Should(Equal("Active/Issued"))
		restored = append(restored, web)

		By("restoring the other keys with the import annotations, one of them before its Secret")
		for _, name := range []string{"env", "named", "late"} {
			k := importing(restoredKey(name))
			Expect(ada.Create(ctx, k)).To(Succeed())
			restored = append(restored, k)
		}
		late := restored[len(restored)-1]
		Eventually(phaseOf(admin, late), timeout, interval).Should(Equal("Pending/" + keyward.ReasonImportPending))
		Expect(admin.Get(ctx, client.ObjectKeyFromObject(late), late)).To(Succeed())
		Expect(late.Status.KeyID).To(BeEmpty(), "a key waiting for its import must not be issued anew")
		Expect(admin.Create(ctx, lateSecret)).To(Succeed())

		for _, k := range restored {
			Eventually(phaseOf(admin, k), timeout, interval).Should(Equal("Active/Issued"), "key %s", k.Name)
			material[k.Name] = materialOf(admin, k)
			Expect(material[k.Name]).To(sameMaterial(before[k.Name]), "key %s", k.Name)
			Expect(mgr.verifies(material[k.Name].plaintext)()).To(Equal("valid"), "key %s", k.Name)
			var s corev1.Secret
			Expect(admin.Get(ctx, client.ObjectKey{Namespace: dst, Name: k.SecretName()}, &s)).To(Succeed())
			Expect(metav1.IsControlledBy(&s, get(admin, k))).To(BeTrue(), "the Secret of %s is adopted", k.Name)
			Eventually(issuances(admin, k), timeout, interval).Should(Equal(map[string]int32{keyward.EventImported: 1}), "key %s", k.Name)
		}
		Eventually(eventNotes(admin, web, keyward.EventImported), timeout, interval).Should(ConsistOf(HaveSuffix("; by ada")))

		By("a look-alike Secret holding other material under an imported key's name is never adopted")
		other, err := keyformat.Generate()
		Expect(err).NotTo(HaveOccurred())
		forgedSecret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: dst, Name: "forged", Labels: secrets.ManagedLabels()},
			Type: secrets.SecretType, Data: map[string][]byte{secrets.DataAccessKey: []byte(other.Plaintext()),
				secrets.DataKeyID: []byte(before["web"].keyID), secrets.DataApplication: []byte("portal")}}
		Expect(admin.Create(ctx, forgedSecret)).To(Succeed())
		forged := &keyward.AccessKey{ObjectMeta: metav1.ObjectMeta{Namespace: dst, Name: "forged", Annotations: map[string]string{
			keyward.ImportKeyIDAnnotation: other.ID, keyward.ImportSecretHashAnnotation: recorded["web"][1]}},
			Spec: keyward.AccessKeySpec{Application: "portal"}}
		Expect(ada.Create(ctx, forged)).To(Succeed())
		Eventually(phaseOf(admin, forged), timeout, interval).Should(Equal("Pending/" + keyward.ReasonImportPending))
		Expect(admin.Get(ctx, client.ObjectKeyFromObject(forgedSecret), forgedSecret)).To(Succeed())
		Expect(metav1.GetControllerOf(forgedSecret)).To(BeNil())
		Expect(mgr.verifies(other.Plaintext())()).NotTo(Equal("valid"))

		Expect(testenv.FindKeyMaterial(ctx, admin, plaintexts(material), managerLog.String())).To(Succeed())
	})

	It("restores the control plane's etcd from a snapshot: every key verifies with the same material, none is re-issued", func() {
		Expect(restored).NotTo(BeEmpty(), "the previous spec restores the keys this one snapshots")
		etcdctl, etcdutl := etcdTool(env, "etcdctl"), etcdTool(env, "etcdutl")
		before := map[string]map[string]int32{}
		for _, k := range restored {
			before[k.Name], _ = issuances(admin, k)()
		}

		By("taking a snapshot of the running etcd with etcdctl")
		snapshot := filepath.Join(GinkgoT().TempDir(), "keyward.db")
		run(etcdctl, "--endpoints="+env.EtcdURL(), "snapshot", "save", snapshot)

		By("stopping the manager and the control plane")
		mgr.stop()
		Expect(env.Stop()).To(Succeed())

		By("restoring the snapshot into a new data directory with etcdutl")
		restoredDir := filepath.Join(GinkgoT().TempDir(), "etcd-restored")
		// A revision far past the snapshot's, all of it compacted: any
		// client still watching lists again instead of missing changes.
		run(etcdutl, "snapshot", "restore", snapshot, "--data-dir="+restoredDir,
			"--bump-revision=1000000000", "--mark-compacted")

		By("starting the control plane and the manager on the restored data")
		var err error
		env, err = testenv.StartWith(testenv.Options{EtcdDataDir: restoredDir})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { Expect(env.Stop()).To(Succeed()) })
		admin = env.Client
		mgr = startManager(env)
		DeferCleanup(func() { mgr.stop() })

		// A key created after the restart is issued once the manager has
		// worked through the keys it found, which it queued first.
		marker := &keyward.AccessKey{ObjectMeta: metav1.ObjectMeta{Namespace: restored[0].Namespace, Name: "after-restore"},
			Spec: keyward.AccessKeySpec{Application: "portal"}}
		Expect(admin.Create(ctx, marker)).To(Succeed())
		Eventually(phaseOf(admin, marker), timeout, interval).Should(Equal("Active/Issued"))

		for _, k := range restored {
			Expect(phaseOf(admin, k)()).To(Equal("Active/Issued"), "key %s", k.Name)
			Expect(materialOf(admin, k)).To(sameMaterial(material[k.Name]), "key %s", k.Name)
			Eventually(mgr.verifies(material[k.Name].plaintext), timeout, interval).Should(Equal("valid"), "key %s", k.Name)
			Expect(issuances(admin, k)()).To(Equal(before[k.Name]), "key %s got new material", k.Name)
		}
		Expect(testenv.FindKeyMaterial(ctx, admin, plaintexts(material), managerLog.String())).To(Succeed())
	})
})

// etcdTool returns the path of etcdctl or etcdutl beside the control
// plane's binaries (make controlplane builds them).
func etcdTool(env *testenv.Env, name string) string {
	GinkgoHelper()
	path := filepath.Join(env.BinDir(), name)
	_, err := os.Stat(path)
	Expect(err).NotTo(HaveOccurred(), "%s is missing from %s: `make controlplane` builds it from the Go module proxy (hack/controlplane/etcdtools)", name, env.BinDir())
	return path
}

func run(name string, args ...string) {
	GinkgoHelper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	out, err := cmd.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "%s %v:\n%s", filepath.Base(name), args, out)
	GinkgoWriter.Printf("%s %v:\n%s\n", filepath.Base(name), args, out)
}

func get(c client.Client, k *keyward.AccessKey) *keyward.AccessKey {
	GinkgoHelper()
	var key keyward.AccessKey
	Expect(c.Get(ctx, client.ObjectKeyFromObject(k), &key)).To(Succeed())
	return &key
}

func eventNotes(c client.Client, k *keyward.AccessKey, reason string) func() []string {
	return func() []string {
		var list corev1.EventList
		if err := c.List(ctx, &list, client.InNamespace(k.Namespace)); err != nil {
			return nil
		}
		var notes []string
		for _, e := range list.Items {
			if e.InvolvedObject.Kind == "AccessKey" && e.InvolvedObject.Name == k.Name && e.Reason == reason {
				notes = append(notes, e.Message)
			}
		}
		return notes
	}
}

// plaintexts are the keys and their secret parts, for the leak check.
func plaintexts(m map[string]held) map[string]bool {
	out := map[string]bool{}
	for _, h := range m {
		k, err := keyformat.Parse(h.plaintext)
		Expect(err).NotTo(HaveOccurred())
		out[h.plaintext], out[k.Secret] = true, true
	}
	return out
}
