package verify_test

import (
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/verify"
)

// keys is one tenant's keys in every state the verifier tells apart, issued
// by the real controllers.
type keys struct {
	ns                                              string
	active, scoped, networked, inactive, expired    string
	revoked, disabled, unknown, malformed, activeID string
}

func setupKeys() keys {
	GinkgoHelper()
	var k keys
	k.ns = newTenant(true)
	newApp(k.ns, "billing", "Administrators", sc("orders", keyward.ReadWrite), sc("reports", keyward.ReadOnly))
	active := newKey(k.ns, "active", "billing")
	scoped := newKey(k.ns, "scoped", "billing", func(a *keyward.AccessKey) { a.Spec.Scopes = []keyward.Scope{sc("reports", keyward.ReadOnly)} })
	networked := newKey(k.ns, "networked", "billing", func(a *keyward.AccessKey) {
		a.Spec.AllowedNetworks = []string{"198.51.100.0/24", "2001:db8:42::/48"}
	})
	inactive := newKey(k.ns, "inactive", "billing")
	expired := newKey(k.ns, "expired", "billing", func(a *keyward.AccessKey) {
		a.Spec.ExpiresAt = keyward.NewTimestamp(time.Now().Add(3 * time.Second))
	})
	revoked := newKey(k.ns, "revoked", "billing")
	k.active, k.scoped, k.networked = issued(active), issued(scoped), issued(networked)
	k.inactive, k.expired, k.revoked = issued(inactive), issued(expired), issued(revoked)
	k.activeID = get(active).Status.KeyID

	update(inactive, func(a *keyward.AccessKey) { a.Spec.State = keyward.StateInactive })
	update(revoked, func(a *keyward.AccessKey) { a.Spec.Revoked = true })
	eventuallyPhase(inactive, keyward.PhaseInactive)
	eventuallyPhase(revoked, keyward.PhaseRevoked)
	eventuallyPhase(expired, keyward.PhaseExpired)

	off := newTenant(true)
	newApp(off, "billing", "")
	disabled := newKey(off, "disabled", "billing")
	k.disabled = issued(disabled)
	update(&keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: off, Name: keyward.TenantSettingsName}},
		func(t *keyward.TenantSettings) { t.Spec.APIKeysEnabled = ptr.To(false) })
	eventuallyPhase(disabled, keyward.PhasePending)

	u, _ := keyformat.Generate()
	k.unknown = u.Plaintext()
	k.malformed = k.active[:len(k.active)-3] + "zzz"
	if k.malformed == k.active {
		k.malformed = k.active[:len(k.active)-3] + "yyy"
	}
	return k
}

func get[T client.Object](obj T) T {
	GinkgoHelper()
	Expect(k8s.Get(ctx, client.ObjectKeyFromObject(obj), obj)).To(Succeed())
	return obj
}

