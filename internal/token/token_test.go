package token

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/secrets"
	"keyward.dev/keyward/internal/verify"
	"keyward.dev/keyward/internal/verify/verifytest"
	"keyward.dev/keyward/internal/verify/wire"
)

const testIssuer = "https://keyward.example"

func TestExpiry(t *testing.T) {
	m := verifytest.MustKey(t)
	prev := verifytest.MustKey(t)
	ttl := 15 * time.Minute
	now := verifytest.T0.Add(500 * time.Millisecond)
	for _, tc := range []struct {
		name   string
		keyID  string
		mutate func(*keyward.AccessKey)
		want   time.Time
	}{
		{"ttl, rounded down to the second", m.ID, nil, verifytest.T0.Add(ttl)},
		{"key expires first (status)", m.ID, func(k *keyward.AccessKey) { k.Status.ExpiresAt = verifytest.At(5 * time.Minute) }, verifytest.T0.Add(5 * time.Minute)},
		{"key expires first (spec moved earlier)", m.ID, func(k *keyward.AccessKey) {
			k.Status.ExpiresAt = verifytest.At(time.Hour)
			k.Spec.ExpiresAt = keyward.NewTimestamp(verifytest.T0.Add(3 * time.Minute))
		}, verifytest.T0.Add(3 * time.Minute)},
		{"key expires after the ttl", m.ID, func(k *keyward.AccessKey) { k.Status.ExpiresAt = verifytest.At(time.Hour) }, verifytest.T0.Add(ttl)},
		{"lifetime limit first", m.ID, func(k *keyward.AccessKey) {
			k.Spec.ExpiresAt = keyward.NewTimestamp(verifytest.T0.Add(time.Hour))
			k.Status.ExpiresAt = verifytest.At(time.Hour)
			k.Status.LifetimeLimit = verifytest.At(7 * time.Minute)
		}, verifytest.T0.Add(7 * time.Minute)},
		{"previous key: grace end first", prev.ID, func(k *keyward.AccessKey) {
			k.Status.PreviousKey = &keyward.PreviousKey{KeyID: prev.ID, ValidUntil: *verifytest.At(2*time.Minute + 700*time.Millisecond)}
		}, verifytest.T0.Add(2 * time.Minute)},
		{"previous key: grace end after the ttl", prev.ID, func(k *keyward.AccessKey) {
			k.Status.PreviousKey = &keyward.PreviousKey{KeyID: prev.ID, ValidUntil: *verifytest.At(time.Hour)}
		}, verifytest.T0.Add(ttl)},
		{"current key: the grace end does not apply", m.ID, func(k *keyward.AccessKey) {
			k.Status.PreviousKey = &keyward.PreviousKey{KeyID: prev.ID, ValidUntil: *verifytest.At(time.Minute)}
		}, verifytest.T0.Add(ttl)},
		{"previous key and key expiry: the earlier", prev.ID, func(k *keyward.AccessKey) {
			k.Status.ExpiresAt = verifytest.At(time.Minute)
			k.Status.PreviousKey = &keyward.PreviousKey{KeyID: prev.ID, ValidUntil: *verifytest.At(2 * time.Minute)}
		}, verifytest.T0.Add(time.Minute)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := verifytest.IssuedKey(m)
			if tc.mutate != nil {
				tc.mutate(k)
			}
			if got := Expiry(now, ttl, tc.keyID, k); !got.Equal(tc.want) {
				t.Errorf("expiry %s, want %s", got, tc.want)
			}
		})
	}
}

