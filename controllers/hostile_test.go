package controllers_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/controllers"
)

// The hostile table: manifests a tenant can send, each either refused by the
// API server with a clear message or accepted and answered with a status.
// After each one another tenant's new key must still be issued in its usual
// time: one namespace must never stall the manager for the others.

// hostile is one manifest of the table. Objects are written as unstructured
// JSON, so a case can hold any value the API server might take, including
// ones the Go types could not express.
type hostile struct {
	name string
	// kind is AccessKey (default), Application or TenantSettings.
	kind string
	// spec of the object; for AccessKeys "application" defaults to "app".
	spec map[string]any
	// metadata fields merged into the object's metadata (name, annotations).
	metadata map[string]any
	// refused is a fragment of the API server's message when the object must be refused.
	refused string
	// phase and reason the AccessKey reaches when it is accepted.
	phase  keyward.KeyPhase
	reason string
	// check runs after the key reached its phase, for further assertions.
	check func(ns string, key *keyward.AccessKey)
}

func long(n int) string { return strings.Repeat("a", n) }

func manyEntries(n, valueLen int) map[string]any {
	m := map[string]any{}
	for i := range n {
		m[fmt.Sprintf("k%02d", i)] = long(valueLen)
	}
	return m
}

func manyScopes(n int) []any {
	var s []any
	for i := range n {
		s = append(s, map[string]any{"name": fmt.Sprintf("s%d", i), "access": "ReadOnly"})
	}
	return s
}

func manyNetworks(n int) []any {
	var s []any
	for i := range n {
		s = append(s, fmt.Sprintf("10.0.%d.0/24", i))
	}
	return s
}