var _ = Describe("Verification of keys issued by the controllers", Ordered, func() {
	var k keys
	BeforeAll(func() { k = setupKeys() })

	type row struct {
		key, ip, scope, method string
		reason                 verify.Reason
		status                 int
	}
	rows := func() map[string]row {
		return map[string]row{
			"active":                  {key: k.active, reason: verify.ReasonOK, status: 200},
			"malformed":               {key: k.malformed, reason: verify.ReasonMalformed, status: 401},
			"unknown":                 {key: k.unknown, reason: verify.ReasonUnknown, status: 401},
			"inactive":                {key: k.inactive, reason: verify.ReasonInactive, status: 401},
			"expired":                 {key: k.expired, reason: verify.ReasonExpired, status: 401},
			"revoked":                 {key: k.revoked, reason: verify.ReasonRevoked, status: 401},
			"tenant disabled":         {key: k.disabled, reason: verify.ReasonTenantDisabled, status: 401},
			"network allowed (IPv4)":  {key: k.networked, ip: "198.51.100.9", reason: verify.ReasonOK, status: 200},
			"network allowed (IPv6)":  {key: k.networked, ip: "2001:db8:42::9", reason: verify.ReasonOK, status: 200},
			"network not allowed":     {key: k.networked, ip: "203.0.113.9", reason: verify.ReasonNetworkNotAllowed, status: 403},
			"scope read":              {key: k.scoped, scope: "reports", method: "GET", reason: verify.ReasonOK, status: 200},
			"scope write not allowed": {key: k.scoped, scope: "reports", method: "POST", reason: verify.ReasonScopeNotAllowed, status: 403},
			"scope not granted":       {key: k.scoped, scope: "orders", method: "GET", reason: verify.ReasonScopeNotAllowed, status: 403},
		}
	}
	ipOf := func(r row) string {
		if r.ip != "" {
			return r.ip
		}
		return nextClientIP()
	}

	It("answers every reason through POST /v1/verify", func() {
		for name, r := range rows() {
			access := verify.AccessForMethod(r.method)
			res := verifyJSON(verify.VerifyRequest{Key: r.key, SourceIP: ipOf(r), Scope: r.scope, Access: access})
			Expect(res.Reason).To(Equal(r.reason), name)
			Expect(res.Valid).To(Equal(r.reason == verify.ReasonOK), name)
		}
		res := verifyJSON(verify.VerifyRequest{Key: k.active, SourceIP: nextClientIP()})
		Expect(res.Namespace).To(Equal(k.ns))
		Expect(res.Application).To(Equal("billing"))
		Expect(res.Group).To(Equal("Administrators"))
		Expect(res.Team).To(Equal("payments"))
		Expect(res.Owner).To(Equal("alice"))
		Expect(res.KeyID).To(Equal(k.activeID))
		Expect(res.Scopes).To(ConsistOf(sc("orders", keyward.ReadWrite), sc("reports", keyward.ReadOnly)))
	})

	It("answers every reason through GET /v1/auth with 200, 401 or 403", func() {
		for name, r := range rows() {
			var hdr []string
			if r.scope != "" {
				hdr = []string{verify.HeaderScope, r.scope, verify.HeaderForwardedMethod, r.method}
			}
			a := auth(r.key, ipOf(r), hdr...)
			Expect(a.Status).To(Equal(r.status), name)
			Expect(a.Reason).To(Equal(string(r.reason)), name)
			if r.status == http.StatusUnauthorized {
				Expect(a.Header.Get("WWW-Authenticate")).To(HavePrefix("Bearer"), name)
			}
		}
		a := auth(k.active, nextClientIP())
		Expect(a.Header.Get(verify.HeaderNamespace)).To(Equal(k.ns))
		Expect(a.Header.Get(verify.HeaderApplication)).To(Equal("billing"))
		Expect(a.Header.Get(verify.HeaderGroup)).To(Equal("Administrators"))
		Expect(a.Header.Get(verify.HeaderTeam)).To(Equal("payments"))
		Expect(a.Header.Get(verify.HeaderOwner)).To(Equal("alice"))
		Expect(a.Header.Get(verify.HeaderKeyID)).To(Equal(k.activeID))
		Expect(a.Header.Get(verify.HeaderScopes)).To(Equal("orders:ReadWrite,reports:ReadOnly"))
		Expect(auth("", nextClientIP()).Status).To(Equal(http.StatusUnauthorized))
	})

	It("answers every reason through Envoy ext_authz gRPC Check", func() {
		for name, r := range rows() {
			method := r.method
			if method == "" {
				method = "GET"
			}
			var hdr []string
			if r.scope != "" {
				hdr = []string{verify.HeaderScope, r.scope}
			}
			resp := check(r.key, ipOf(r), method, "/api/x", hdr...)
			Expect(grpcStatus(resp)).To(Equal(r.status), name)
			Expect(grpcHeader(resp, verify.HeaderReason)).To(Or(Equal(string(r.reason)), BeEmpty()), name)
		}
		resp := check(k.active, nextClientIP(), "GET", "/api/x?scope=orders")
		Expect(grpcStatus(resp)).To(Equal(200))
		Expect(grpcHeader(resp, verify.HeaderNamespace)).To(Equal(k.ns))
		Expect(grpcHeader(resp, verify.HeaderKeyID)).To(Equal(k.activeID))
		Expect(grpcHeader(resp, verify.HeaderGroup)).To(Equal("Administrators"))
		Expect(resp.GetOkResponse().GetHeadersToRemove()).To(ContainElement("authorization"), "the key does not reach the upstream")
		denied := check(k.unknown, nextClientIP(), "GET", "/")
		Expect(grpcHeader(denied, "WWW-Authenticate")).To(HavePrefix("Bearer"))
	})

	It("rate limits guesses from one client address through HTTP and gRPC, with Retry-After, never a real key", func() {
		ip := "203.0.113.77"
		for i := 0; i < failureBurst; i++ {
			Expect(auth(k.unknown, ip).Status).To(Equal(http.StatusUnauthorized))
		}
		a := auth(k.unknown, ip)
		Expect(a.Status).To(Equal(http.StatusTooManyRequests))
		Expect(a.Reason).To(Equal(string(verify.ReasonRateLimited)))
		Expect(a.Header.Get("Retry-After")).NotTo(BeEmpty())
		Expect(verifyJSON(verify.VerifyRequest{Key: k.unknown, SourceIP: ip}).Reason).To(Equal(verify.ReasonRateLimited))
		resp := check(k.unknown, ip, "GET", "/")
		Expect(grpcStatus(resp)).To(Equal(http.StatusTooManyRequests))
		Expect(grpcHeader(resp, "Retry-After")).NotTo(BeEmpty())
		// Every client behind one gateway or NAT shares its address: one
		// client's guesses never lock out another's real key.
		Expect(auth(k.active, ip).Status).To(Equal(http.StatusOK), "a real key from the blocked address")
		Expect(verifyJSON(verify.VerifyRequest{Key: k.active, SourceIP: ip}).Reason).To(Equal(verify.ReasonOK))
		Expect(grpcStatus(check(k.active, ip, "GET", "/"))).To(Equal(http.StatusOK))
		Expect(auth(k.active, nextClientIP()).Status).To(Equal(http.StatusOK), "other clients are not affected")
	})

	It("refuses a key the instant it expires, not when the controller notices", func() {
		key := newKey(k.ns, "short", "billing", func(a *keyward.AccessKey) {
			a.Spec.ExpiresAt = keyward.NewTimestamp(time.Now().Add(3 * time.Second))
		})
		plain := issued(key)
		expiresAt := get(key).Status.ExpiresAt.Time
		Expect(auth(plain, nextClientIP()).Status).To(Equal(http.StatusOK))
		Eventually(func() int { return auth(plain, nextClientIP()).Status }, timeout, 10*time.Millisecond).Should(Equal(http.StatusUnauthorized))
		refused := time.Now()
		Expect(refused).To(BeTemporally(">=", expiresAt), "not refused before its expiry")
		Expect(refused.Sub(expiresAt)).To(BeNumerically("<", 500*time.Millisecond))
		AddReportEntry("expired key refused after its expiresAt", refused.Sub(expiresAt).String())
	})
})

