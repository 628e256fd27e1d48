package verify_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/serve"
	"keyward.dev/keyward/internal/token"
	"keyward.dev/keyward/internal/verify"
)

// keyIDOf is the client_id of a key: its public ID.
func keyIDOf(key string) string {
	pk, err := keyformat.Parse(key)
	Expect(err).NotTo(HaveOccurred())
	return pk.ID
}

// exchange gets a token with golang.org/x/oauth2's client credentials flow,
// the endpoint taken from the discovery document.
func exchange(provider *oidc.Provider, key string, scopes ...string) (*oauth2.Token, error) {
	cfg := clientcredentials.Config{ClientID: keyIDOf(key), ClientSecret: key, TokenURL: provider.Endpoint().TokenURL,
		Scopes: scopes, AuthStyle: oauth2.AuthStyleInHeader}
	return cfg.Token(fromNewClient())
}

// fromNewClient is a context whose OAuth 2.0 HTTP client speaks for a
// client address of its own (X-Forwarded-For through the trusted loopback
// proxy), so one spec's failures do not rate-limit another's.
func fromNewClient() context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, &http.Client{Timeout: 5 * time.Second, Transport: xff{nextClientIP()}})
}

type xff struct{ ip string }

func (x xff) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Forwarded-For", x.ip)
	return http.DefaultTransport.RoundTrip(r)
}

// claims are Keyward's claims as a relying party reads them.
type claims struct {
	Scope       string `json:"scope"`
	Namespace   string `json:"namespace"`
	Application string `json:"application"`
	Group       string `json:"group"`
	Team        string `json:"team"`
	Owner       string `json:"owner"`
	KeyID       string `json:"key_id"`
	Jti         string `json:"jti"`
	Nbf         int64  `json:"nbf"`
	Iat         int64  `json:"iat"`
}

// introspect calls POST /v1/introspect at base as the caller key.
func introspect(base, caller, jwt string) (int, map[string]any) {
	GinkgoHelper()
	req, err := http.NewRequest(http.MethodPost, base+token.PathIntrospect, strings.NewReader(url.Values{"token": {jwt}}.Encode()))
	Expect(err).NotTo(HaveOccurred())
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(keyIDOf(caller), caller)
	req.Header.Set("X-Forwarded-For", nextClientIP())
	resp, err := httpClient.Do(req)
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	var body map[string]any
	Expect(json.NewDecoder(resp.Body).Decode(&body)).To(Succeed())
	return resp.StatusCode, body
}