var hostileTable = []hostile{
	// Times: every form the API server's date-time format takes but Go cannot parse.
	{name: "expiry offset +25:00", spec: map[string]any{"expiresAt": "2030-01-01T00:00:00+25:00"}, refused: "spec.expiresAt"},
	{name: "expiry offset +24:00", spec: map[string]any{"expiresAt": "2030-01-01T00:00:00+24:00"}, refused: "spec.expiresAt"},
	{name: "expiry offset minutes 60", spec: map[string]any{"expiresAt": "2030-01-01T00:00:00+23:60"}, refused: "spec.expiresAt"},
	{name: "expiry year 10000 in UTC", spec: map[string]any{"expiresAt": "9999-12-31T23:00:00-05:00"}, refused: "spec.expiresAt"},
	{name: "expiry beyond 9000", spec: map[string]any{"expiresAt": "9500-01-01T00:00:00Z"}, refused: "between 1970-01-01T00:00:00Z and 9000-01-01T00:00:00Z"},
	{name: "expiry year 0", spec: map[string]any{"expiresAt": "0000-01-01T00:00:00Z"}, refused: "spec.expiresAt"},
	{name: "expiry lower-case t and z", spec: map[string]any{"expiresAt": "2030-01-01t00:00:00z"}, refused: "spec.expiresAt"},
	{name: "expiry ten fraction digits", spec: map[string]any{"expiresAt": "2030-01-01T00:00:00.1234567891Z"}, refused: "spec.expiresAt"},
	{name: "expiry in words", spec: map[string]any{"expiresAt": "tomorrow"}, refused: "spec.expiresAt"},
	{name: "expiry as a number", spec: map[string]any{"expiresAt": 1893456000}, refused: "spec.expiresAt"},
	{name: "expiry February 30", spec: map[string]any{"expiresAt": "2030-02-30T00:00:00Z"}, refused: "spec.expiresAt"},
	// Durations.
	{name: "grace period of 100 years", spec: map[string]any{"rotation": map[string]any{"gracePeriod": "876000h"}}, refused: "gracePeriod is at most 720h"},
	{name: "grace period negative", spec: map[string]any{"rotation": map[string]any{"gracePeriod": "-1s"}}, refused: "spec.rotation.gracePeriod"},
	{name: "grace period in days", spec: map[string]any{"rotation": map[string]any{"gracePeriod": "1d"}}, refused: "spec.rotation.gracePeriod"},
	{name: "grace period past Go's range", spec: map[string]any{"rotation": map[string]any{"gracePeriod": "9999999999h"}}, refused: "spec.rotation.gracePeriod"},
	// Strings, lists and maps.
	{name: "owner of 513 characters", spec: map[string]any{"owner": long(513)}, refused: "spec.owner"},
	{name: "display name of 256 characters", spec: map[string]any{"displayName": long(256)}, refused: "spec.displayName"},
	{name: "description of 4097 characters", spec: map[string]any{"description": long(4097)}, refused: "spec.description"},
	{name: "eleven networks", spec: map[string]any{"allowedNetworks": manyNetworks(11)}, refused: "spec.allowedNetworks"},
	{name: "a network that is no address", spec: map[string]any{"allowedNetworks": []any{"300.1.1.1"}}, refused: "IPv4/IPv6 address or CIDR"},
	{name: "65 scopes", spec: map[string]any{"scopes": manyScopes(65)}, refused: "spec.scopes"},
	{name: "an access level that does not exist", spec: map[string]any{"scopes": []any{map[string]any{"name": "x", "access": "Admin"}}}, refused: "spec.scopes[0].access"},
	{name: "a state that does not exist", spec: map[string]any{"state": "Paused"}, refused: "spec.state"},
	{name: "33 template labels", spec: map[string]any{"secretTemplate": map[string]any{"labels": manyEntries(33, 3)}}, refused: "spec.secretTemplate.labels"},
	{name: "a template label value of 64 characters", spec: map[string]any{"secretTemplate": map[string]any{"labels": map[string]any{"a": long(64)}}}, refused: "spec.secretTemplate.labels"},
	{name: "a template annotation of 4097 characters", spec: map[string]any{"secretTemplate": map[string]any{"annotations": map[string]any{"a": long(4097)}}}, refused: "spec.secretTemplate.annotations"},
	{name: "a Secret name in capitals", spec: map[string]any{"secretTemplate": map[string]any{"name": "UPPER"}}, refused: "spec.secretTemplate.name"},
	{name: "a key name of 64 characters", metadata: map[string]any{"name": long(64)}, refused: "at most 63 characters"},
	{name: "an empty application", spec: map[string]any{"application": ""}, refused: "spec.application"},
	// Accepted, answered with a condition.
	{name: "expiry at 1970", spec: map[string]any{"expiresAt": "1970-01-01T00:00:00Z"}, phase: keyward.PhaseExpired, reason: keyward.ReasonExpired},
	{name: "expiry at the latest time allowed", spec: map[string]any{"expiresAt": "9000-01-01T00:00:00Z"}, phase: keyward.PhaseActive, reason: keyward.ReasonIssued},
	{name: "expiry with offset -23:59", spec: map[string]any{"expiresAt": "2999-06-30T12:00:00.123456789-23:59"}, phase: keyward.PhaseActive, reason: keyward.ReasonIssued},
	{name: "an application that does not exist", spec: map[string]any{"application": "nope"}, phase: keyward.PhasePending, reason: keyward.ReasonApplicationNotFound},
	{name: "scopes beyond the application", spec: map[string]any{"scopes": []any{map[string]any{"name": "admin", "access": "ReadWrite"}}}, phase: keyward.PhaseRejected, reason: keyward.ReasonScopeNotAllowed},
	{name: "a template label key the API server refuses", spec: map[string]any{"secretTemplate": map[string]any{"labels": map[string]any{"bad key!": "x"}}},
		phase: keyward.PhasePending, reason: keyward.ReasonSecretInvalid, check: expectShortMessage},
	// A prefix of 253 characters and a name of 63 make a valid label key.
	{name: "a template label key of 317 characters", spec: map[string]any{"secretTemplate": map[string]any{"labels": map[string]any{long(253) + "/" + long(63): "x"}}},
		phase: keyward.PhaseActive, reason: keyward.ReasonIssued},
	{name: "32 annotations of 4096 characters", spec: map[string]any{"secretTemplate": map[string]any{"annotations": manyEntries(32, 4096)}}, phase: keyward.PhaseActive, reason: keyward.ReasonIssued},
	{name: "an owner of 512 characters with unicode", spec: map[string]any{"owner": strings.Repeat("ü", 256)}, phase: keyward.PhaseActive, reason: keyward.ReasonIssued},
	{name: "control characters in the description", spec: map[string]any{"description": "a\u0000b\u001bc\u202e"}, phase: keyward.PhaseActive, reason: keyward.ReasonIssued},
	{name: "a rotation request of 200 KiB", metadata: map[string]any{"annotations": map[string]any{keyward.RotateAnnotation: long(200 << 10)}},
		phase: keyward.PhaseActive, reason: keyward.ReasonIssued, check: func(_ string, k *keyward.AccessKey) {
			Expect(k.Status.Rotation).NotTo(BeNil())
			Expect(len(k.Status.Rotation.LastRequest)).To(BeNumerically("<=", 80), "a long rotation request is recorded by its hash")
		}},
	{name: "a Secret name taken by a stranger", spec: map[string]any{"secretTemplate": map[string]any{"name": "taken"}},
		phase: keyward.PhasePending, reason: keyward.ReasonSecretNameConflict},
	// TenantSettings and Applications.
	{name: "tenant lifetime of zero", kind: "TenantSettings", spec: map[string]any{"maxKeyLifetime": "0s"}, refused: "maxKeyLifetime must be a positive duration"},
	{name: "tenant lifetime past Go's range", kind: "TenantSettings", spec: map[string]any{"maxKeyLifetime": "3000000h"}, refused: "spec.maxKeyLifetime"},
	{name: "tenant warning negative", kind: "TenantSettings", spec: map[string]any{"expiryWarning": "-1h"}, refused: "spec.expiryWarning"},
	{name: "tenant owner limit 0", kind: "TenantSettings", spec: map[string]any{"maxKeysPerOwner": 0}, refused: "spec.maxKeysPerOwner"},
	{name: "tenant owner limit 1001", kind: "TenantSettings", spec: map[string]any{"maxKeysPerOwner": 1001}, refused: "spec.maxKeysPerOwner"},
	{name: "tenant key limit 0", kind: "TenantSettings", spec: map[string]any{"maxKeys": 0}, refused: "spec.maxKeys"},
	{name: "tenant settings under another name", kind: "TenantSettings", metadata: map[string]any{"name": "other"}, refused: "must be named 'default'"},
	{name: "application limit 0", kind: "Application", spec: map[string]any{"maxAccessKeys": 0}, refused: "spec.maxAccessKeys"},
	{name: "application limit past int32", kind: "Application", spec: map[string]any{"maxAccessKeys": int64(1) << 40}, refused: "spec.maxAccessKeys"},
	{name: "application with an empty group", kind: "Application", spec: map[string]any{"group": ""}, refused: "spec.group"},
	{name: "application with 65 scopes", kind: "Application", spec: map[string]any{"scopes": manyScopes(65)}, refused: "spec.scopes"},
}