var _ = Describe("How fast a change reaches the verifier", Ordered, func() {
	var ns string
	BeforeAll(func() {
		ns = newTenant(true)
		newApp(ns, "billing", "")
	})

	// seen measures the time from the write returning until the verifier's
	// answer for key changes to want.
	seen := func(plain string, want int, write func()) time.Duration {
		GinkgoHelper()
		write()
		start := time.Now()
		Eventually(func() int { return auth(plain, nextClientIP()).Status }, 5*time.Second, 5*time.Millisecond).Should(Equal(want))
		return time.Since(start)
	}

	It("revocation, deactivation, reactivation and a switched-off tenant take effect within 1 s", func() {
		a := newKey(ns, "rev", "billing")
		b := newKey(ns, "deact", "billing")
		pa, pb := issued(a), issued(b)
		Expect(auth(pa, nextClientIP()).Status).To(Equal(200))
		d := seen(pa, 401, func() { update(a, func(k *keyward.AccessKey) { k.Spec.Revoked = true }) })
		Expect(d).To(BeNumerically("<", time.Second))
		AddReportEntry("revocation seen by the verifier after", d.String())
		d = seen(pb, 401, func() { update(b, func(k *keyward.AccessKey) { k.Spec.State = keyward.StateInactive }) })
		Expect(d).To(BeNumerically("<", time.Second))
		AddReportEntry("deactivation seen after", d.String())
		d = seen(pb, 200, func() { update(b, func(k *keyward.AccessKey) { k.Spec.State = keyward.StateActive }) })
		Expect(d).To(BeNumerically("<", time.Second))
		AddReportEntry("reactivation (same key) seen after", d.String())
		d = seen(pb, 401, func() {
			update(&keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: keyward.TenantSettingsName}},
				func(t *keyward.TenantSettings) { t.Spec.APIKeysEnabled = ptr.To(false) })
		})
		Expect(d).To(BeNumerically("<", time.Second))
		AddReportEntry("tenant switched off seen after", d.String())
		Expect(auth(pb, nextClientIP()).Reason).To(Equal(string(verify.ReasonTenantDisabled)))
		update(&keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: keyward.TenantSettingsName}},
			func(t *keyward.TenantSettings) { t.Spec.APIKeysEnabled = ptr.To(true) })
		Eventually(func() int { return auth(pb, nextClientIP()).Status }, timeout, interval).Should(Equal(200), "switching on restores the key")
	})

	It("a rotation with gracePeriod 0s (a leaked key): the old key stops within 1 s, the new one verifies", func() {
		a := newKey(ns, "rot", "billing", func(k *keyward.AccessKey) {
			k.Spec.Rotation = &keyward.RotationSpec{GracePeriod: keyward.NewDuration(0)}
		})
		old := issued(a)
		d := seen(old, 401, func() {
			update(a, func(k *keyward.AccessKey) {
				if k.Annotations == nil {
					k.Annotations = map[string]string{}
				}
				k.Annotations[keyward.RotateAnnotation] = "1"
			})
		})
		Expect(d).To(BeNumerically("<", time.Second))
		AddReportEntry("rotation: old key refused after", d.String())
		Expect(auth(old, nextClientIP()).Reason).To(Equal(string(verify.ReasonUnknown)))
		fresh := material(get(a))
		Expect(fresh).NotTo(Equal(old))
		Expect(auth(fresh, nextClientIP()).Status).To(Equal(200))
	})

	It("a rotation with a grace period: the previous key verifies until validUntil and not a second longer", func() {
		a := newKey(ns, "grace", "billing", func(k *keyward.AccessKey) {
			k.Spec.Rotation = &keyward.RotationSpec{GracePeriod: keyward.NewDuration(3 * time.Second)}
		})
		old := issued(a)
		update(a, func(k *keyward.AccessKey) {
			k.Annotations = map[string]string{keyward.RotateAnnotation: "r1"}
		})
		var until time.Time
		Eventually(func(g Gomega) {
			cur := get(a)
			g.Expect(cur.Status.PreviousKey).NotTo(BeNil())
			until = cur.Status.PreviousKey.ValidUntil.Time
		}, timeout, interval).Should(Succeed())
		fresh := material(get(a))
		Expect(auth(fresh, nextClientIP()).Status).To(Equal(200))
		Expect(time.Now()).To(BeTemporally("<", until.Add(-500*time.Millisecond)), "the test needs time before validUntil")
		Expect(auth(old, nextClientIP()).Status).To(Equal(200), "the previous key verifies during the grace period")
		Eventually(func() int { return auth(old, nextClientIP()).Status }, timeout, 10*time.Millisecond).Should(Equal(401))
		stopped := time.Now()
		Expect(stopped).To(BeTemporally(">=", until.Add(-50*time.Millisecond)), "refused only at validUntil")
		Expect(stopped.Sub(until)).To(BeNumerically("<", time.Second), "and not a second longer")
		AddReportEntry("previous key refused after validUntil", stopped.Sub(until).String())
		Expect(auth(fresh, nextClientIP()).Status).To(Equal(200))
	})

	It("a changed group changes the identity at once", func() {
		a := newKey(ns, "grp", "billing")
		p := issued(a)
		Expect(auth(p, nextClientIP()).Header.Get(verify.HeaderGroup)).To(Equal(keyward.DefaultGroup))
		update(&keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "billing"}},
			func(app *keyward.Application) { app.Spec.Group = "Administrators" })
		Eventually(func() string { return auth(p, nextClientIP()).Header.Get(verify.HeaderGroup) }, time.Second, 10*time.Millisecond).
			Should(Equal("Administrators"))
	})
})

