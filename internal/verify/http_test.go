package verify

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
)

// fixture is a verifier over a MemStore with one tenant "t", an Application
// "billing" and keys in every state, served over real HTTP on loopback.
type fixture struct {
	srv                     *httptest.Server
	store                   *MemStore
	active, revoked, scoped string
	inactive, expired       string
	netKey, offKey          string
	prevKey                 string
	now                     time.Time
	h                       *Handler
}

func newFixture(t *testing.T, trusted string, limiter *Limiter) *fixture {
	t.Helper()
	f := &fixture{now: t0}
	app := testApp(scope("orders", keyward.ReadWrite), scope("reports", keyward.ReadOnly))
	app.Spec.Group = "Administrators"
	offApp := testApp()
	offApp.Namespace = "off"
	f.store = NewMemStore(app, offApp,
		&keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: "t", Name: keyward.TenantSettingsName},
			Spec: keyward.TenantSettingsSpec{APIKeysEnabled: ptr.To(true)}},
		&keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: "off", Name: keyward.TenantSettingsName},
			Spec: keyward.TenantSettingsSpec{APIKeysEnabled: ptr.To(false)}})
	add := func(name string, mutate func(*keyward.AccessKey)) string {
		m := mustKey(t)
		k := issuedKey(m)
		k.Name = name
		if mutate != nil {
			mutate(k)
		}
		f.store.Put(k)
		return m.Plaintext()
	}
	f.active = add("active", nil)
	f.revoked = add("revoked", func(k *keyward.AccessKey) { k.Spec.Revoked = true })
	f.inactive = add("inactive", func(k *keyward.AccessKey) { k.Spec.State = keyward.StateInactive })
	f.expired = add("expired", func(k *keyward.AccessKey) { k.Status.ExpiresAt = at(-time.Second) })
	f.netKey = add("net", func(k *keyward.AccessKey) { k.Spec.AllowedNetworks = []string{"198.51.100.0/24"} })
	f.scoped = add("scoped", func(k *keyward.AccessKey) { k.Spec.Scopes = []keyward.Scope{scope("reports", keyward.ReadOnly)} })
	f.offKey = add("off", func(k *keyward.AccessKey) { k.Namespace = "off" })
	prev := mustKey(t)
	add("rotated", func(k *keyward.AccessKey) {
		k.Status.PreviousKey = &keyward.PreviousKey{KeyID: prev.ID, SecretHash: keyformat.HashSecret(prev.Secret), ValidUntil: *at(time.Minute)}
	})
	f.prevKey = prev.Plaintext()
	tp, err := ParseTrustedProxies(trusted)
	if err != nil {
		t.Fatal(err)
	}
	v := &Verifier{Store: f.store, Limiter: limiter, Now: func() time.Time { return f.now }}
	h := &Handler{Verifier: v, Trusted: tp, KeyHeader: "X-Custom-Key", Log: logr.Discard()}
	f.h = h
	f.srv = httptest.NewServer(h.Mux())
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) auth(t *testing.T, path string, hdr map[string]string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, f.srv.URL+path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func (f *fixture) verify(t *testing.T, body string) (int, Result, string) {
	t.Helper()
	resp, err := http.Post(f.srv.URL+PathVerify, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r Result
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("answer is not JSON: %v", err)
		}
	}
	return resp.StatusCode, r, string(b)
}

func bearer(k string) map[string]string { return map[string]string{"Authorization": "Bearer " + k} }

