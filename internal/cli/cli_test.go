package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/secrets"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// now is the clock of every test.
var now = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// Fixed key material, so that outputs are stable. Test keys only.
var (
	webKey   = keyformat.Key{ID: "webkeyidabcdefgh", Secret: strings.Repeat("s", keyformat.SecretLen)}
	oldKey   = keyformat.Key{ID: "oldkeyidabcdefgh", Secret: strings.Repeat("o", keyformat.SecretLen)}
	newKeyID = "newkeyidabcdefgh"
	// createdKey is what the controller issues to a key created by a test.
	createdKey = keyformat.Key{ID: "createdkeyidabcd", Secret: strings.Repeat("c", keyformat.SecretLen)}
)

func at(d time.Duration) *metav1.Time { t := metav1.NewTime(now.Add(d)); return &t }

func readyCond(reason, msg string) []metav1.Condition {
	status := metav1.ConditionFalse
	if reason == keyward.ReasonIssued {
		status = metav1.ConditionTrue
	}
	return []metav1.Condition{{Type: keyward.ConditionReady, Status: status, Reason: reason, Message: msg, LastTransitionTime: metav1.NewTime(now)}}
}

func key(ns, name, app, owner string, phase keyward.KeyPhase, st keyward.AccessKeyStatus) *keyward.AccessKey {
	st.Phase = phase
	return &keyward.AccessKey{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name), Generation: 1},
		Spec:       keyward.AccessKeySpec{Application: app, Owner: owner},
		Status:     st,
	}
}