func TestNewClaims(t *testing.T) {
	m := verifytest.MustKey(t)
	k := verifytest.IssuedKey(m)
	res := verify.Result{Valid: true, Reason: verify.ReasonOK, KeyID: m.ID, Namespace: "t", Name: "k1", Application: "billing",
		Group: "Developers", Team: "payments", Owner: "alice"}
	now := verifytest.T0.Add(300 * time.Millisecond)
	c, ok := NewClaims(testIssuer, time.Minute, now, res, k, []keyward.Scope{verifytest.Scope("orders", keyward.ReadOnly)}, "jti-1")
	if !ok {
		t.Fatal("no claims")
	}
	want := map[string]any{"iss": testIssuer, "sub": "t/k1", "aud": testIssuer + "/namespaces/t", "iat": float64(verifytest.T0.Unix()), "nbf": float64(verifytest.T0.Unix()),
		"exp": float64(verifytest.T0.Add(time.Minute).Unix()), "jti": "jti-1", "scope": "orders:ReadOnly", "namespace": "t",
		"application": "billing", "group": "Developers", "team": "payments", "owner": "alice", "key_id": m.ID}
	raw, _ := json.Marshal(c)
	var got map[string]any
	_ = json.Unmarshal(raw, &got)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("claims\n got %v\nwant %v", got, want)
	}
	k.Status.ExpiresAt = verifytest.At(800 * time.Millisecond)
	if _, ok := NewClaims(testIssuer, time.Minute, now, res, k, nil, "jti-2"); ok {
		t.Error("a key expiring within the second gave a token")
	}
}

func TestScopes(t *testing.T) {
	granted := []keyward.Scope{verifytest.Scope("orders", keyward.ReadWrite), verifytest.Scope("reports", keyward.ReadOnly)}
	for _, tc := range []struct {
		param   string
		want    string
		wantErr bool
	}{
		{"", "orders:ReadWrite reports:ReadOnly", false},
		{"  ", "orders:ReadWrite reports:ReadOnly", false},
		{"orders:ReadOnly", "orders:ReadOnly", false},
		{"orders:ReadWrite", "orders:ReadWrite", false},
		{"reports:ReadOnly orders:ReadOnly", "reports:ReadOnly orders:ReadOnly", false},
		{"reports:ReadWrite", "", true}, // widening the access
		{"billing:ReadOnly", "", true},  // a scope not granted
		{"orders", "", true},            // no access
		{"orders:Write", "", true},
		{":ReadOnly", "", true},
		{"orders:ReadOnly orders:ReadWrite", "", true},
	} {
		req, err := ParseScopeParam(tc.param)
		var got []keyward.Scope
		if err == nil {
			got, err = NarrowScopes(granted, req)
		}
		if (err != nil) != tc.wantErr {
			t.Errorf("scope %q: error %v, want error %v", tc.param, err, tc.wantErr)
			continue
		}
		if err == nil && FormatScopeParam(got) != tc.want {
			t.Errorf("scope %q: %q, want %q", tc.param, FormatScopeParam(got), tc.want)
		}
	}
	if got, _ := NarrowScopes(nil, nil); FormatScopeParam(got) != "" {
		t.Errorf("a key without scopes: %q", FormatScopeParam(got))
	}
}