func TestAuthEveryReason(t *testing.T) {
	f := newFixture(t, "", nil)
	malformed := f.active[:len(f.active)-1] + "a"
	if malformed == f.active {
		malformed = f.active[:len(f.active)-1] + "b"
	}
	unknown := mustKey(t).Plaintext()
	cases := []struct {
		name   string
		path   string
		hdr    map[string]string
		status int
		reason Reason
	}{
		{"active, bearer", PathAuth, bearer(f.active), 200, ReasonOK},
		{"active, lower-case scheme", PathAuth, map[string]string{"Authorization": "bearer " + f.active}, 200, ReasonOK},
		{"active, X-API-Key", PathAuth, map[string]string{"X-API-Key": f.active}, 200, ReasonOK},
		{"active, header named by flag", PathAuth, map[string]string{"X-Custom-Key": f.active}, 200, ReasonOK},
		{"previous key in its grace period", PathAuth, bearer(f.prevKey), 200, ReasonOK},
		{"no key", PathAuth, nil, 401, ReasonMalformed},
		{"basic auth is no key", PathAuth, map[string]string{"Authorization": "Basic Zm9vOmJhcg=="}, 401, ReasonMalformed},
		{"malformed (checksum)", PathAuth, bearer(malformed), 401, ReasonMalformed},
		{"malformed (shape)", PathAuth, bearer("hello"), 401, ReasonMalformed},
		{"unknown", PathAuth, bearer(unknown), 401, ReasonUnknown},
		{"inactive", PathAuth, bearer(f.inactive), 401, ReasonInactive},
		{"expired", PathAuth, bearer(f.expired), 401, ReasonExpired},
		{"revoked", PathAuth, bearer(f.revoked), 401, ReasonRevoked},
		{"tenant disabled", PathAuth, bearer(f.offKey), 401, ReasonTenantDisabled},
		{"network not allowed (peer 127.0.0.1)", PathAuth, bearer(f.netKey), 403, ReasonNetworkNotAllowed},
		{"scope not allowed (query)", PathAuth + "?scope=orders", bearer(f.scoped), 403, ReasonScopeNotAllowed},
		{"scope allowed (header)", PathAuth, map[string]string{"Authorization": "Bearer " + f.scoped, HeaderScope: "reports"}, 200, ReasonOK},
		{"write derived from X-Forwarded-Method", PathAuth + "?scope=reports", map[string]string{"Authorization": "Bearer " + f.scoped, HeaderForwardedMethod: "POST"}, 403, ReasonScopeNotAllowed},
		{"write derived from X-Original-Method", PathAuth + "?scope=reports", map[string]string{"Authorization": "Bearer " + f.scoped, HeaderOriginalMethod: "DELETE"}, 403, ReasonScopeNotAllowed},
		{"read derived from HEAD", PathAuth + "?scope=reports", map[string]string{"Authorization": "Bearer " + f.scoped, HeaderForwardedMethod: "HEAD"}, 200, ReasonOK},
		{"explicit access wins over the method", PathAuth + "?scope=orders&access=ReadWrite", map[string]string{"Authorization": "Bearer " + f.active, HeaderForwardedMethod: "GET"}, 200, ReasonOK},
		{"Envoy-style path under /v1/auth/", PathAuth + "/api/orders", bearer(f.active), 200, ReasonOK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := f.auth(t, c.path, c.hdr)
			if resp.StatusCode != c.status || resp.Header.Get(HeaderReason) != string(c.reason) {
				t.Fatalf("status %d reason %q, want %d %q", resp.StatusCode, resp.Header.Get(HeaderReason), c.status, c.reason)
			}
			if c.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer realm=") {
				t.Fatalf("401 without WWW-Authenticate: %q", resp.Header.Get("WWW-Authenticate"))
			}
			if (c.status == 200) != (resp.Header.Get(HeaderNamespace) != "") {
				t.Fatalf("identity headers on status %d: namespace %q", c.status, resp.Header.Get(HeaderNamespace))
			}
		})
	}
	resp := f.auth(t, PathAuth, bearer(f.active))
	want := map[string]string{HeaderNamespace: "t", HeaderApplication: "billing", HeaderGroup: "Administrators", HeaderTeam: "payments",
		HeaderOwner: "alice", HeaderScopes: "orders:ReadWrite,reports:ReadOnly"}
	for h, v := range want {
		if got := resp.Header.Get(h); got != v {
			t.Errorf("%s: %q, want %q", h, got, v)
		}
	}
	if id := resp.Header.Get(HeaderKeyID); id == "" || !strings.Contains(f.active, id) || strings.Contains(id, "_") {
		t.Errorf("key ID header %q", id)
	}
	// Forward-auth gateways pass on only 401 and 403: an access that is no
	// level refuses the key with 403.
	if resp := f.auth(t, PathAuth+"?access=Write", bearer(f.active)); resp.StatusCode != 403 || resp.Header.Get(HeaderReason) != string(ReasonScopeNotAllowed) {
		t.Errorf("bad access: %d %s, want 403 scope_not_allowed", resp.StatusCode, resp.Header.Get(HeaderReason))
	}
}