// fixtures is a tenant "shop" with a key in every phase, and a tenant "lab".
func fixtures() []client.Object {
	web := key("shop", "web", "portal", "dana", keyward.PhaseActive, keyward.AccessKeyStatus{
		KeyID: webKey.ID, ShortKeyID: webKey.ID[:8], SecretName: "web", SecretHash: keyformat.HashSecret(webKey.Secret),
		ExpiresAt: at(29 * 24 * time.Hour), LastUsedAt: at(-5 * time.Minute), IssuedAt: at(-48 * time.Hour),
		PreviousKey: &keyward.PreviousKey{KeyID: oldKey.ID, SecretHash: keyformat.HashSecret(oldKey.Secret), ValidUntil: *at(45 * time.Minute)},
		Rotation:    &keyward.RotationStatus{LastRequest: "2026-11-25T11:45:00Z-000000000000"},
		Conditions:  readyCond(keyward.ReasonIssued, "the key is issued and verifies"),
	})
	web.Spec.ExpiresAt = keyward.NewTimestamp(now.Add(29 * 24 * time.Hour))
	web.Spec.Description = "the shop's web front end"
	web.Labels = map[string]string{"team": "payments", "tier": "web"}
	web.Annotations = map[string]string{keyward.RotateAnnotation: "2026-11-25T11:45:00Z-000000000000",
		keyward.RotationRequestedByAnnotation: "dana", keyward.ExpiryChangedByAnnotation: "system:serviceaccount:ci:deployer",
		keyward.StateChangedByAnnotation: "tess\nRevoked by: mallory"}
	ci := key("shop", "ci", "missing-app", "erin", keyward.PhasePending, keyward.AccessKeyStatus{
		Conditions: readyCond(keyward.ReasonApplicationNotFound, `Application "missing-app" does not exist in namespace shop`),
	})
	ci.Labels = map[string]string{"team": "analytics"}
	revoked := key("shop", "leaked", "portal", "dana", keyward.PhaseRevoked, keyward.AccessKeyStatus{
		KeyID: "leakedkeyidabcde", ShortKeyID: "leakedke", SecretName: "leaked", ExpiresAt: at(2 * time.Hour),
		Conditions: readyCond(keyward.ReasonRevoked, "the key is revoked; its key material is destroyed"),
	})
	revoked.Spec.Revoked = true
	paused := key("shop", "paused", "portal", "dana", keyward.PhaseInactive, keyward.AccessKeyStatus{
		KeyID: "pausedkeyidabcde", ShortKeyID: "pausedke", SecretName: "paused", SecretHash: keyformat.HashSecret(strings.Repeat("p", 52)),
		ExpiresAt:  at(2 * 24 * time.Hour),
		Conditions: readyCond(keyward.ReasonInactive, "the key is deactivated (spec.state: Inactive); set it to Active to restore the same key"),
	})
	paused.Spec.State = keyward.StateInactive
	paused.Labels = map[string]string{"team": "payments"}
	expired := key("shop", "expired", "portal", "erin", keyward.PhaseExpired, keyward.AccessKeyStatus{
		KeyID: "expiredkeyidabcd", ShortKeyID: "expiredk", SecretName: "expired", SecretHash: keyformat.HashSecret(strings.Repeat("e", 52)),
		ExpiresAt:  at(-3 * 24 * time.Hour),
		Conditions: readyCond(keyward.ReasonExpired, "the key expired at 2026-11-22T12:00:00Z; move spec.expiresAt into the future to restore it"),
	})
	off := key("lab", "off", "sensors", "tess", keyward.PhasePending, keyward.AccessKeyStatus{
		KeyID: "offkeyidabcdefgh", ShortKeyID: "offkeyid", SecretName: "off", SecretHash: keyformat.HashSecret(strings.Repeat("z", 52)),
		Conditions: readyCond(keyward.ReasonAPIKeysDisabled, "API keys are switched off for this tenant"),
	})
	soon := key("lab", "probe", "sensors", "tess", keyward.PhaseActive, keyward.AccessKeyStatus{
		KeyID: "probekeyidabcdef", ShortKeyID: "probekey", SecretName: "probe", SecretHash: keyformat.HashSecret(strings.Repeat("q", 52)),
		ExpiresAt:  at(6 * time.Hour),
		Conditions: readyCond(keyward.ReasonIssued, "the key is issued and verifies"),
	})
	forever := key("lab", "forever", "sensors", "tess", keyward.PhaseActive, keyward.AccessKeyStatus{
		KeyID: "foreverkeyidabcd", ShortKeyID: "foreverk", SecretName: "forever", SecretHash: keyformat.HashSecret(strings.Repeat("f", 52)),
		Conditions: readyCond(keyward.ReasonIssued, "the key is issued and verifies"),
	})
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Data: map[string][]byte{
			secrets.DataAccessKey: []byte(webKey.Plaintext()), secrets.DataKeyID: []byte(webKey.ID), "application": []byte("portal"),
		},
	}
	event := func(name, reason, msg string, ago time.Duration) *corev1.Event {
		return &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{Namespace: "shop", Name: name},
			InvolvedObject: corev1.ObjectReference{Kind: "AccessKey", Namespace: "shop", Name: "web", UID: "uid-web"},
			Type:           corev1.EventTypeNormal, Reason: reason, Message: msg,
			EventTime: metav1.NewMicroTime(now.Add(-ago)),
		}
	}
	namespace := func(name string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	}
	manager := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "keyward-system", Name: "keyward-controller-manager", Labels: map[string]string{"app.kubernetes.io/name": "keyward"}},
		Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "manager", Image: "ghcr.io/keyward/manager:v0.3.0"},
		}}}},
	}
	return []client.Object{namespace("lab"), namespace("shop"), namespace("vault"), web, ci, revoked, paused, expired, off, soon, forever, secret, manager,
		event("web.2", "Rotated", "rotated: key ID "+webKey.ID+" replaces "+oldKey.ID, 15*time.Minute),
		event("web.1", "Issued", "issued key ID "+oldKey.ID, 48*time.Hour),
	}
}

// world is the fake API server of a test, and the options of the
// commands run against it.
type world struct {
	c             client.Client
	forbidSecrets bool
	forbidRevoke  bool
	// forbidAll forbids listing AccessKeys in all namespaces.
	forbidAll bool
	// forbidNamespaces forbids listing namespaces.
	forbidNamespaces bool
	// forbidIn forbids listing AccessKeys in these namespaces.
	forbidIn map[string]bool
}