var _ = Describe("Usage made visible", Ordered, func() {
	var ns string
	BeforeAll(func() {
		ns = newTenant(true)
		newApp(ns, "billing", "")
	})

	It("writes status.lastUsedAt once per granularity, as its own field manager, never backwards", func() {
		a := newKey(ns, "used", "billing")
		p := issued(a)
		Expect(get(a).Status.LastUsedAt).To(BeNil())
		before := time.Now().Truncate(time.Second)
		Expect(auth(p, nextClientIP()).Status).To(Equal(200))
		var first metav1.Time
		Eventually(func(g Gomega) {
			cur := get(a)
			g.Expect(cur.Status.LastUsedAt).NotTo(BeNil())
			first = *cur.Status.LastUsedAt
		}, timeout, interval).Should(Succeed())
		Expect(first.Time).To(BeTemporally(">=", before))
		cur := get(a)
		var managers []string
		for _, mf := range cur.ManagedFields {
			if mf.Manager == verify.LastUsedFieldManager {
				managers = append(managers, mf.FieldsV1.GetRawString())
			}
		}
		Expect(managers).To(HaveLen(1))
		Expect(managers[0]).To(Equal(`{"f:status":{"f:lastUsedAt":{}}}`), "the verifier writes lastUsedAt alone")
		// Used again within the granularity (1h): not written again.
		for i := 0; i < 3; i++ {
			Expect(auth(p, nextClientIP()).Status).To(Equal(200))
		}
		Consistently(func() time.Time { return get(a).Status.LastUsedAt.Time }, 1500*time.Millisecond, 100*time.Millisecond).
			Should(Equal(first.Time))
		// The controller's own status writes leave it alone: deactivate and reactivate.
		update(a, func(k *keyward.AccessKey) { k.Spec.State = keyward.StateInactive })
		eventuallyPhase(a, keyward.PhaseInactive)
		Expect(get(a).Status.LastUsedAt.Time).To(Equal(first.Time))
	})

	It("shows heavy use: a HeavyUse Warning Event (once) and the heavy-use gauge", func() {
		a := newKey(ns, "heavy", "billing")
		p := issued(a)
		for i := 0; i < heavyUseThreshold+5; i++ {
			Expect(auth(p, nextClientIP()).Status).To(Equal(200))
		}
		Eventually(func() []string { return warningReasons(a) }, timeout, interval).Should(ContainElement(verify.EventHeavyUse))
		Eventually(func() float64 { return gauge(verify.MetricKeyHeavyUse, ns, "heavy") }, timeout, interval).Should(Equal(1.0))
		for i := 0; i < heavyUseThreshold; i++ {
			Expect(auth(p, nextClientIP()).Status).To(Equal(200))
		}
		Consistently(func() int { return count(warningReasons(a), verify.EventHeavyUse) }, time.Second, 100*time.Millisecond).
			Should(Equal(1), "at most one HeavyUse Event per key per hour")
	})

	It("counts verifications and keys in Prometheus metrics", func() {
		a := newKey(ns, "counted", "billing", func(k *keyward.AccessKey) {
			k.Spec.ExpiresAt = keyward.NewTimestamp(time.Now().Add(240 * time.Hour))
		})
		p := issued(a)
		before := counter(verify.MetricRequests, map[string]string{"namespace": ns, "application": "billing", "result": "ok"})
		Expect(auth(p, nextClientIP()).Status).To(Equal(200))
		Expect(counter(verify.MetricRequests, map[string]string{"namespace": ns, "application": "billing", "result": "ok"})).To(Equal(before + 1))
		unknown, _ := keyformat.Generate()
		unknownBefore := counter(verify.MetricRequests, map[string]string{"namespace": "", "application": "", "result": "unknown"})
		Expect(auth(unknown.Plaintext(), nextClientIP()).Status).To(Equal(401))
		Expect(counter(verify.MetricRequests, map[string]string{"namespace": "", "application": "", "result": "unknown"})).To(Equal(unknownBefore + 1))
		Eventually(func() float64 {
			return gaugeLabels(verify.MetricAccessKeys, map[string]string{"namespace": ns, "application": "billing", "phase": "Active"})
		}, timeout, interval).Should(BeNumerically(">=", 1))
		Expect(gaugeLabels(verify.MetricKeyExpiry, map[string]string{"namespace": ns, "name": "counted"})).
			To(Equal(float64(get(a).Status.ExpiresAt.Unix())))
		families, err := metrics.Registry.Gather()
		Expect(err).NotTo(HaveOccurred())
		found := false
		for _, f := range families {
			if f.GetName() == verify.MetricDuration {
				found = f.GetMetric()[0].GetHistogram().GetSampleCount() > 0
			}
		}
		Expect(found).To(BeTrue(), "duration histogram observed")
	})

	It("is ready only once its caches are synced", func() {
		Expect(vf.HTTP.ListenAddr()).NotTo(BeNil())
		Expect(vf.Ready(nil)).To(Succeed())
	})
})

func warningReasons(obj client.Object) []string {
	var list corev1.EventList
	if err := k8s.List(ctx, &list, client.InNamespace(obj.GetNamespace())); err != nil {
		return nil
	}
	var out []string
	for _, e := range list.Items {
		if e.InvolvedObject.Name == obj.GetName() && e.Type == corev1.EventTypeWarning {
			out = append(out, e.Reason)
		}
	}
	return out
}

func count(list []string, s string) int {
	n := 0
	for _, x := range list {
		if x == s {
			n++
		}
	}
	return n
}

func metricValue(name string, labels map[string]string, read func(*dto.Metric) float64) float64 {
	families, err := metrics.Registry.Gather()
	Expect(err).NotTo(HaveOccurred())
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			return read(m)
		}
	}
	return 0
}

func counter(name string, labels map[string]string) float64 {
	return metricValue(name, labels, func(m *dto.Metric) float64 { return m.GetCounter().GetValue() })
}

func gaugeLabels(name string, labels map[string]string) float64 {
	return metricValue(name, labels, func(m *dto.Metric) float64 { return m.GetGauge().GetValue() })
}

func gauge(name, ns, key string) float64 {
	return gaugeLabels(name, map[string]string{"namespace": ns, "name": key})
}