// TestTraefikForwardAuth sends exactly what Traefik's ForwardAuth middleware
// sends: a GET to the auth address with the client's headers plus
// X-Forwarded-Method, -Proto, -Host, -Uri and -For, from Traefik's address.
func TestTraefikForwardAuth(t *testing.T) {
	f := newFixture(t, "127.0.0.1/32", nil)
	traefik := func(key, method, xff string) *http.Response {
		return f.auth(t, PathAuth+"?scope=reports", map[string]string{
			"Authorization":      "Bearer " + key,
			"X-Forwarded-Method": method,
			"X-Forwarded-Proto":  "https",
			"X-Forwarded-Host":   "api.example.com",
			"X-Forwarded-Uri":    "/reports/2026?x=1",
			"X-Forwarded-For":    xff,
			"Accept-Encoding":    "gzip",
			"User-Agent":         "curl/8",
		})
	}
	if r := traefik(f.scoped, "GET", "198.51.100.7"); r.StatusCode != 200 || r.Header.Get(HeaderOwner) != "alice" {
		t.Fatalf("GET: %d", r.StatusCode)
	}
	if r := traefik(f.scoped, "PUT", "198.51.100.7"); r.StatusCode != 403 {
		t.Fatalf("PUT on a ReadOnly scope: %d, want 403", r.StatusCode)
	}
	// The client address is Traefik's X-Forwarded-For: the network key
	// passes from its network and fails from elsewhere.
	if r := traefik(f.netKey, "GET", "198.51.100.7"); r.StatusCode != 200 {
		t.Fatalf("from an allowed network via a trusted proxy: %d", r.StatusCode)
	}
	if r := traefik(f.netKey, "GET", "198.51.100.7, 203.0.113.1"); r.StatusCode != 403 {
		t.Fatalf("right-most untrusted hop outside the network: %d, want 403", r.StatusCode)
	}
}

func TestAuthRateLimited(t *testing.T) {
	f := newFixture(t, "127.0.0.1/32", NewLimiter(0.001, 3, 100))
	bad := mustKey(t).Plaintext()
	from := func(key, ip string) *http.Response {
		return f.auth(t, PathAuth, map[string]string{"Authorization": "Bearer " + key, "X-Forwarded-For": ip})
	}
	for i := 0; i < 3; i++ {
		if r := from(bad, "192.0.2.50"); r.StatusCode != 401 {
			t.Fatalf("guess %d: %d, want 401", i, r.StatusCode)
		}
	}
	r := from(bad, "192.0.2.50")
	if r.StatusCode != 429 || r.Header.Get("Retry-After") == "" || r.Header.Get(HeaderReason) != string(ReasonRateLimited) {
		t.Fatalf("after the burst: %d, Retry-After %q", r.StatusCode, r.Header.Get("Retry-After"))
	}
	// One client's guesses never lock out a real key behind the same
	// address (a gateway, a NAT): the limiter stands only between guesses
	// and their answer.
	if r := from(f.active, "192.0.2.50"); r.StatusCode != 200 {
		t.Fatalf("a real key from a blocked address: %d, want 200", r.StatusCode)
	}
	if r := from(mustKey(t).Plaintext(), "192.0.2.50"); r.StatusCode != 429 {
		t.Fatalf("another guess from the blocked address: %d, want 429", r.StatusCode)
	}
	if r := from(f.active, "192.0.2.51"); r.StatusCode != 200 {
		t.Fatalf("another client: %d", r.StatusCode)
	}
	// Real but unusable keys are not guesses.
	for i := 0; i < 5; i++ {
		if r := from(f.expired, "192.0.2.52"); r.StatusCode != 401 {
			t.Fatalf("expired key %d: %d", i, r.StatusCode)
		}
	}
	// Requests without a key are not guesses either.
	for i := 0; i < 5; i++ {
		if r := f.auth(t, PathAuth, map[string]string{"X-Forwarded-For": "192.0.2.53"}); r.StatusCode != 401 {
			t.Fatalf("no key %d: %d", i, r.StatusCode)
		}
	}
}