// TestTimeline walks the rotation timeline: a key is published TTL+Margin
// before it signs, and the previous one stays published TTL+Margin after.
func TestTimeline(t *testing.T) {
	s := Schedule{Rotation: 10 * time.Hour, TTL: time.Hour, Margin: 10 * time.Minute}
	h := func(d float64) time.Time { return verifytest.T0.Add(time.Duration(d * float64(time.Hour))) }
	if p := s.Timeline(nil, verifytest.T0); !p.NeedNew || !p.NextSignFrom.Equal(verifytest.T0) {
		t.Fatalf("no keys: %+v", p)
	}
	a := KeyTimes{KID: "a", PublishedAt: verifytest.T0, SignFrom: verifytest.T0}
	check := func(name string, keys []KeyTimes, now time.Time, signer string, published, retired []string, needNew bool, next time.Time) {
		t.Helper()
		p := s.Timeline(keys, now)
		if p.Signer != signer || !reflect.DeepEqual(p.Published, published) || !reflect.DeepEqual(p.Retired, retired) ||
			p.NeedNew != needNew || (needNew && !p.NextSignFrom.Equal(next)) {
			t.Errorf("%s: %+v", name, p)
		}
	}
	check("fresh", []KeyTimes{a}, verifytest.T0, "a", []string{"a"}, nil, false, time.Time{})
	check("just before the next key is due to be published", []KeyTimes{a}, verifytest.T0.Add(10*time.Hour-70*time.Minute-time.Second), "a", []string{"a"}, nil, false, time.Time{})
	check("next key due to be published", []KeyTimes{a}, verifytest.T0.Add(10*time.Hour-70*time.Minute), "a", []string{"a"}, nil, true, h(10))
	check("late: the next key signs TTL+Margin from now", []KeyTimes{a}, h(12), "a", []string{"a"}, nil, true, verifytest.T0.Add(13*time.Hour+10*time.Minute))
	b := KeyTimes{KID: "b", PublishedAt: verifytest.T0.Add(10*time.Hour - 70*time.Minute), SignFrom: h(10)}
	check("b published, a signs", []KeyTimes{b, a}, h(9.9), "a", []string{"a", "b"}, nil, false, time.Time{})
	check("b signs, a still published", []KeyTimes{a, b}, h(10), "b", []string{"a", "b"}, nil, false, time.Time{})
	check("a published until TTL+Margin after b took over", []KeyTimes{a, b}, verifytest.T0.Add(11*time.Hour+10*time.Minute-time.Second), "b", []string{"a", "b"}, nil, false, time.Time{})
	check("a retired", []KeyTimes{a, b}, verifytest.T0.Add(11*time.Hour+10*time.Minute), "b", []string{"b"}, []string{"a"}, false, time.Time{})
	check("c due", []KeyTimes{a, b}, verifytest.T0.Add(20*time.Hour-70*time.Minute), "b", []string{"b"}, []string{"a"}, true, h(20))
}

// fixture serves the token endpoints next to the verification endpoints
// over verifytest's World (keys in every state), with a key ring over a
// fake API client, on loopback.
type fixture struct {
	*verifytest.World
	now    time.Time
	srv    *httptest.Server
	ring   *KeyRing
	issuer *Issuer
	h      *Handler
}

func newFixture(t *testing.T, limiter *verify.Limiter) *fixture {
	t.Helper()
	f := &fixture{World: verifytest.NewWorld(t, verify.KeyIDs), now: verifytest.T0}
	now := func() time.Time { return f.now }
	trusted, err := wire.ParseTrustedProxies("127.0.0.1/32")
	if err != nil {
		t.Fatal(err)
	}
	v := &verify.Verifier{Store: f.Store, Limiter: limiter, Now: now}
	f.ring = newRing(t, fake.NewClientBuilder().WithScheme(testScheme(t)).Build(), now)
	f.issuer, err = NewIssuer(testIssuer+"/", time.Hour, time.Minute, f.ring)
	if err != nil {
		t.Fatal(err)
	}
	f.h = &Handler{Issuer: f.issuer, Verifier: v, Trusted: trusted, Log: logr.Discard(), Now: now}
	mux := http.NewServeMux()
	(&verify.Handler{Verifier: v, Trusted: trusted, Log: logr.Discard()}).Routes(mux)
	f.h.Routes(mux)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

// verify asks POST /v1/verify of the same verifier.
func (f *fixture) verify(t *testing.T, body string) (int, verify.Result) {
	t.Helper()
	resp, err := http.Post(f.srv.URL+verify.PathVerify, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r verify.Result
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			t.Fatalf("answer is not JSON: %v", err)
		}
	}
	return resp.StatusCode, r
}