var _ = Describe("Access tokens", func() {
	var provider *oidc.Provider

	BeforeEach(func() {
		var err error
		// go-oidc fetches the discovery document from the issuer and
		// requires its issuer to be that URL.
		Eventually(func() error { provider, err = oidc.NewProvider(ctx, issuer); return err }, timeout, interval).Should(Succeed())
	})

	It("exchanges a key from its Secret with a real OAuth 2.0 client; go-oidc verifies the token from discovery alone", func() {
		ns := newTenant(true)
		newApp(ns, "billing", "Administrators", sc("orders", keyward.ReadWrite), sc("reports", keyward.ReadOnly))
		ak := newKey(ns, "tok", "billing")
		key := issued(ak)
		before := counter(token.MetricTokens, map[string]string{"namespace": ns, "application": "billing", "result": "issued"})

		tok, err := exchange(provider, key, "orders:ReadOnly")
		Expect(err).NotTo(HaveOccurred())
		Expect(tok.TokenType).To(Equal("Bearer"))
		Expect(tok.Expiry).To(BeTemporally("~", time.Now().Add(token.DefaultTTL), 2*time.Second))
		Expect(tok.Extra("scope")).To(Equal("orders:ReadOnly"))

		// A relying party in front of one tenant's API pins the tenant
		// by its audience.
		idt, err := provider.Verifier(&oidc.Config{ClientID: token.TenantAudience(issuer, ns)}).Verify(ctx, tok.AccessToken)
		Expect(err).NotTo(HaveOccurred())
		Expect(idt.Issuer).To(Equal(issuer))
		Expect(idt.Subject).To(Equal(ns + "/tok"))
		Expect(idt.Audience).To(Equal([]string{token.TenantAudience(issuer, ns)}))
		_, err = provider.Verifier(&oidc.Config{ClientID: token.TenantAudience(issuer, "another-tenant")}).Verify(ctx, tok.AccessToken)
		Expect(err).To(MatchError(ContainSubstring("audience")), "another tenant's relying party refuses it")
		var c claims
		Expect(idt.Claims(&c)).To(Succeed())
		Expect(c).To(MatchFields(c, ns, keyIDOf(key)))
		Expect(idt.Expiry.Unix() - c.Iat).To(Equal(int64(token.DefaultTTL / time.Second)))

		// The whole key set works too, and a wider scope is refused.
		tok, err = exchange(provider, key)
		Expect(err).NotTo(HaveOccurred())
		Expect(tok.Extra("scope")).To(Equal("orders:ReadWrite reports:ReadOnly"))
		_, err = exchange(provider, key, "reports:ReadWrite")
		var re *oauth2.RetrieveError
		Expect(err).To(BeAssignableToTypeOf(re))
		Expect(err.(*oauth2.RetrieveError).ErrorCode).To(Equal("invalid_scope"))
		// Another key's secret under this key's client_id is invalid_client.
		other, err := keyformat.Generate()
		Expect(err).NotTo(HaveOccurred())
		_, err = (&clientcredentials.Config{ClientID: keyIDOf(key), ClientSecret: other.Plaintext(),
			TokenURL: provider.Endpoint().TokenURL, AuthStyle: oauth2.AuthStyleInHeader}).Token(fromNewClient())
		Expect(err).To(BeAssignableToTypeOf(re))
		Expect(err.(*oauth2.RetrieveError).ErrorCode).To(Equal("invalid_client"))

		Expect(counter(token.MetricTokens, map[string]string{"namespace": ns, "application": "billing", "result": "issued"})).To(Equal(before + 2))
		Expect(counter(token.MetricTokens, map[string]string{"namespace": ns, "application": "billing", "result": "invalid_scope"})).To(BeNumerically(">=", 1))
		// An exchange is a use of the key.
		Eventually(func() *metav1.Time { return get(ak).Status.LastUsedAt }, timeout, interval).ShouldNot(BeNil())
	})

	It("refuses /v1/token and /v1/introspect over plaintext from a client off loopback (RFC 6749 §2.3.1), as the manager wires its handler; /v1/auth still answers", func() {
		ns := newTenant(true)
		newApp(ns, "billing", "")
		key := issued(newKey(ns, "plain", "billing"))
		for _, path := range []string{token.PathToken, token.PathIntrospect} {
			req := httptest.NewRequest(http.MethodPost, "http://verifier"+path, strings.NewReader("grant_type=client_credentials&token=x"))
			req.RemoteAddr = "10.20.30.40:41000"
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth(keyIDOf(key), key)
			rec := httptest.NewRecorder()
			vf.HTTP.Handler.ServeHTTP(rec, req)
			Expect(rec.Code).To(Equal(http.StatusBadRequest), path)
			var e token.OAuthError
			Expect(json.Unmarshal(rec.Body.Bytes(), &e)).To(Succeed())
			Expect(e.Error).To(Equal(token.ErrInvalidRequest), path)
			Expect(e.Description).To(Equal("TLS is required"), path)
		}
		req := httptest.NewRequest(http.MethodGet, "http://verifier"+verify.PathAuth, nil)
		req.RemoteAddr = "10.20.30.40:41000"
		req.Header.Set("Authorization", "Bearer "+key)
		rec := httptest.NewRecorder()
		vf.HTTP.Handler.ServeHTTP(rec, req)
		Expect(rec.Code).To(Equal(http.StatusOK))
	})

	It("caps the token at the key's expiry and refuses unusable keys with invalid_client", func() {
		ns := newTenant(true)
		newApp(ns, "billing", "")
		soon := newKey(ns, "soon", "billing", func(a *keyward.AccessKey) {
			a.Spec.ExpiresAt = keyward.NewTimestamp(time.Now().Add(90 * time.Second))
		})
		key := issued(soon)
		tok, err := exchange(provider, key)
		Expect(err).NotTo(HaveOccurred())
		exp := get(soon).Status.ExpiresAt.Time
		idt, err := provider.Verifier(&oidc.Config{SkipClientIDCheck: true}).Verify(ctx, tok.AccessToken)
		Expect(err).NotTo(HaveOccurred())
		Expect(idt.Expiry).To(BeTemporally("<=", exp))
		Expect(idt.Expiry).To(BeTemporally(">", exp.Add(-time.Second)))

		update(soon, func(a *keyward.AccessKey) { a.Spec.State = keyward.StateInactive })
		Eventually(func() string {
			_, err := exchange(provider, key)
			if re, ok := err.(*oauth2.RetrieveError); ok {
				Expect(re.Response.StatusCode).To(Equal(http.StatusUnauthorized))
				Expect(re.Response.Header.Get("WWW-Authenticate")).To(Equal(`Basic realm="keyward"`))
				return re.ErrorCode
			}
			return ""
		}, timeout, interval).Should(Equal("invalid_client"))
		Expect(counter(token.MetricTokens, map[string]string{"namespace": ns, "application": "billing", "result": "inactive"})).To(BeNumerically(">=", 1))
	})

	It("introspection turns active:false within 1s of deactivation, revocation and deletion; other namespaces see active:false", func() {
		ns := newTenant(true)
		newApp(ns, "billing", "Developers", sc("orders", keyward.ReadWrite))
		holder := newKey(ns, "holder", "billing")
		callerKey := newKey(ns, "caller", "billing")
		key, caller := issued(holder), issued(callerKey)
		other := newTenant(true)
		newApp(other, "billing", "")
		stranger := issued(newKey(other, "stranger", "billing"))

		newToken := func() string {
			tok, err := exchange(provider, key)
			Expect(err).NotTo(HaveOccurred())
			return tok.AccessToken
		}
		signed := newToken()
		code, body := introspect(verifyURL, caller, signed)
		Expect(code).To(Equal(http.StatusOK))
		Expect(body).To(HaveKeyWithValue("active", true))
		Expect(body).To(HaveKeyWithValue("sub", ns+"/holder"))
		Expect(body).To(HaveKeyWithValue("scope", "orders:ReadWrite"))
		Expect(body).To(HaveKeyWithValue("key_id", keyIDOf(key)))
		_, body = introspect(verifyURL, stranger, signed)
		Expect(body).To(Equal(map[string]any{"active": false}), "a token of another namespace")

		inactiveWithin1s := func(what string) {
			GinkgoHelper()
			Eventually(func() any { _, b := introspect(verifyURL, caller, signed); return b["active"] }, time.Second, 20*time.Millisecond).
				Should(Equal(false), what)
		}
		update(holder, func(a *keyward.AccessKey) { a.Spec.State = keyward.StateInactive })
		inactiveWithin1s("deactivation")
		update(holder, func(a *keyward.AccessKey) { a.Spec.State = keyward.StateActive })
		Eventually(func() any { _, b := introspect(verifyURL, caller, signed); return b["active"] }, timeout, interval).Should(Equal(true), "reactivation restores the same key")

		update(holder, func(a *keyward.AccessKey) { a.Spec.Revoked = true })
		inactiveWithin1s("revocation")

		second := issued(newKey(ns, "second", "billing"))
		key = second
		signed = newToken()
		Expect(k8s.Delete(ctx, &keyward.AccessKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "second"}})).To(Succeed())
		inactiveWithin1s("deletion")

		// The tenant switched off: no key of it authenticates any more, the
		// introspecting caller's neither (401 invalid_client).
		third := issued(newKey(ns, "third", "billing"))
		key = third
		signed = newToken()
		update(&keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: keyward.TenantSettingsName}},
			func(t *keyward.TenantSettings) { t.Spec.APIKeysEnabled = ptr.To(false) })
		Eventually(func() int { c, _ := introspect(verifyURL, caller, signed); return c }, time.Second, 20*time.Millisecond).
			Should(Equal(http.StatusUnauthorized), "tenant off")
	})

	It("serves the discovery document and the JWKS with cache headers", func() {
		resp, err := httpClient.Get(issuer + token.PathDiscovery)
		Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		Expect(resp.Header.Get("Cache-Control")).To(HavePrefix("public, max-age="))
		var d token.Discovery
		Expect(json.NewDecoder(resp.Body).Decode(&d)).To(Succeed())
		Expect(d.IntrospectionEndpoint).To(Equal(issuer + token.PathIntrospect))
		Expect(d.GrantTypesSupported).To(Equal([]string{"client_credentials"}))
		resp2, err := httpClient.Get(d.JWKSURI)
		Expect(err).NotTo(HaveOccurred())
		defer resp2.Body.Close()
		Expect(resp2.Header.Get("Cache-Control")).To(Equal("public, max-age=300"))
		var set jose.JSONWebKeySet
		Expect(json.NewDecoder(resp2.Body).Decode(&set)).To(Succeed())
		Expect(set.Keys).NotTo(BeEmpty())
		for _, k := range set.Keys {
			Expect(k.IsPublic()).To(BeTrue())
			Expect(k.Algorithm).To(Equal("ES256"))
		}
	})

	It("rotates the signing key across two replicas: tokens signed before, during and after verify until their exp", func() {
		// Two more replicas (the verifier alone, as on a non-leader) share
		// their own signing Secret; a short schedule drives the rotation.
		const ttl, rotation = 3 * time.Second, 4 * time.Second
		shared := "rotation-" + rand.String(6)
		addrA, addrB := freeLoopbackAddr(), freeLoopbackAddr()
		rissuer := "http://" + addrA
		rctx, rcancel := context.WithCancel(ctx)
		DeferCleanup(func() {
			rcancel()
			// The replicas replaced the key collector: give it back to the suite's manager.
			Expect(vf.Metrics.Register(metrics.Registry)).To(Succeed())
		})
		replica := func(addr string) string {
			m, err := ctrl.NewManager(env.Config, env.ManagerOptions(mgr.GetLogger()))
			Expect(err).NotTo(HaveOccurred())
			o := serve.DefaultOptions()
			o.BindAddress, o.GRPCBindAddress, o.TLS = addr, serve.Off, serve.TLSOff
			o.TokenIssuer, o.TokenTTL, o.TokenSigningRotation = rissuer, ttl, rotation
			o.TokenSigningNamespace, o.TokenSigningSecret = signingNS, shared
			o.TokenSigningRefresh, o.TokenJWKSMaxAge = 100*time.Millisecond, 0
			_, err = serve.SetupWithManager(rctx, m, o)
			Expect(err).NotTo(HaveOccurred())
			go func() { defer GinkgoRecover(); Expect(m.Start(rctx)).To(Succeed()) }()
			return "http://" + addr
		}
		urlA, urlB := replica(addrA), replica(addrB)
		ns := newTenant(true)
		newApp(ns, "billing", "")
		key := issued(newKey(ns, "rot", "billing"))

		var p *oidc.Provider
		Eventually(func() (err error) { p, err = oidc.NewProvider(rctx, rissuer); return err }, timeout, interval).Should(Succeed())
		// Replica B listens only once its caches are synced, too.
		Eventually(func() (int, error) {
			resp, err := http.Get(urlB + token.PathJWKS)
			if err != nil {
				return 0, err
			}
			_ = resp.Body.Close()
			return resp.StatusCode, nil
		}, timeout, interval).Should(Equal(http.StatusOK))
		cfg := &oidc.Config{ClientID: token.TenantAudience(rissuer, ns)}
		verifiers := []*oidc.IDTokenVerifier{
			p.Verifier(cfg), // replica A's JWKS, from discovery
			oidc.NewVerifier(rissuer, oidc.NewRemoteKeySet(rctx, urlB+token.PathJWKS), &oidc.Config{ClientID: token.TenantAudience(rissuer, ns), SupportedSigningAlgs: []string{"ES256"}}),
		}
		type held struct {
			token, kid string
			exp        time.Time
		}
		var (
			mu      sync.Mutex
			tokens  []held
			kids    []string
			checked = map[string]int{} // kid -> verifications after the next kid signed
		)
		fetch := func(base string) held {
			cc := clientcredentials.Config{ClientID: keyIDOf(key), ClientSecret: key, TokenURL: base + token.PathToken, AuthStyle: oauth2.AuthStyleInHeader}
			tok, err := cc.Token(context.WithValue(rctx, oauth2.HTTPClient, &http.Client{Timeout: 5 * time.Second}))
			Expect(err).NotTo(HaveOccurred())
			raw, err := jose.ParseSignedCompact(tok.AccessToken, []jose.SignatureAlgorithm{jose.ES256})
			Expect(err).NotTo(HaveOccurred())
			return held{tok.AccessToken, raw.Signatures[0].Header.KeyID, tok.Expiry}
		}
		Eventually(func() int {
			mu.Lock()
			defer mu.Unlock()
			a, b := fetch(urlA), fetch(urlB)
			tokens = append(tokens, a, b)
			for _, h := range []held{a, b} {
				if len(kids) == 0 || kids[len(kids)-1] != h.kid {
					kids = append(kids, h.kid)
				}
			}
			now := time.Now()
			for _, h := range tokens {
				if h.exp.Sub(now) < 300*time.Millisecond {
					continue // too close to its exp to tell
				}
				for _, v := range verifiers {
					_, err := v.Verify(rctx, h.token)
					Expect(err).NotTo(HaveOccurred(), "a token of kid %s valid until %s at %s", h.kid, h.exp, now)
				}
				if h.kid != kids[len(kids)-1] {
					checked[h.kid]++
				}
			}
			// Both replicas sign with the same key (but at the instant of a switch).
			if a.kid != b.kid {
				Expect(kids[len(kids)-1]).To(Equal(b.kid))
			}
			return len(kids)
		}, 30*time.Second, 200*time.Millisecond).Should(BeNumerically(">=", 3), "three signing keys in turn")
		Expect(checked[kids[0]]).To(BeNumerically(">", 0), "tokens of the first key verified after the second took over")
		Expect(checked[kids[1]]).To(BeNumerically(">", 0), "tokens of the second key verified after the third took over")
		// No kid came back: each key signed one stretch of time.
		seen := map[string]bool{}
		for _, k := range kids {
			Expect(seen[k]).To(BeFalse(), "kids %v", kids)
			seen[k] = true
		}
	})
})