func TestVerifyJSON(t *testing.T) {
	f := newFixture(t, "", nil)
	body := func(m map[string]string) string { b, _ := json.Marshal(m); return string(b) }
	code, r, _ := f.verify(t, body(map[string]string{"key": f.active, "scope": "orders", "access": "ReadWrite"}))
	if code != 200 || !r.Valid || r.Reason != ReasonOK || r.Namespace != "t" || r.Application != "billing" ||
		r.Group != "Administrators" || r.Team != "payments" || r.Owner != "alice" || r.KeyID == "" || len(r.Scopes) != 2 {
		t.Fatalf("ok: %d %+v", code, r)
	}
	// Every reason is a 200.
	for key, want := range map[string]Reason{f.revoked: ReasonRevoked, f.inactive: ReasonInactive, f.expired: ReasonExpired,
		f.offKey: ReasonTenantDisabled, "kw_nope": ReasonMalformed, "": ReasonMalformed, mustKey(t).Plaintext(): ReasonUnknown} {
		code, r, _ := f.verify(t, body(map[string]string{"key": key}))
		if code != 200 || r.Valid || r.Reason != want {
			t.Errorf("want %s: %d valid=%v reason=%s", want, code, r.Valid, r.Reason)
		}
	}
	if _, r, _ := f.verify(t, body(map[string]string{"key": f.netKey, "sourceIP": "198.51.100.9"})); r.Reason != ReasonOK {
		t.Errorf("sourceIP inside the network: %s", r.Reason)
	}
	if _, r, _ := f.verify(t, body(map[string]string{"key": f.netKey, "sourceIP": "::ffff:198.51.100.9"})); r.Reason != ReasonOK {
		t.Errorf("mapped sourceIP inside the network: %s", r.Reason)
	}
	if _, r, _ := f.verify(t, body(map[string]string{"key": f.netKey, "sourceIP": "2001:db8::1"})); r.Reason != ReasonNetworkNotAllowed {
		t.Errorf("sourceIP outside the network: %s", r.Reason)
	}
	if _, r, _ := f.verify(t, body(map[string]string{"key": f.scoped, "scope": "reports", "access": "ReadWrite"})); r.Reason != ReasonScopeNotAllowed {
		t.Errorf("scope: %s", r.Reason)
	}
	// Malformed bodies: 400 (413 when too large) with a message that never quotes the key.
	for name, c := range map[string]struct {
		body string
		code int
		msg  string
	}{
		"not JSON":      {`{"key": "` + f.active, 400, "not valid JSON"},
		"empty":         {``, 400, "empty"},
		"array":         {`[1]`, 400, "must be"},
		"unknown field": {`{"key":"` + f.active + `","clientIP":"1.2.3.4"}`, 400, `unknown field "clientIP"`},
		"wrong type":    {`{"key": 42}`, 400, `field "key" must be a string`},
		"bad access":    {`{"key":"` + f.active + `","access":"Write"}`, 400, "access must be ReadOnly or ReadWrite"},
		"bad sourceIP":  {`{"key":"` + f.active + `","sourceIP":"10.0.0.300"}`, 400, "sourceIP must be"},
		"two objects":   {`{"key":"x"}{"key":"y"}`, 400, "exactly one JSON object"},
		"too large":     {`{"key":"` + strings.Repeat("a", MaxBodyBytes) + `"}`, 413, "larger than"},
	} {
		code, _, msg := f.verify(t, c.body)
		if code != c.code || !strings.Contains(msg, c.msg) || strings.Contains(msg, f.active) {
			t.Errorf("%s: %d %q, want %d containing %q", name, code, msg, c.code, c.msg)
		}
	}
	resp, err := http.Get(f.srv.URL + PathVerify)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET %s: %d, want 405", PathVerify, resp.StatusCode)
	}
	// The answer never carries key material.
	_, _, raw := f.verify(t, body(map[string]string{"key": f.active}))
	if strings.Contains(raw, f.active[len(keyformat.Prefix)+keyformat.IDLen+1:][:keyformat.SecretLen]) {
		t.Error("the answer contains the secret")
	}
}