func testScheme(t *testing.T) *runtime.Scheme {
	s := runtime.NewScheme()
	if err := corev1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func newRing(t *testing.T, c client.Client, now func() time.Time) *KeyRing {
	t.Helper()
	r := &KeyRing{Namespace: "keyward-system", Name: "signing", Reader: c, Writer: c, Log: logr.Discard(), Now: now,
		Schedule: Schedule{Rotation: 10 * time.Hour, TTL: time.Hour, Margin: time.Minute}}
	if err := r.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r
}

func (f *fixture) post(t *testing.T, path string, form url.Values, mutate func(*http.Request)) (*http.Response, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if mutate != nil {
		mutate(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp, body
}

func basic(key string) func(*http.Request) {
	return func(r *http.Request) {
		pk, _ := keyformat.Parse(key)
		r.SetBasicAuth(pk.ID, key)
	}
}

func idOf(key string) string { pk, _ := keyformat.Parse(key); return pk.ID }

func cc(kv ...string) url.Values {
	v := url.Values{"grant_type": {"client_credentials"}}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return v
}

func TestTokenEndpoint(t *testing.T) {
	f := newFixture(t, nil)
	resp, body := f.post(t, PathToken, cc(), basic(f.Active))
	if resp.StatusCode != 200 || body["token_type"] != "Bearer" || body["expires_in"] != float64(3600) ||
		body["scope"] != "orders:ReadWrite reports:ReadOnly" {
		t.Fatalf("issue: %d %v", resp.StatusCode, body)
	}
	if resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("Pragma") != "no-cache" {
		t.Errorf("cache headers %v", resp.Header)
	}
	c, ok := f.issuer.Parse(body["access_token"].(string), f.now)
	if !ok || c.Subject != "t/active" || c.KeyID != idOf(f.Active) || c.Group != "Administrators" || c.Issuer != testIssuer {
		t.Errorf("claims %+v ok=%v", c, ok)
	}
	// client_secret_post, and narrowing.
	resp, body = f.post(t, PathToken, cc("client_id", idOf(f.Active), "client_secret", f.Active, "scope", "reports:ReadOnly"), nil)
	if resp.StatusCode != 200 || body["scope"] != "reports:ReadOnly" {
		t.Errorf("form auth with a narrower scope: %d %v", resp.StatusCode, body)
	}
	// The previous key of a rotation: until the end of its grace period.
	resp, body = f.post(t, PathToken, cc(), basic(f.Previous))
	if resp.StatusCode != 200 || body["expires_in"] != float64(60) {
		t.Errorf("previous key: %d %v", resp.StatusCode, body)
	}

	for _, tc := range []struct {
		name   string
		form   url.Values
		mutate func(*http.Request)
		status int
		err    string
	}{
		{"no grant_type", url.Values{}, basic(f.Active), 400, ErrInvalidRequest},
		{"another grant", cc("grant_type", "password"), basic(f.Active), 400, ErrUnsupportedGrantType},
		{"not a form", cc(), func(r *http.Request) { basic(f.Active)(r); r.Header.Set("Content-Type", "application/json") }, 400, ErrInvalidRequest},
		{"two methods", cc("client_id", idOf(f.Active), "client_secret", f.Active), basic(f.Active), 400, ErrInvalidRequest},
		{"malformed scope", cc("scope", "orders"), basic(f.Active), 400, ErrInvalidScope},
		{"wider scope", cc("scope", "reports:ReadWrite"), basic(f.Active), 400, ErrInvalidScope},
		{"unknown scope", cc("scope", "audit:ReadOnly"), basic(f.Scoped), 400, ErrInvalidScope},
		{"no client", cc(), nil, 401, ErrInvalidClient},
		{"wrong secret", cc(), basic(verifytest.MustKey(t).Plaintext()), 401, ErrInvalidClient},
		{"client_id of another key", cc(), func(r *http.Request) { r.SetBasicAuth(idOf(f.Scoped), f.Active) }, 401, ErrInvalidClient},
		{"malformed key", cc(), func(r *http.Request) { r.SetBasicAuth("x", "kw_nope") }, 401, ErrInvalidClient},
		{"revoked", cc(), basic(f.Revoked), 401, ErrInvalidClient},
		{"inactive", cc(), basic(f.Inactive), 401, ErrInvalidClient},
		{"expired", cc(), basic(f.Expired), 401, ErrInvalidClient},
		{"tenant off", cc(), basic(f.Off), 401, ErrInvalidClient},
		{"outside allowedNetworks", cc(), basic(f.Net), 401, ErrInvalidClient},
		{"another scheme", cc(), func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+f.Active) }, 401, ErrInvalidClient},
	} {
		resp, body := f.post(t, PathToken, tc.form, tc.mutate)
		if resp.StatusCode != tc.status || body["error"] != tc.err {
			t.Errorf("%s: %d %v, want %d %s", tc.name, resp.StatusCode, body, tc.status, tc.err)
		}
		if tc.status == 401 && resp.Header.Get("WWW-Authenticate") != `Basic realm="keyward"` {
			t.Errorf("%s: WWW-Authenticate %q", tc.name, resp.Header.Get("WWW-Authenticate"))
		}
		if resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: Cache-Control %q", tc.name, resp.Header.Get("Cache-Control"))
		}
		if d, _ := body["error_description"].(string); strings.Contains(d, "kw_") || strings.Contains(d, "revoked") ||
			strings.Contains(d, "expired") || strings.Contains(d, "inactive") || strings.Contains(d, "network") {
			t.Errorf("%s: the description tells too much: %q", tc.name, d)
		}
	}
	// The client address comes through the trusted-proxy logic: from the
	// allowed network, the network-bound key gets a token.
	resp, _ = f.post(t, PathToken, cc(), func(r *http.Request) { basic(f.Net)(r); r.Header.Set("X-Forwarded-For", "198.51.100.7") })
	if resp.StatusCode != 200 {
		t.Errorf("network-bound key from its network: %d", resp.StatusCode)
	}
}