// expectShortMessage: a refused Secret is explained in a bounded message
// that does not echo the API server's whole error.
func expectShortMessage(_ string, k *keyward.AccessKey) {
	Expect(len(readyMessage(k))).To(BeNumerically("<=", 1024))
	Expect(readyMessage(k)).NotTo(ContainSubstring(long(200)))
}

// object builds the unstructured object of a hostile case in ns.
func (h hostile) object(ns string, i int) *unstructured.Unstructured {
	kind := h.kind
	if kind == "" {
		kind = "AccessKey"
	}
	spec := map[string]any{}
	if kind == "AccessKey" {
		spec["application"] = "app"
	}
	for k, v := range h.spec {
		spec[k] = v
	}
	metadata := map[string]any{"namespace": ns, "name": fmt.Sprintf("h%02d", i)}
	if kind == "TenantSettings" {
		metadata["name"] = keyward.TenantSettingsName
	}
	for k, v := range h.metadata {
		metadata[k] = v
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": keyward.GroupVersion.String(), "kind": kind, "metadata": metadata, "spec": spec,
	}}
	return u
}

var _ = Describe("Tenant isolation: hostile manifests", Ordered, ContinueOnFailure, func() {
	var hostileNS string
	var issueTimes []time.Duration

	BeforeAll(func() {
		// The hostile tenant: its own namespace, with an Application that has
		// room, but no TenantSettings yet, so the table can create one.
		hostileNS = newNamespace()
		newApp(hostileNS, "app", withMaxKeys(1000))
		Expect(k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: hostileNS, Name: "taken"}})).To(Succeed())
	})

	// canary issues a key in a tenant of its own and returns how long it took.
	canary := func() time.Duration {
		GinkgoHelper()
		ns := newTenant()
		newApp(ns, "app")
		start := time.Now()
		key := newKey(ns, "canary", "app")
		eventuallyPhase(key, keyward.PhaseActive, keyward.ReasonIssued)
		return time.Since(start)
	}

	for i, h := range hostileTable {
		It(h.name, func() {
			ns := hostileNS
			if h.kind == "TenantSettings" {
				ns = newNamespace() // one TenantSettings per namespace
			}
			obj := h.object(ns, i)
			err := k8s.Create(ctx, obj)
			if h.refused != "" {
				Expect(err).To(HaveOccurred(), "the API server must refuse it")
				Expect(apierrors.IsInvalid(err) || apierrors.IsBadRequest(err)).To(BeTrue(), "refused as invalid, got %v", err)
				Expect(err.Error()).To(ContainSubstring(h.refused))
			} else {
				Expect(err).NotTo(HaveOccurred())
				if h.kind == "" || h.kind == "AccessKey" {
					ensureTenantOn(hostileNS)
					key := &keyward.AccessKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: obj.GetName()}}
					got := eventuallyPhase(key, h.phase, h.reason)
					Expect(readyCondition(got).ObservedGeneration).To(Equal(got.Generation))
					if h.check != nil {
						h.check(ns, got)
					}
				}
			}
			issueTimes = append(issueTimes, canary())
		})
	}

	It("kept every other tenant's keys issuing in their usual time", func() {
		// The slowest canary must be within a few seconds (the usual
		// issue time, plus scheduling on a loaded CI machine).
		Expect(issueTimes).NotTo(BeEmpty())
		slowest := time.Duration(0)
		for _, d := range issueTimes {
			slowest = max(slowest, d)
		}
		AddReportEntry("slowest canary issue after a hostile manifest", slowest.String())
		Expect(slowest).To(BeNumerically("<", 10*time.Second))
	})

	It("left the manager settled: no panic, no hot loop", func() {
		Expect(managerLog.String()).NotTo(ContainSubstring("panic"))
		// Every hostile object has its answer; nothing may keep the
		// workers busy (a key requeued every 100 ms would add ~30 here).
		// First let the last canary's delayed work finish (key counts are
		// written controllers.CountsDelay after a change).
		last := -1.0
		Eventually(func() bool {
			now := reconcileTotal()
			settled := now == last
			last = now
			return settled
		}, timeout, 3*controllers.CountsDelay/2).Should(BeTrue())
		start := reconcileTotal()
		Consistently(func() float64 { return reconcileTotal() - start }, 3*time.Second, 200*time.Millisecond).
			Should(BeNumerically("<", 15))
	})
})