// MatchFields checks Keyward's claims of a token from the "tok" key of the
// first spec.
func MatchFields(c claims, ns, keyID string) OmegaMatcher {
	return Equal(claims{Scope: "orders:ReadOnly", Namespace: ns, Application: "billing", Group: "Administrators",
		Team: "payments", Owner: "alice", KeyID: keyID, Jti: c.Jti, Nbf: c.Iat, Iat: c.Iat})
}

// rememberSigningKeys adds the private part ("d") of every token signing
// key to the keys the leak check looks for.
func rememberSigningKeys() {
	var list corev1.SecretList
	Expect(k8s.List(ctx, &list, client.InNamespace(signingNS))).To(Succeed())
	seenKeys.Lock()
	defer seenKeys.Unlock()
	n := 0
	for _, s := range list.Items {
		if s.Type != token.SigningSecretType {
			continue
		}
		var set token.SigningKeySet
		Expect(json.Unmarshal(s.Data[token.SigningSecretKey], &set)).To(Succeed())
		for _, k := range set.Keys {
			var jwk struct {
				D string `json:"d"`
			}
			Expect(json.Unmarshal(k.Key, &jwk)).To(Succeed())
			Expect(jwk.D).NotTo(BeEmpty())
			seenKeys.keys[jwk.D] = true
			n++
		}
	}
	Expect(n).To(BeNumerically(">", 0), "signing keys to look for")
}