func TestTokenRateLimited(t *testing.T) {
	f := newFixture(t, verify.NewLimiter(0.001, 2, 10))
	for i := 0; i < 2; i++ {
		if resp, _ := f.post(t, PathToken, cc(), basic(verifytest.MustKey(t).Plaintext())); resp.StatusCode != 401 {
			t.Fatalf("guess %d: %d", i, resp.StatusCode)
		}
	}
	resp, body := f.post(t, PathToken, cc(), basic(verifytest.MustKey(t).Plaintext()))
	if resp.StatusCode != http.StatusTooManyRequests || body["error"] != ErrSlowDown || resp.Header.Get("Retry-After") == "" {
		t.Errorf("a guess after the burst: %d %v %v", resp.StatusCode, body, resp.Header)
	}
	// A failed exchange also blocks guesses at /v1/verify for that address.
	if code, res := f.verify(t, `{"key":"`+verifytest.MustKey(t).Plaintext()+`"}`); code != 200 || res.Reason != verify.ReasonRateLimited {
		t.Errorf("a guess at /v1/verify after failed exchanges: %d %s", code, res.Reason)
	}
	// A real key is never refused for its address's failures.
	if resp, body := f.post(t, PathToken, cc(), basic(f.Active)); resp.StatusCode != 200 {
		t.Errorf("a real key from the blocked address: %d %v", resp.StatusCode, body["error"])
	}
	if code, res := f.verify(t, `{"key":"`+f.Active+`"}`); code != 200 || res.Reason != verify.ReasonOK {
		t.Errorf("a real key at /v1/verify from the blocked address: %d %s", code, res.Reason)
	}
}

