package controllers_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// The property: whatever the API server accepts, the manager decodes and
// answers with a status; whatever it refuses, it refuses with a message
// that names the field. Values for every spec field of every kind are drawn
// from generators of times, durations, integers, strings, lists and maps
// that aim at the edges (offsets, years, units, lengths, counts), and
// written as raw JSON so that the Go types do not filter them first.

// gen draws one JSON value.
type gen func(r *rand.Rand) any

func oneOf(vs ...any) gen { return func(r *rand.Rand) any { return vs[r.IntN(len(vs))] } }

func pick[T any](r *rand.Rand, vs ...T) T { return vs[r.IntN(len(vs))] }

func genTime(r *rand.Rand) any {
	if r.IntN(10) == 0 {
		return pick[any](r, "", "tomorrow", 1893456000, "2030-01-01", "2030-01-01T00:00:00", true)
	}
	return fmt.Sprintf("%s-%s-%s%s%s:%s:%s%s%s",
		pick(r, "0000", "0001", "1969", "1970", "2030", "8999", "9000", "9001", "9999"),
		pick(r, "00", "01", "02", "12", "13"),
		pick(r, "00", "01", "28", "29", "30", "31", "32"),
		pick(r, "T", "T", "T", "t", " "),
		pick(r, "00", "12", "23", "24"),
		pick(r, "00", "59", "60"),
		pick(r, "00", "59", "60"),
		pick(r, "", "", ".1", ".123456789", ".1234567891"),
		pick(r, "Z", "Z", "z", "+00:00", "-23:59", "+23:59", "+24:00", "+25:00", "-99:99", "+05:30", "+0530"))
}

func genDuration(r *rand.Rand) any {
	if r.IntN(8) == 0 {
		return pick[any](r, "", "P1D", "1h30m", "forever", " 1h", 3600, "1h ", "0")
	}
	return fmt.Sprintf("%s%s",
		pick(r, "0", "1", "-1", "1.5", "720", "721", "876000", "876001", "2562047", "2562048", "9999999999"),
		pick(r, "h", "m", "s", "ms", "ns", "us", "µs", "d", "w", ""))
}

func genInt(r *rand.Rand) any {
	return pick[any](r, -1, 0, 1, 2, 5, 1000, 1001, 100000, 100001, int64(1)<<31-1, int64(1)<<31, int64(1)<<53, "5", 1.5, nil)
}

func genString(r *rand.Rand) any {
	n := pick(r, 0, 1, 63, 64, 128, 129, 253, 254, 255, 256, 512, 513, 4096, 4097)
	unit := pick(r, "a", "ü", "\u0000", "\u202e", "-", ".", "A")
	return strings.Repeat(unit, n)
}

func genBool(r *rand.Rand) any { return pick[any](r, true, false, "true", 1, nil) }

func genScopes(r *rand.Rand) any {
	n := pick(r, 0, 1, 2, 64, 65)
	var s []any
	for i := range n {
		name := fmt.Sprintf("s%d", i)
		if r.IntN(6) == 0 {
			name = genString(r).(string)
		}
		s = append(s, map[string]any{"name": name, "access": pick[any](r, "ReadOnly", "ReadWrite", "Admin", "", nil)})
	}
	if r.IntN(8) == 0 && len(s) > 1 {
		s[1] = s[0] // a duplicate name
	}
	return s
}

func genNetworks(r *rand.Rand) any {
	n := pick(r, 0, 1, 10, 11)
	var s []any
	for range n {
		s = append(s, pick[any](r, "10.0.0.1", "10.0.0.0/8", "::1", "2001:db8::/32", "::ffff:10.0.0.1", "300.1.1.1", "10.0.0.0/33", "", "localhost", genString(r)))
	}
	return s
}

func genMap(r *rand.Rand) any {
	n := pick(r, 0, 1, 32, 33)
	m := map[string]any{}
	for i := range n {
		k := fmt.Sprintf("k%d", i)
		if r.IntN(5) == 0 {
			k = pick(r, "bad key!", strings.Repeat("a", 64), strings.Repeat("a", 253)+"/"+strings.Repeat("b", 63), "keyward.dev/x", "app.kubernetes.io/managed-by", "")
		}
		m[k] = genString(r)
	}
	return m
}

