package verify_test

import (
	"io"
	"net/http"
	"net/url"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/verify"
)

// Changes after issue: editing a key's own allowedNetworks or scopes, or
// its Application's scopes, takes effect at /v1/verify and /v1/auth within
// 1 s of the update returning, whether the change shrinks or grows what the
// key may do.

// asked is one question to the verifier: from a client address, for a
// scope and access level ("" for none).
type asked struct {
	ip     string
	scope  string
	access keyward.AccessLevel
}

// authAsked calls GET /v1/auth with the scope and access in the fixed auth
// URL's query, as the gateway recipes do, and returns the status and the
// reason ("ok" for 200).
func authAsked(key string, q asked) (int, string) {
	GinkgoHelper()
	v := url.Values{}
	if q.scope != "" {
		v.Set(verify.QueryScope, q.scope)
	}
	if q.access != "" {
		v.Set(verify.QueryAccess, string(q.access))
	}
	req, err := http.NewRequest(http.MethodGet, verifyURL+verify.PathAuth+"?"+v.Encode(), nil)
	Expect(err).NotTo(HaveOccurred())
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("X-Forwarded-For", q.ip)
	resp, err := httpClient.Do(req)
	Expect(err).NotTo(HaveOccurred())
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	reason := resp.Header.Get(verify.HeaderReason)
	if resp.StatusCode == http.StatusOK && reason == "" {
		reason = string(verify.ReasonOK)
	}
	return resp.StatusCode, reason
}

// answers expects, within 1 s, both endpoints to give want for every
// question, and reports how long that took after the update.
func answers(what, key string, want map[asked]verify.Reason) {
	GinkgoHelper()
	start := time.Now()
	Eventually(func(g Gomega) {
		for q, reason := range want {
			status, got := authAsked(key, q)
			g.Expect(got).To(Equal(string(reason)), "/v1/auth %+v", q)
			wantStatus := http.StatusOK
			switch reason {
			case verify.ReasonOK:
			case verify.ReasonNetworkNotAllowed, verify.ReasonScopeNotAllowed:
				wantStatus = http.StatusForbidden
			default:
				wantStatus = http.StatusUnauthorized
			}
			g.Expect(status).To(Equal(wantStatus), "/v1/auth %+v", q)
			r := verifyJSON(verify.VerifyRequest{Key: key, SourceIP: q.ip, Scope: q.scope, Access: q.access})
			g.Expect(r.Reason).To(Equal(reason), "/v1/verify %+v", q)
			g.Expect(r.Valid).To(Equal(reason == verify.ReasonOK), "/v1/verify %+v", q)
		}
	}, time.Second, 10*time.Millisecond).Should(Succeed(), what)
	AddReportEntry(what+": seen at both endpoints after", time.Since(start).String())
}