func TestIntrospect(t *testing.T) {
	f := newFixture(t, nil)
	_, body := f.post(t, PathToken, cc("scope", "orders:ReadOnly"), basic(f.Active))
	token := body["access_token"].(string)
	intro := func(caller string) (int, map[string]any) {
		resp, body := f.post(t, PathIntrospect, url.Values{"token": {token}}, basic(caller))
		return resp.StatusCode, body
	}
	if code, body := intro(f.Scoped); code != 200 || body["active"] != true || body["scope"] != "orders:ReadOnly" ||
		body["sub"] != "t/active" || body["key_id"] != idOf(f.Active) || body["namespace"] != "t" {
		t.Fatalf("introspect: %d %v", code, body)
	}
	if code, body := intro(f.Off); code != 401 || body["error"] != ErrInvalidClient {
		t.Errorf("a caller of a disabled tenant: %d %v", code, body)
	}
	if code, _ := intro(verifytest.MustKey(t).Plaintext()); code != 401 {
		t.Errorf("an unknown caller: %d", code)
	}
	if resp, body := f.post(t, PathIntrospect, url.Values{"token": {token[:len(token)-2] + "xx"}}, basic(f.Scoped)); resp.StatusCode != 200 || body["active"] != false {
		t.Errorf("a forged token: %v", body)
	}
	// Deactivate the key that obtained the token: inactive at once.
	k, _ := f.Store.AccessKey(context.Background(), "t", "active")
	k2 := k.DeepCopy()
	k2.Spec.State = keyward.StateInactive
	f.Store.Put(k2)
	if code, body := intro(f.Scoped); code != 200 || len(body) != 1 || body["active"] != false {
		t.Errorf("after deactivation: %d %v", code, body)
	}
	f.Store.Put(k)
	if _, body := intro(f.Scoped); body["active"] != true {
		t.Errorf("after reactivation: %v", body)
	}
	// Past its exp.
	f.now = f.now.Add(time.Hour)
	if _, body := intro(f.Scoped); body["active"] != false {
		t.Errorf("after exp: %v", body)
	}
}

func TestDiscoveryAndJWKS(t *testing.T) {
	f := newFixture(t, nil)
	resp, body := f.get(t, PathDiscovery)
	if resp.StatusCode != 200 || body["issuer"] != testIssuer || body["token_endpoint"] != testIssuer+PathToken ||
		body["jwks_uri"] != testIssuer+PathJWKS || body["introspection_endpoint"] != testIssuer+PathIntrospect ||
		!strings.HasPrefix(resp.Header.Get("Cache-Control"), "public, max-age=") {
		t.Errorf("discovery: %v %v", body, resp.Header)
	}
	resp, err := http.Get(f.srv.URL + PathJWKS)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil || len(set.Keys) != 1 || !set.Keys[0].IsPublic() ||
		set.Keys[0].KeyID == "" || resp.Header.Get("Cache-Control") != "public, max-age=60" {
		t.Errorf("jwks: %v %+v %v", err, set, resp.Header)
	}
}

