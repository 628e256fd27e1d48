package controllers_test

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/secrets"
)

// Crash windows: what a manager stopped between two of its own writes
// leaves in the API, made on purpose with a client that refuses or holds
// one write (the chaos suite finds the same windows with SIGKILL, by
// chance). The manager must finish the job from that state.

// hookedClient lets a spec refuse a delete or hold a status patch of the
// manager under test; every other call goes straight to the API server.
type hookedClient struct {
	client.Client
	// beforeDelete may refuse a delete (a non-nil error is returned instead).
	beforeDelete func(client.Object) error
	// beforeStatusPatch runs before a status patch, and may block it.
	beforeStatusPatch func(client.Object)
}

func (c *hookedClient) Delete(ctx context.Context, obj client.Object, opts ...client.DeleteOption) error {
	if c.beforeDelete != nil {
		if err := c.beforeDelete(obj); err != nil {
			return err
		}
	}
	return c.Client.Delete(ctx, obj, opts...)
}

func (c *hookedClient) Status() client.SubResourceWriter {
	return hookedStatus{SubResourceWriter: c.Client.Status(), c: c}
}

type hookedStatus struct {
	client.SubResourceWriter
	c *hookedClient
}

func (s hookedStatus) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
	if s.c.beforeStatusPatch != nil {
		s.c.beforeStatusPatch(obj)
	}
	return s.SubResourceWriter.Patch(ctx, obj, patch, opts...)
}

// restartHooked stops the suite's manager, makes the changes of whileDown
// with no manager running (so that it sees them all at once), and starts a
// manager whose client is hooked, for the rest of the spec.
func restartHooked(hooks *hookedClient, whileDown func()) {
	GinkgoHelper()
	stopMgr()
	whileDown()
	_, stopHooked := startManager(func(c client.Client) client.Client {
		hooks.Client = c
		return hooks
	})
	DeferCleanup(func() {
		stopHooked()
		mgr, stopMgr = startManager()
	})
}

var _ = Describe("Crash windows", Serial, func() {
	It("destroys a revoked key's stripped Secret even when the manager stopped between emptying and deleting it", func() {
		key, _ := issuedKey("window")
		var refused atomic.Int32
		restartHooked(&hookedClient{beforeDelete: func(obj client.Object) error {
			if _, ok := obj.(*corev1.Secret); ok && obj.GetNamespace() == key.Namespace && obj.GetName() == key.SecretName() && refused.CompareAndSwap(0, 1) {
				return apierrors.NewServiceUnavailable("the test stops the manager here")
			}
			return nil
		}}, func() {
			// Neither the owner reference nor the key label tells that the
			// Secret is the key's: only the material it holds does, until
			// it is emptied.
			update(secretOf(key), func(s *corev1.Secret) {
				s.OwnerReferences = nil
				delete(s.Labels, secrets.LabelAccessKey)
			})
			update(key, func(k *keyward.AccessKey) { k.Spec.Revoked = true })
		})
		eventuallyPhase(key, keyward.PhaseRevoked)
		Expect(refused.Load()).To(BeEquivalentTo(1), "the delete after the emptying was refused once")
		Eventually(secretGoneOrEmpty(key), timeout, interval).Should(Equal("gone"))
	})

	It("records SecretRecreated before the status that records the new key, so no stop loses it", func() {
		var (
			held      = make(chan struct{}, 1)
			release   = make(chan struct{})
			releaseMu sync.Once
		)
		key, active := issuedKey("recreated")
		// The key's status patches that record another key ID are held.
		restartHooked(&hookedClient{beforeStatusPatch: func(obj client.Object) {
			k, ok := obj.(*keyward.AccessKey)
			if ok && k.UID == active.UID && k.Status.KeyID != "" && k.Status.KeyID != active.Status.KeyID {
				select {
				case held <- struct{}{}:
				default:
				}
				<-release
			}
		}}, func() {
			Expect(k8s.Delete(ctx, secretOf(key))).To(Succeed())
		})
		// Registered after the manager's cleanup, so it runs first: a held
		// write would keep the manager from stopping.
		DeferCleanup(func() { releaseMu.Do(func() { close(release) }) })

		By("the Secret deleted: the re-issue's status write is held")
		Eventually(held, timeout).Should(Receive())
		Expect(get(key.DeepCopy()).Status.KeyID).To(Equal(active.Status.KeyID), "the new key is not recorded yet")
		Eventually(eventReasons(key), 5*time.Second, interval).Should(ContainElement(keyward.EventSecretRecreated),
			"the Event exists while the status write is held")

		By("released: the new key is recorded, and the Event is not recorded twice")
		releaseMu.Do(func() { close(release) })
		Eventually(func() string { return get(key.DeepCopy()).Status.KeyID }, timeout, interval).ShouldNot(Equal(active.Status.KeyID))
		eventuallyPhase(key, keyward.PhaseActive)
		Consistently(func() int {
			n := 0
			for _, r := range eventReasons(key)() {
				if r == keyward.EventSecretRecreated {
					n++
				}
			}
			return n
		}, 2*time.Second, interval).Should(Equal(1))
	})
})