// controller plays the Keyward controller: after every write of an
// AccessKey, status follows the spec at once.
func (w *world) reconcile(ctx context.Context, c client.WithWatch, obj client.Object) error {
	k, ok := obj.(*keyward.AccessKey)
	if !ok {
		return nil
	}
	var cur keyward.AccessKey
	if err := c.Get(ctx, client.ObjectKeyFromObject(k), &cur); err != nil {
		return err
	}
	st := &cur.Status
	if req := cur.Annotations[keyward.RotateAnnotation]; req != "" && (st.Rotation == nil || st.Rotation.LastRequest != req) {
		grace := time.Duration(0)
		if cur.Spec.Rotation != nil && cur.Spec.Rotation.GracePeriod != nil {
			grace, _ = cur.Spec.Rotation.GracePeriod.Parse()
		}
		st.PreviousKey = &keyward.PreviousKey{KeyID: st.KeyID, SecretHash: st.SecretHash, ValidUntil: *at(grace)}
		st.KeyID, st.ShortKeyID, st.Rotation = newKeyID, newKeyID[:8], &keyward.RotationStatus{LastRequest: req}
	}
	if cur.Spec.ExpiresAt != nil {
		t, _ := cur.Spec.ExpiresAt.Parse()
		st.ExpiresAt = at(t.Sub(now))
	}
	switch {
	case cur.Spec.Revoked:
		st.Phase, st.SecretHash, st.Conditions = keyward.PhaseRevoked, "", readyCond(keyward.ReasonRevoked, "the key is revoked")
	case cur.Spec.State == keyward.StateInactive:
		st.Phase, st.Conditions = keyward.PhaseInactive, readyCond(keyward.ReasonInactive, "the key is deactivated (spec.state: Inactive); set it to Active to restore the same key")
	case st.KeyID != "":
		st.Phase, st.Conditions = keyward.PhaseActive, readyCond(keyward.ReasonIssued, "the key is issued and verifies")
	}
	st.ObservedGeneration = cur.Generation
	return c.Status().Update(ctx, &cur)
}

// issue plays the controller for a new key: an Application it knows is
// issued (with the Secret written), any other leaves the key Pending.
func (w *world) issue(ctx context.Context, c client.WithWatch, k *keyward.AccessKey) error {
	var cur keyward.AccessKey
	if err := c.Get(ctx, client.ObjectKeyFromObject(k), &cur); err != nil {
		return err
	}
	st := &cur.Status
	st.ObservedGeneration = cur.Generation
	if cur.Spec.Application != "portal" {
		st.Phase, st.Conditions = keyward.PhasePending, readyCond(keyward.ReasonApplicationNotFound,
			fmt.Sprintf("Application %q does not exist in namespace %s", cur.Spec.Application, cur.Namespace))
		return c.Status().Update(ctx, &cur)
	}
	if err := c.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: cur.Namespace, Name: cur.SecretName()},
		Data:       map[string][]byte{secrets.DataAccessKey: []byte(createdKey.Plaintext()), secrets.DataKeyID: []byte(createdKey.ID)},
	}); err != nil {
		return err
	}
	st.KeyID, st.ShortKeyID, st.SecretName = createdKey.ID, createdKey.ID[:8], cur.SecretName()
	st.SecretHash, st.IssuedAt = keyformat.HashSecret(createdKey.Secret), at(0)
	st.Phase, st.Conditions = keyward.PhaseActive, readyCond(keyward.ReasonIssued, "the key is issued and verifies")
	return c.Status().Update(ctx, &cur)
}