// reconcileTotal sums controller-runtime's reconcile counter over every
// controller of the manager under test.
func reconcileTotal() float64 {
	GinkgoHelper()
	return counterSum("controller_runtime_reconcile_total", "")
}

// reconcileErrors is controller-runtime's reconcile error counter of one
// controller, summed over every manager the suite started.
func reconcileErrors(controller string) float64 {
	GinkgoHelper()
	return counterSum("controller_runtime_reconcile_errors_total", controller)
}

// counterSum sums a counter of the metrics registry over the controllers
// that report it, or over the one named.
func counterSum(name, controller string) float64 {
	GinkgoHelper()
	families, err := metrics.Registry.Gather()
	Expect(err).NotTo(HaveOccurred())
	total := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if controller == "" || slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool {
				return l.GetName() == "controller" && l.GetValue() == controller
			}) {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}

// unreadableLifetimeTenant loosens the TenantSettings CRD (restored when the
// spec ends, or earlier through restore) and creates a namespace whose
// TenantSettings has a maxKeyLifetime Go cannot read ("30d").
func unreadableLifetimeTenant() (ns string, ts *unstructured.Unstructured, restore func()) {
	GinkgoHelper()
	restore = loosenCRD("tenantsettings", "maxKeyLifetime")
	ns = newNamespace()
	ts = &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": keyward.GroupVersion.String(), "kind": "TenantSettings",
		"metadata": map[string]any{"namespace": ns, "name": keyward.TenantSettingsName},
		"spec":     map[string]any{"apiKeysEnabled": true, "maxKeyLifetime": "30d"},
	}}
	Eventually(func() error { return k8s.Create(ctx, ts) }, timeout, interval).Should(Succeed())
	return ns, ts, restore
}

// ensureTenantOn creates or switches on the namespace's TenantSettings.
func ensureTenantOn(ns string) {
	GinkgoHelper()
	ts := &keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: keyward.TenantSettingsName}}
	err := k8s.Get(ctx, client.ObjectKeyFromObject(ts), ts)
	if apierrors.IsNotFound(err) {
		ts.Spec = keyward.TenantSettingsSpec{APIKeysEnabled: ptr.To(true), MaxKeysPerOwner: 1000}
		Expect(k8s.Create(ctx, ts)).To(Succeed())
		return
	}
	Expect(err).NotTo(HaveOccurred())
}