func (f *fixture) get(t *testing.T, path string) (*http.Response, map[string]any) {
	t.Helper()
	resp, err := http.Get(f.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp, body
}

// TestKeyRingRotation: two replicas share the Secret; tokens signed before,
// during and after a rotation verify against either replica's JWKS until
// their exp.
func TestKeyRingRotation(t *testing.T) {
	c := fake.NewClientBuilder().WithScheme(testScheme(t)).Build()
	now := verifytest.T0
	clock := func() time.Time { return now }
	a, b := newRing(t, c, clock), newRing(t, c, clock)
	tok := func(r *KeyRing) *Issuer { x, _ := NewIssuer(testIssuer, time.Hour, 0, r); return x }
	ta, tb := tok(a), tok(b)
	sign := func(tk *Issuer) (string, string) {
		t.Helper()
		cl := Claims{Issuer: testIssuer, Subject: "t/k", Namespace: "t", KeyID: "x", ID: newJTI()}
		cl.Audience = []string{TenantAudience(testIssuer, "t")}
		cl.IssuedAt, cl.NotBefore, cl.Expiry = numeric(now), numeric(now), numeric(now.Add(time.Hour))
		s, err := tk.Sign(cl, now)
		if err != nil {
			t.Fatal(err)
		}
		return s, tk.Keys.signer(now).KID
	}
	sync := func() {
		t.Helper()
		for _, r := range []*KeyRing{a, b} {
			if err := r.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	type issued struct {
		token string
		exp   time.Time
	}
	var all []issued
	verifyAll := func(when string) {
		t.Helper()
		for _, x := range all {
			for _, tk := range []*Issuer{ta, tb} {
				if _, ok := tk.Parse(x.token, now); ok != now.Before(x.exp) {
					t.Errorf("%s: token valid until %s: verifies %v at %s", when, x.exp, ok, now)
				}
			}
		}
	}
	t1, kid1 := sign(ta)
	if _, kid := sign(tb); kid != kid1 {
		t.Fatalf("replicas sign with %s and %s", kid1, kid)
	}
	all = append(all, issued{t1, now.Add(time.Hour)})
	// Rotation 10h, TTL 1h, margin 1m: the next key is added at 8h59m and signs at 10h.
	now = verifytest.T0.Add(8*time.Hour + 59*time.Minute)
	sync()
	ja, _ := a.JWKS(now)
	jb, _ := b.JWKS(now)
	if len(ja.Keys) != 2 || !reflect.DeepEqual(kids(ja), kids(jb)) {
		t.Fatalf("after publishing the next key: %v %v", kids(ja), kids(jb))
	}
	t2, kid2 := sign(tb)
	if kid2 != kid1 {
		t.Errorf("the new key signs before its time")
	}
	all = append(all, issued{t2, now.Add(time.Hour)})
	verifyAll("published, not signing")
	now = verifytest.T0.Add(10 * time.Hour)
	t3, kid3 := sign(ta)
	if _, k := sign(tb); kid3 == kid1 || k != kid3 {
		t.Errorf("after the switch: %s %s %s", kid1, kid3, k)
	}
	all = append(all, issued{t3, now.Add(time.Hour)})
	verifyAll("just switched")
	now = verifytest.T0.Add(10*time.Hour + 59*time.Minute)
	sync()
	verifyAll("old key still published")
	now = verifytest.T0.Add(11*time.Hour + time.Minute)
	sync()
	ja, _ = a.JWKS(now)
	if len(ja.Keys) != 1 || ja.Keys[0].KeyID != kid3 {
		t.Errorf("the old key was not retired: %v", kids(ja))
	}
	verifyAll("old key retired")
	var sec corev1.Secret
	_ = c.Get(context.Background(), client.ObjectKey{Namespace: "keyward-system", Name: "signing"}, &sec)
	var set SigningKeySet
	_ = json.Unmarshal(sec.Data[SigningSecretKey], &set)
	if len(set.Keys) != 1 || sec.Type != SigningSecretType {
		t.Errorf("the Secret holds %d keys, type %s", len(set.Keys), sec.Type)
	}
	if labels.SelectorFromSet(secrets.ManagedLabels()).Matches(labels.Set(sec.Labels)) {
		t.Errorf("the signing Secret is labelled as an AccessKey's Secret: %v", sec.Labels)
	}
}

func kids(s jose.JSONWebKeySet) []string {
	var out []string
	for _, k := range s.Keys {
		out = append(out, k.KeyID)
	}
	return out
}

func numeric(t time.Time) *jwt.NumericDate { return jwt.NewNumericDate(t) }

// BenchmarkTokenHandler is one exchange through the handler, without the
// network: form, client authentication, claims, ES256 signature, JSON.
func BenchmarkTokenHandler(b *testing.B) {
	m := verifytest.MustKey(b)
	k := verifytest.IssuedKey(m)
	store := verifytest.NewMemStore(verify.KeyIDs, verifytest.App(verifytest.Scope("orders", keyward.ReadWrite)), k,
		&keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: "t", Name: keyward.TenantSettingsName},
			Spec: keyward.TenantSettingsSpec{APIKeysEnabled: ptr.To(true)}})
	s := runtime.NewScheme()
	_ = corev1.AddToScheme(s)
	c := fake.NewClientBuilder().WithScheme(s).Build()
	ring := &KeyRing{Namespace: "n", Name: "s", Reader: c, Writer: c, Log: logr.Discard(), Now: func() time.Time { return verifytest.T0 },
		Schedule: Schedule{Rotation: 10 * time.Hour, TTL: time.Hour, Margin: time.Minute}}
	if err := ring.Sync(context.Background()); err != nil {
		b.Fatal(err)
	}
	tok, _ := NewIssuer(testIssuer, time.Hour, time.Minute, ring)
	h := &Handler{Issuer: tok, Verifier: &verify.Verifier{Store: store, Now: func() time.Time { return verifytest.T0 }}, Log: logr.Discard(),
		Now: func() time.Time { return verifytest.T0 }}
	mux := h.Mux()
	body := cc().Encode()
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, PathToken, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(m.ID, m.Plaintext())
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, req)
		if w.Code != 200 {
			b.Fatal(w.Code, w.Body.String())
		}
	}
}