func TestVerifySourceIPCountsOnlyFromTrustedCallers(t *testing.T) {
	f := newFixture(t, "", NewLimiter(0.001, 2, 100))
	guess := func(ip string) Reason {
		_, r, _ := f.verify(t, `{"key":"`+mustKey(t).Plaintext()+`","sourceIP":"`+ip+`"}`)
		return r.Reason
	}
	// The caller (127.0.0.1) is not a trusted proxy: changing sourceIP does
	// not escape the limit.
	guess("192.0.2.1")
	guess("192.0.2.2")
	if r := guess("192.0.2.3"); r != ReasonRateLimited {
		t.Fatalf("third guess with a new sourceIP: %s, want rate_limited", r)
	}
	g := newFixture(t, "127.0.0.0/8", NewLimiter(0.001, 2, 100))
	f = g
	guess("192.0.2.1")
	guess("192.0.2.1")
	if r := guess("192.0.2.1"); r != ReasonRateLimited {
		t.Fatalf("trusted caller, same sourceIP: %s, want rate_limited", r)
	}
	if r := guess("192.0.2.2"); r != ReasonUnknown {
		t.Fatalf("trusted caller, another sourceIP: %s, want unknown", r)
	}
}

func TestKeyFrom(t *testing.T) {
	h := http.Header{}
	if KeyFrom(h, "") != "" {
		t.Fatal("no key")
	}
	h.Set("X-API-Key", " k1 ")
	h.Set("Authorization", "Bearer   k2")
	if got := KeyFrom(h, ""); got != "k2" {
		t.Fatalf("bearer first: %q", got)
	}
	h.Set("X-Mine", "k3")
	if got := KeyFrom(h, "X-Mine"); got != "k3" {
		t.Fatalf("flag header first: %q", got)
	}
	h.Set("Authorization", "Basic abc")
	if got := KeyFrom(h, ""); got != "k1" {
		t.Fatalf("basic is not a key, X-API-Key is: %q", got)
	}
	for m, want := range map[string]keyward.AccessLevel{"GET": keyward.ReadOnly, "head": keyward.ReadOnly, "OPTIONS": keyward.ReadOnly,
		"POST": keyward.ReadWrite, "PUT": keyward.ReadWrite, "PATCH": keyward.ReadWrite, "DELETE": keyward.ReadWrite} {
		if got := AccessForMethod(m); got != want {
			t.Errorf("%s → %s, want %s", m, got, want)
		}
	}
}

// BenchmarkAuthHandler is /v1/auth without the network: header parsing,
// limiter, lookup, decision, usage, metrics and the answer's headers.
func BenchmarkAuthHandler(b *testing.B) {
	m := mustKey(b)
	k := issuedKey(m)
	app := testApp(scope("orders", keyward.ReadWrite))
	store := NewMemStore(k, app, &keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: "t", Name: keyward.TenantSettingsName},
		Spec: keyward.TenantSettingsSpec{APIKeysEnabled: ptr.To(true)}})
	metrics := NewMetrics(store)
	v := &Verifier{Store: store, Limiter: NewLimiter(1, 20, 1000), Metrics: metrics, Now: time.Now,
		Usage: &Usage{Granularity: time.Hour, Store: store, Log: logr.Discard(), Now: time.Now}}
	h := (&Handler{Verifier: v, Log: logr.Discard()}).Mux()
	req := httptest.NewRequest(http.MethodGet, PathAuth, nil)
	req.Header.Set("Authorization", "Bearer "+m.Plaintext())
	req.Header.Set(HeaderScope, "orders")
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != 200 {
			b.Fatal(w.Code)
		}
	}
}