// editCRDSchema changes the live openAPIV3Schema of a Keyward CRD (its
// first version) with edit, and restores the CRD when the spec ends.
func editCRDSchema(plural string, edit func(schema map[string]any)) (restore func()) {
	GinkgoHelper()
	crd := &unstructured.Unstructured{}
	crd.SetAPIVersion("apiextensions.k8s.io/v1")
	crd.SetKind("CustomResourceDefinition")
	Expect(k8s.Get(ctx, client.ObjectKey{Name: plural + "." + keyward.GroupVersion.Group}, crd)).To(Succeed())
	original := crd.DeepCopy()
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	edit(versions[0].(map[string]any)["schema"].(map[string]any)["openAPIV3Schema"].(map[string]any))
	Expect(unstructured.SetNestedSlice(crd.Object, versions, "spec", "versions")).To(Succeed())
	Expect(k8s.Update(ctx, crd)).To(Succeed())
	var once sync.Once
	restore = func() {
		once.Do(func() {
			Eventually(func() error {
				current := &unstructured.Unstructured{}
				current.SetGroupVersionKind(crd.GroupVersionKind())
				if err := k8s.Get(ctx, client.ObjectKeyFromObject(crd), current); err != nil {
					return err
				}
				restored := original.DeepCopy()
				restored.SetResourceVersion(current.GetResourceVersion())
				return k8s.Update(ctx, restored)
			}, timeout, interval).Should(Succeed())
		})
	}
	DeferCleanup(restore)
	return restore
}

// loosenCRD removes the validation of one schema property of a Keyward CRD,
// as an older CRD (or a hand-edited one) would lack it, and restores the
// CRD when the spec ends, or earlier through the function it returns. path
// runs from the version's spec property down.
func loosenCRD(plural string, path ...string) (restore func()) {
	GinkgoHelper()
	return editCRDSchema(plural, func(schema map[string]any) {
		node := schema["properties"].(map[string]any)["spec"].(map[string]any)
		delete(node, "x-kubernetes-validations")
		for _, p := range path {
			node = node["properties"].(map[string]any)[p].(map[string]any)
		}
		for _, rule := range []string{"pattern", "format", "x-kubernetes-validations", "maxLength"} {
			delete(node, rule)
		}
	})
}

var _ = Describe("Tenant isolation: a value that slips past an older CRD", Serial, func() {
	// The API server's own date-time check takes offsets such as +25:00
	// and lower-case separators that Go's RFC 3339 parser refuses. Before
	// spec times were strings in Go, one such key made every list and
	// watch of AccessKeys fail to decode: no key in any namespace was
	// issued, revoked or expired any more.
	It("costs that object alone: it is Pending with InvalidSpec and other tenants are served", func() {
		ns := newTenant()
		newApp(ns, "app")
		loosenCRD("accesskeys", "expiresAt")

		var keys []*keyward.AccessKey
		for i, at := range []string{"2030-01-01T00:00:00+25:00", "2030-01-01t00:00:00z", "9999-12-31T23:00:00-05:00"} {
			obj := hostile{spec: map[string]any{"expiresAt": at}}.object(ns, i)
			Eventually(func() error { return k8s.Create(ctx, obj) }, timeout, interval).Should(Succeed(), "the loosened CRD takes %s", at)
			key := &keyward.AccessKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: obj.GetName()}}
			Expect(k8s.Get(ctx, client.ObjectKeyFromObject(key), key)).To(Succeed(), "it decodes in Go")
			got := eventuallyPhase(key, keyward.PhasePending, keyward.ReasonInvalidSpec)
			Expect(readyMessage(got)).To(ContainSubstring("spec.expiresAt"))
			Expect(hasSecret(got)).To(BeFalse(), "no material for a key whose expiry nobody can read")
			keys = append(keys, got)
		}

		other := newTenant()
		newApp(other, "app")
		eventuallyPhase(newKey(other, "served", "app"), keyward.PhaseActive)
		for _, k := range keys {
			Expect(k8s.Delete(ctx, k)).To(Succeed())
		}
	})

	It("stops issuing in a tenant whose lifetime limit cannot be read, and only there", func() {
		ns, ts, _ := unreadableLifetimeTenant()
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(ts), &keyward.TenantSettings{})).To(Succeed(), "it decodes in Go")
		newApp(ns, "app")
		key := newKey(ns, "bounded", "app")
		got := eventuallyPhase(key, keyward.PhasePending, keyward.ReasonInvalidTenantSettings)
		Expect(readyMessage(got)).To(ContainSubstring("spec.maxKeyLifetime"))

		other := newTenant()
		newApp(other, "app")
		eventuallyPhase(newKey(other, "served", "app"), keyward.PhaseActive)
	})
})