// TestIntrospectionDecidesLikeVerify: introspection reads the key through
// the verifier's own lookup, so it follows what /v1/verify says: the key's
// Application replaced under the same name, the current group, deletion.
func TestIntrospectionDecidesLikeVerify(t *testing.T) {
	f := newFixture(t, nil)
	_, body := f.post(t, PathToken, cc(), basic(f.Active))
	token := body["access_token"].(string)
	intro := func() map[string]any {
		t.Helper()
		_, body := f.post(t, PathIntrospect, url.Values{"token": {token}}, basic(f.Scoped))
		return body
	}
	if b := intro(); b["active"] != true || b["group"] != "Administrators" || b["aud"] != testIssuer+"/namespaces/t" {
		t.Fatalf("introspect: %v", b)
	}
	ctx := context.Background()
	orig, _ := f.Store.Application(ctx, "t", "billing")

	regrouped := orig.DeepCopy()
	regrouped.Spec.Group = "Developers"
	f.Store.Put(regrouped)
	if b := intro(); b["active"] != true || b["group"] != "Developers" {
		t.Fatalf("after the group changed: %v", b)
	}

	// The key is tied to the Application's UID; one created again under
	// the same name is not its Application.
	k, _ := f.Store.AccessKey(ctx, "t", "active")
	tied := k.DeepCopy()
	tied.OwnerReferences = []metav1.OwnerReference{{APIVersion: keyward.GroupVersion.String(), Kind: "Application", Name: "billing", UID: "old-uid"}}
	f.Store.Put(tied)
	if code, res := f.verify(t, `{"key":"`+f.Active+`"}`); code != 200 || res.Reason != verify.ReasonInactive {
		t.Fatalf("/v1/verify with the Application replaced: %d %s", code, res.Reason)
	}
	if b := intro(); b["active"] != false {
		t.Fatalf("introspection with the Application replaced: %v", b)
	}
	f.Store.Put(k)
	if b := intro(); b["active"] != true {
		t.Fatalf("restored: %v", b)
	}
	deleting := k.DeepCopy()
	deleting.DeletionTimestamp = &metav1.Time{Time: verifytest.T0}
	deleting.Finalizers = []string{"example.com/hold"}
	f.Store.Put(deleting)
	if b := intro(); b["active"] != false {
		t.Fatalf("introspection of a key being deleted: %v", b)
	}
	if resp, body := f.post(t, PathToken, cc(), basic(f.Active)); resp.StatusCode != 401 || body["error"] != ErrInvalidClient {
		t.Fatalf("a token for a key being deleted: %d %v", resp.StatusCode, body)
	}
}

// TestLegacyScopeNameIsNeverInAToken: a scope name stored before the CRD
// refused it ("orders:ReadWrite x" would read as orders:ReadWrite in the
// claim) is left out of the token's scopes; the key's other scopes are in.
func TestLegacyScopeNameIsNeverInAToken(t *testing.T) {
	f := newFixture(t, nil)
	app, _ := f.Store.Application(context.Background(), "t", "billing")
	legacy := app.DeepCopy()
	legacy.Spec.Scopes = append(legacy.Spec.Scopes, verifytest.Scope("orders:ReadWrite x", keyward.ReadOnly), verifytest.Scope("a,b", keyward.ReadOnly))
	f.Store.Put(legacy)
	_, body := f.post(t, PathToken, cc(), basic(f.Active))
	if body["scope"] != "orders:ReadWrite reports:ReadOnly" {
		t.Fatalf("token scope %q", body["scope"])
	}
}