var _ = Describe("Changes to an issued key reach the verifier within 1 s", Ordered, func() {
	const (
		inA  = "198.51.100.7" // in 198.51.100.0/24
		inB  = "203.0.113.7"  // in 203.0.113.0/24
		netA = "198.51.100.0/24"
		netB = "203.0.113.0/24"
	)
	var ns string
	BeforeAll(func() {
		ns = newTenant(true)
		newApp(ns, "wide", "", sc("orders", keyward.ReadWrite), sc("reports", keyward.ReadOnly))
		newApp(ns, "changing", "", sc("orders", keyward.ReadWrite), sc("reports", keyward.ReadOnly))
	})

	It("a key's own allowedNetworks: moved, grown, shrunk and cleared", func() {
		k := newKey(ns, "networked", "wide", func(k *keyward.AccessKey) { k.Spec.AllowedNetworks = []string{netA} })
		p := issued(k)
		a, b := asked{ip: inA}, asked{ip: inB}
		answers("issued with A", p, map[asked]verify.Reason{a: verify.ReasonOK, b: verify.ReasonNetworkNotAllowed})

		update(k, func(k *keyward.AccessKey) { k.Spec.AllowedNetworks = []string{netB} })
		answers("moved to B", p, map[asked]verify.Reason{a: verify.ReasonNetworkNotAllowed, b: verify.ReasonOK})

		update(k, func(k *keyward.AccessKey) { k.Spec.AllowedNetworks = []string{netB, netA} })
		answers("grown to A and B", p, map[asked]verify.Reason{a: verify.ReasonOK, b: verify.ReasonOK})

		update(k, func(k *keyward.AccessKey) { k.Spec.AllowedNetworks = []string{netA} })
		answers("shrunk to A", p, map[asked]verify.Reason{a: verify.ReasonOK, b: verify.ReasonNetworkNotAllowed})

		update(k, func(k *keyward.AccessKey) { k.Spec.AllowedNetworks = nil })
		answers("cleared: every address", p, map[asked]verify.Reason{a: verify.ReasonOK, b: verify.ReasonOK})
	})

	It("a key's own scopes: grown, then shrunk", func() {
		k := newKey(ns, "scoped", "wide", func(k *keyward.AccessKey) {
			k.Spec.Scopes = []keyward.Scope{sc("orders", keyward.ReadOnly)}
		})
		p := issued(k)
		ip := nextClientIP()
		ordersR := asked{ip: ip, scope: "orders", access: keyward.ReadOnly}
		ordersW := asked{ip: ip, scope: "orders", access: keyward.ReadWrite}
		reports := asked{ip: ip, scope: "reports", access: keyward.ReadOnly}
		answers("issued with orders:ReadOnly", p, map[asked]verify.Reason{
			ordersR: verify.ReasonOK, ordersW: verify.ReasonScopeNotAllowed, reports: verify.ReasonScopeNotAllowed})

		update(k, func(k *keyward.AccessKey) {
			k.Spec.Scopes = []keyward.Scope{sc("orders", keyward.ReadWrite), sc("reports", keyward.ReadOnly)}
		})
		answers("grown to orders:ReadWrite and reports", p, map[asked]verify.Reason{
			ordersR: verify.ReasonOK, ordersW: verify.ReasonOK, reports: verify.ReasonOK})

		update(k, func(k *keyward.AccessKey) { k.Spec.Scopes = []keyward.Scope{sc("reports", keyward.ReadOnly)} })
		answers("shrunk to reports", p, map[asked]verify.Reason{
			ordersR: verify.ReasonScopeNotAllowed, ordersW: verify.ReasonScopeNotAllowed, reports: verify.ReasonOK})
		Expect(eventuallyPhase(k, keyward.PhaseActive).Status.Phase).To(Equal(keyward.PhaseActive), "within its Application all along")
	})

	It("its Application's scopes: shrunk, then grown", func() {
		k := newKey(ns, "inherits", "changing") // no scopes of its own: the Application's
		p := issued(k)
		ip := nextClientIP()
		ordersR := asked{ip: ip, scope: "orders", access: keyward.ReadOnly}
		ordersW := asked{ip: ip, scope: "orders", access: keyward.ReadWrite}
		reports := asked{ip: ip, scope: "reports", access: keyward.ReadOnly}
		invoices := asked{ip: ip, scope: "invoices", access: keyward.ReadWrite}
		answers("issued under orders:ReadWrite and reports", p, map[asked]verify.Reason{
			ordersR: verify.ReasonOK, ordersW: verify.ReasonOK, reports: verify.ReasonOK, invoices: verify.ReasonScopeNotAllowed})

		app := &keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "changing"}}
		update(app, func(a *keyward.Application) { a.Spec.Scopes = []keyward.Scope{sc("orders", keyward.ReadOnly)} })
		answers("Application shrunk to orders:ReadOnly", p, map[asked]verify.Reason{
			ordersR: verify.ReasonOK, ordersW: verify.ReasonScopeNotAllowed, reports: verify.ReasonScopeNotAllowed, invoices: verify.ReasonScopeNotAllowed})

		update(app, func(a *keyward.Application) {
			a.Spec.Scopes = []keyward.Scope{sc("orders", keyward.ReadWrite), sc("reports", keyward.ReadOnly), sc("invoices", keyward.ReadWrite)}
		})
		answers("Application grown to orders:ReadWrite, reports and invoices", p, map[asked]verify.Reason{
			ordersR: verify.ReasonOK, ordersW: verify.ReasonOK, reports: verify.ReasonOK, invoices: verify.ReasonOK})
	})
})