// fields lists, per kind, every spec field and its generator ("a.b" is nested).
var fields = map[string]map[string]gen{
	"AccessKey": {
		"application": oneOf("app", "nope", "", strings.Repeat("a", 254)), "displayName": genString, "description": genString,
		"owner": genString, "state": oneOf("Active", "Inactive", "Paused", "", nil), "revoked": genBool, "expiresAt": genTime,
		"scopes": genScopes, "allowedNetworks": genNetworks, "rotation.gracePeriod": genDuration,
		"secretTemplate.name": genString, "secretTemplate.labels": genMap, "secretTemplate.annotations": genMap,
	},
	"Application": {
		"displayName": genString, "description": genString, "group": genString, "team": genString,
		"maxAccessKeys": genInt, "scopes": genScopes,
	},
	"TenantSettings": {
		"apiKeysEnabled": genBool, "maxKeyLifetime": genDuration, "maxKeysPerOwner": genInt, "maxKeys": genInt, "expiryWarning": genDuration,
	},
}

func setPath(m map[string]any, path string, v any) {
	parts := strings.Split(path, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = v
}

// sample draws an object of kind with one to three fields set by generators.
func sample(r *rand.Rand, kind, ns, name string) (*unstructured.Unstructured, []string) {
	spec := map[string]any{}
	if kind == "AccessKey" {
		spec["application"] = "app"
	}
	names := make([]string, 0, len(fields[kind]))
	for f := range fields[kind] {
		names = append(names, f)
	}
	var set []string
	for range 1 + r.IntN(3) {
		f := pick(r, names...)
		setPath(spec, f, fields[kind][f](r))
		set = append(set, f)
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": keyward.GroupVersion.String(), "kind": kind,
		"metadata": map[string]any{"namespace": ns, "name": name}, "spec": spec,
	}}, set
}

// typedOf returns an empty Go object of kind, for decoding.
func typedOf(kind string) client.Object {
	switch kind {
	case "Application":
		return &keyward.Application{}
	case "TenantSettings":
		return &keyward.TenantSettings{}
	}
	return &keyward.AccessKey{}
}

// answered reports whether obj has a status for its current generation.
func answered(obj client.Object) bool {
	var conds []metav1.Condition
	var observed int64
	switch o := obj.(type) {
	case *keyward.AccessKey:
		conds, observed = o.Status.Conditions, o.Status.ObservedGeneration
	case *keyward.Application:
		conds, observed = o.Status.Conditions, o.Status.ObservedGeneration
	case *keyward.TenantSettings:
		conds, observed = o.Status.Conditions, o.Status.ObservedGeneration
	}
	c := meta.FindStatusCondition(conds, keyward.ConditionReady)
	return c != nil && c.Reason != "" && observed == obj.GetGeneration() && c.ObservedGeneration == obj.GetGeneration()
}

var _ = Describe("Tenant isolation: every value the API server accepts is decoded and answered", func() {
	It("holds for generated values of every spec field of every kind", func() {
		r := rand.New(rand.NewPCG(uint64(GinkgoRandomSeed()), 14))
		ns := newTenant(func(ts *keyward.TenantSettings) { ts.Spec.MaxKeys = 100000 })
		newApp(ns, "app", withMaxKeys(1000))

		const perKind = 150
		var accepted []client.Object
		refused := 0
		for _, kind := range []string{"AccessKey", "Application", "TenantSettings"} {
			for i := range perKind {
				objNS, name := ns, fmt.Sprintf("p-%s-%03d", strings.ToLower(kind), i)
				if kind == "TenantSettings" {
					objNS, name = newNamespace(), keyward.TenantSettingsName
				}
				obj, set := sample(r, kind, objNS, name)
				err := k8s.Create(ctx, obj)
				if err != nil {
					refused++
					Expect(apierrors.IsInvalid(err) || apierrors.IsBadRequest(err)).To(BeTrue(), "%s %v: refused with %v", kind, set, err)
					Expect(err.Error()).To(ContainSubstring("spec"), "%s %v: the message names the field", kind, set)
					continue
				}
				// What the manager's informer does: decode into the Go type.
				typed := typedOf(kind)
				Expect(k8s.Get(ctx, client.ObjectKeyFromObject(obj), typed)).To(Succeed(), "%s %v decodes", kind, set)
				accepted = append(accepted, typed)
			}
		}
		AddReportEntry("generated objects", fmt.Sprintf("%d accepted, %d refused", len(accepted), refused))
		Expect(len(accepted)).To(BeNumerically(">", 20), "the generators also produce valid values")
		Expect(refused).To(BeNumerically(">", 20), "the generators reach the edges")

		for _, obj := range accepted {
			Eventually(func(g Gomega) {
				g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(obj), obj)).To(Succeed())
				g.Expect(answered(obj)).To(BeTrue(), "%T %s/%s has a status for its generation", obj, obj.GetNamespace(), obj.GetName())
			}, timeout, interval).Should(Succeed())
		}

		// Lists decode as a whole, as the informers list them.
		Expect(k8s.List(ctx, &keyward.AccessKeyList{})).To(Succeed())
		Expect(k8s.List(ctx, &keyward.ApplicationList{})).To(Succeed())
		Expect(k8s.List(ctx, &keyward.TenantSettingsList{})).To(Succeed())

		// And another tenant is still served.
		other := newTenant()
		newApp(other, "app")
		eventuallyPhase(newKey(other, "after", "app"), keyward.PhaseActive)
	})
})