func newWorld(t *testing.T, mod func(*world)) *world {
	t.Helper()
	w := &world{}
	if mod != nil {
		mod(w)
	}
	w.c = fake.NewClientBuilder().WithScheme(Scheme()).
		WithObjects(fixtures()...).
		WithStatusSubresource(&keyward.AccessKey{}).
		WithIndex(&keyward.AccessKey{}, "status.keyID", func(o client.Object) []string {
			return []string{o.(*keyward.AccessKey).Status.KeyID}
		}).
		WithIndex(&corev1.Event{}, "involvedObject.uid", func(o client.Object) []string {
			return []string{string(o.(*corev1.Event).InvolvedObject.UID)}
		}).
		WithInterceptorFuncs(interceptor.Funcs{
			Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
				k, ok := obj.(*keyward.AccessKey)
				if !ok {
					return c.Create(ctx, obj, opts...)
				}
				if k.Spec.Owner == "" {
					k.Spec.Owner = "dana" // keyward-stamp-owner
				}
				if err := c.Create(ctx, obj, opts...); err != nil {
					return err
				}
				return w.issue(ctx, c, k)
			},
			Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
				if _, ok := obj.(*corev1.Secret); ok && w.forbidSecrets {
					return apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, key.Name,
						fmt.Errorf(`User "erin" cannot get resource "secrets" in API group "" in the namespace %q`, key.Namespace))
				}
				return c.Get(ctx, key, obj, opts...)
			},
			List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
				lo := (&client.ListOptions{}).ApplyOptions(opts)
				_, keys := list.(*keyward.AccessKeyList)
				_, nss := list.(*corev1.NamespaceList)
				switch {
				case keys && w.forbidAll && lo.Namespace == "", keys && w.forbidIn[lo.Namespace]:
					return apierrors.NewForbidden(schema.GroupResource{Group: "keyward.dev", Resource: "accesskeys"}, "",
						errors.New(`User "dana" cannot list resource "accesskeys" in API group "keyward.dev"`))
				case nss && w.forbidNamespaces:
					return apierrors.NewForbidden(schema.GroupResource{Resource: "namespaces"}, "",
						errors.New(`User "dana" cannot list resource "namespaces" in API group "" at the cluster scope`))
				}
				return c.List(ctx, list, opts...)
			},
			Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
				if w.forbidRevoke {
					if b, _ := patch.Data(obj); strings.Contains(string(b), `"revoked":true`) {
						return apierrors.NewForbidden(schema.GroupResource{Group: "keyward.dev", Resource: "accesskeys"}, obj.GetName(), errors.New(
							"ValidatingAdmissionPolicy 'keyward-accesskey-rights' with binding 'keyward-accesskey-rights' denied request: "+
								"revoking an AccessKey (spec.revoked: true) needs the revoke verb on accesskeys, granted by the ClusterRole keyward-tenant-admin; user dana does not have it in namespace shop"))
					}
				}
				if err := c.Patch(ctx, obj, patch, opts...); err != nil {
					return err
				}
				return w.reconcile(ctx, c, obj)
			},
		}).Build()
	return w
}

type result struct {
	stdout, stderr string
	code           int
}

// run runs the plugin with args against the world; terminal says whether
// standard input is a terminal.
func (w *world) run(stdin string, terminal bool, args ...string) result {
	var out, errOut bytes.Buffer
	o := NewOptions(genericiooptions.IOStreams{In: strings.NewReader(stdin), Out: &out, ErrOut: &errOut})
	o.Now = func() time.Time { return now }
	o.NewClient = func() (client.Client, error) { return w.c, nil }
	o.Namespace = func() (string, bool, error) {
		if ns := *o.ConfigFlags.Namespace; ns != "" {
			return ns, true, nil
		}
		return "default", false, nil
	}
	o.StdinIsTerminal = func() bool { return terminal }
	o.ReadSecretLine = func() (string, error) { return strings.SplitN(stdin, "\n", 2)[0], nil }
	o.Random = bytes.NewReader([]byte{0xde, 0xad, 0xbe, 0xef, 0x00, 0x01})
	o.PollInterval = time.Millisecond
	code := Run(o, args)
	return result{out.String(), errOut.String(), code}
}

// transcript is how a golden file shows one invocation.
func (r result) transcript(stdin string, args ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "$ kubectl keyward %s", strings.Join(args, " "))
	if stdin != "" {
		b.WriteString(" < key")
	}
	b.WriteString("\n")
	b.WriteString(r.stdout)
	if r.stderr != "" {
		b.WriteString("[stderr]\n" + r.stderr)
	}
	fmt.Fprintf(&b, "[exit %d]\n\n", r.code)
	return b.String()
}

// golden compares got with testdata/<name>.golden (rewritten with -update).
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/cli -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from the output (go test ./internal/cli -update rewrites it)\n--- want\n%s\n--- got\n%s", path, want, got)
	}
}

// script runs invocations in order and collects their transcripts.
type script struct {
	t *testing.T
	w *world
	b strings.Builder
}

func (s *script) run(stdin string, terminal bool, args ...string) result {
	r := s.w.run(stdin, terminal, args...)
	s.b.WriteString(r.transcript(stdin, args...))
	return r
}

func (s *script) golden(name string) { s.t.Helper(); golden(s.t, name, s.b.String()) }

func noKeyMaterial(t *testing.T, text string) {
	t.Helper()
	for _, k := range []keyformat.Key{webKey, oldKey} {
		if strings.Contains(text, k.Secret) {
			t.Fatalf("key material in the output:\n%s", text)
		}
	}
}
