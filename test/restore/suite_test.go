// Package restore proves that a restore keeps every key valid without
// re-keying a client (docs/backup-restore.md): the control plane's etcd
// snapshotted with etcdctl and restored with etcdutl, and a namespace
// restored object by object, as Velero does, into another namespace, where
// an admin holding the import verb brings the key material back.
package restore

import (
	"context"
	"net/netip"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/controllers"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/secrets"
	"keyward.dev/keyward/internal/serve"
	"keyward.dev/keyward/internal/verify"
	"keyward.dev/keyward/test/harness/testenv"
)

const (
	timeout  = 30 * time.Second
	interval = 100 * time.Millisecond
)

var (
	ctx        = context.Background()
	managerLog *testenv.LogBuffer
)

func TestRestore(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Restore suite: etcd snapshot and restore, and a namespace restored object by object")
}

var _ = BeforeSuite(func() {
	log, buf := testenv.CaptureLogs(GinkgoWriter)
	managerLog = buf
	ctrl.SetLogger(log)
})

// manager is Keyward's manager (controllers and verifier) running on one
// control plane, in this process.
type manager struct {
	verifier *verify.Verifier
	stop     func()
}

// startManager runs the controllers and the verifier against env, with
// API keys on by default, and waits until the verifier's caches are synced.
func startManager(env *testenv.Env) *manager {
	GinkgoHelper()
	o := env.ManagerOptions(ctrl.Log)
	// Each control plane of the suite gets a manager of its own.
	o.Controller = config.Controller{SkipNameValidation: ptr.To(true)}
	m, err := ctrl.NewManager(env.Config, o)
	Expect(err).NotTo(HaveOccurred())
	mctx, cancel := context.WithCancel(ctx)
	opts := controllers.DefaultOptions()
	opts.APIKeysEnabledByDefault = true
	Expect(controllers.SetupWithManager(mctx, m, opts)).To(Succeed())
	vo := serve.DefaultOptions()
	vo.BindAddress, vo.GRPCBindAddress, vo.TLS, vo.Tokens, vo.APIKeysEnabledByDefault = "0", "0", serve.TLSOff, false, true
	v, err := serve.SetupWithManager(mctx, m, vo)
	Expect(err).NotTo(HaveOccurred())
	done := make(chan struct{})
	go func() {
		defer GinkgoRecover()
		defer close(done)
		Expect(m.Start(mctx)).To(Succeed())
	}()
	Eventually(func() error { return v.Ready(nil) }, timeout, interval).Should(Succeed())
	return &manager{verifier: v.Verifier, stop: func() { cancel(); <-done }}
}

// verifies reports whether the verifier accepts plaintext.
// verifies returns the verifier's answer to plaintext: "valid", or the
// reason it is not.
func (m *manager) verifies(plaintext string) func() (string, error) {
	return func() (string, error) {
		addr := netip.MustParseAddr("127.0.0.1")
		res, err := m.verifier.Verify(ctx, verify.Call{Key: plaintext, Addr: addr, LimitAddr: addr})
		if res.Valid {
			return "valid", err
		}
		return string(res.Reason), err
	}
}

// held is what a key is to its clients: the key ID and the material its
// Secret holds (compared by fingerprint, never printed).
type held struct {
	keyID, secretHash, plaintext string
}

// materialOf reads a key's status and the material its Secret holds.
func materialOf(c client.Client, k *keyward.AccessKey) held {
	GinkgoHelper()
	var key keyward.AccessKey
	Expect(c.Get(ctx, client.ObjectKeyFromObject(k), &key)).To(Succeed())
	var s corev1.Secret
	Expect(c.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: key.SecretName()}, &s)).To(Succeed())
	m, ok := secrets.Material(&s)
	Expect(ok).To(BeTrue(), "Secret %s/%s holds no key", s.Namespace, s.Name)
	return held{keyID: key.Status.KeyID, secretHash: key.Status.SecretHash, plaintext: m.Plaintext()}
}

// sameMaterial matches a held key by what it is, without printing the key.
func sameMaterial(want held) OmegaMatcher {
	return WithTransform(func(h held) string {
		m, err := keyformat.Parse(h.plaintext)
		if err != nil || h.plaintext != want.plaintext {
			return "other material"
		}
		return h.keyID + " " + h.secretHash + " " + keyformat.HashSecret(m.Secret)
	}, Equal(want.keyID+" "+want.secretHash+" "+want.secretHash))
}

func phaseOf(c client.Client, k *keyward.AccessKey) func() string {
	return func() string {
		var key keyward.AccessKey
		if err := c.Get(ctx, client.ObjectKeyFromObject(k), &key); err != nil {
			return err.Error()
		}
		reason := ""
		for _, cond := range key.Status.Conditions {
			if cond.Type == keyward.ConditionReady {
				reason = cond.Reason
			}
		}
		return string(key.Status.Phase) + "/" + reason
	}
}

// issuances counts the Events that say a key got key material: issued,
// rotated, re-created or imported (an Event repeated in a series counts
// each time).
func issuances(c client.Client, k *keyward.AccessKey) func() (map[string]int32, error) {
	return func() (map[string]int32, error) {
		var list corev1.EventList
		if err := c.List(ctx, &list, client.InNamespace(k.Namespace)); err != nil {
			return nil, err
		}
		out := map[string]int32{}
		for _, e := range list.Items {
			if e.InvolvedObject.Kind != "AccessKey" || e.InvolvedObject.Name != k.Name {
				continue
			}
			switch e.Reason {
			case keyward.EventIssued, keyward.EventRotated, keyward.EventSecretRecreated, keyward.EventImported:
				n := max(e.Count, 1)
				if e.Series != nil {
					n = max(n, e.Series.Count)
				}
				out[e.Reason] += n
			}
		}
		return out, nil
	}
}