var _ = Describe("Limits hold under any sequence of creates, deletes held by finalizers, and releases", func() {
	It("never has more issued keys present than a limit allows, and never leaves a free slot unused", func() {
		r := rand.New(rand.NewPCG(uint64(GinkgoRandomSeed()), 75))
		const maxPerApp, maxPerOwner = 2, 2
		ns := newTenant(func(ts *keyward.TenantSettings) { ts.Spec.MaxKeysPerOwner = maxPerOwner })
		dropWhenDone(ns)
		newApp(ns, "a", withMaxKeys(maxPerApp))
		newApp(ns, "b", withMaxKeys(maxPerApp))

		// check lists the namespace: the limits must hold at every look
		// (an issued key counts until it is gone, terminating or not); it
		// reports through g whether the namespace has settled: every live
		// key Active or Rejected, every Rejected key rejected by a limit
		// that is really full, every terminating key showing Deleting.
		check := func(g Gomega) {
			var list keyward.AccessKeyList
			Expect(k8s.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
			byApp, byOwner := map[string]int{}, map[string]int{}
			for _, k := range list.Items {
				if k.Status.IssuedAt != nil {
					byApp[k.Spec.Application]++
					byOwner[k.Spec.Owner]++
				}
			}
			for name, n := range byApp {
				Expect(n).To(BeNumerically("<=", maxPerApp), "application %s holds %d issued keys", name, n)
			}
			for name, n := range byOwner {
				Expect(n).To(BeNumerically("<=", maxPerOwner), "owner %s holds %d issued keys", name, n)
			}
			for _, k := range list.Items {
				if k.DeletionTimestamp != nil {
					g.Expect(readyReason(&k)).To(Equal(keyward.ReasonDeleting), k.Name)
					continue
				}
				g.Expect(k.Status.Phase).To(BeElementOf(keyward.PhaseActive, keyward.PhaseRejected), k.Name)
				switch readyReason(&k) {
				case keyward.ReasonApplicationLimitExceeded:
					g.Expect(byApp[k.Spec.Application]).To(Equal(maxPerApp), "%s waits while its application has room", k.Name)
				case keyward.ReasonOwnerLimitExceeded:
					g.Expect(byOwner[k.Spec.Owner]).To(Equal(maxPerOwner), "%s waits while its owner has room", k.Name)
				}
			}
		}

		var live, held []*keyward.AccessKey
		ops := map[string]int{}
		for i := range 24 {
			op := pick(r, "create", "create", "create", "delete", "delete", "release")
			switch {
			case op == "delete" && len(live) > 0:
				j := r.IntN(len(live))
				Expect(k8s.Delete(ctx, live[j])).To(Succeed())
				if slices.Contains(live[j].Finalizers, holdFinalizer) {
					held = append(held, live[j])
				}
				live = slices.Delete(live, j, j+1)
			case op == "release" && len(held) > 0:
				j := r.IntN(len(held))
				releaseKey(held[j])
				held = slices.Delete(held, j, j+1)
			default:
				op = "create"
				k := newKey(ns, fmt.Sprintf("k%02d", i), pick(r, "a", "b"), func(k *keyward.AccessKey) {
					k.Spec.Owner = pick(r, "alice", "bob")
					if r.IntN(3) > 0 {
						heldByFinalizer(k)
					}
				})
				live = append(live, k)
			}
			ops[op]++
			Eventually(check, timeout, interval).Should(Succeed(), "after %s (step %d)", op, i)
		}
		for _, k := range held {
			releaseKey(k)
		}
		Eventually(check, timeout, interval).Should(Succeed(), "after every release")
		for _, k := range live {
			releaseKey(k) // so that the keys can go after the spec
		}
		AddReportEntry("operations", fmt.Sprint(ops))
	})
})
