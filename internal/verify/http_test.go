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
	"keyward.dev/keyward/internal/verify/verifytest"
	"keyward.dev/keyward/internal/verify/wire"
)

// fixture is a verifier over verifytest's World (tenants "t" and "off",
// keys in every state), served over real HTTP on loopback.
type fixture struct {
	*verifytest.World
	srv *httptest.Server
	now time.Time
	h   *Handler
}

func newFixture(t *testing.T, trusted string, limiter *Limiter) *fixture {
	t.Helper()
	f := &fixture{World: verifytest.NewWorld(t, KeyIDs), now: verifytest.T0}
	tp, err := wire.ParseTrustedProxies(trusted)
	if err != nil {
		t.Fatal(err)
	}
	v := &Verifier{Store: f.Store, Limiter: limiter, Now: func() time.Time { return f.now }}
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
	malformed := f.Active[:len(f.Active)-1] + "a"
	if malformed == f.Active {
		malformed = f.Active[:len(f.Active)-1] + "b"
	}
	unknown := verifytest.MustKey(t).Plaintext()
	cases := []struct {
		name   string
		path   string
		hdr    map[string]string
		status int
		reason Reason
	}{
		{"active, bearer", PathAuth, bearer(f.Active), 200, ReasonOK},
		{"active, lower-case scheme", PathAuth, map[string]string{"Authorization": "bearer " + f.Active}, 200, ReasonOK},
		{"active, X-API-Key", PathAuth, map[string]string{"X-API-Key": f.Active}, 200, ReasonOK},
		{"active, header named by flag", PathAuth, map[string]string{"X-Custom-Key": f.Active}, 200, ReasonOK},
		{"previous key in its grace period", PathAuth, bearer(f.Previous), 200, ReasonOK},
		{"no key", PathAuth, nil, 401, ReasonMalformed},
		{"basic auth is no key", PathAuth, map[string]string{"Authorization": "Basic Zm9vOmJhcg=="}, 401, ReasonMalformed},
		{"malformed (checksum)", PathAuth, bearer(malformed), 401, ReasonMalformed},
		{"malformed (shape)", PathAuth, bearer("hello"), 401, ReasonMalformed},
		{"unknown", PathAuth, bearer(unknown), 401, ReasonUnknown},
		{"inactive", PathAuth, bearer(f.Inactive), 401, ReasonInactive},
		{"expired", PathAuth, bearer(f.Expired), 401, ReasonExpired},
		{"revoked", PathAuth, bearer(f.Revoked), 401, ReasonRevoked},
		{"tenant disabled", PathAuth, bearer(f.Off), 401, ReasonTenantDisabled},
		{"network not allowed (peer 127.0.0.1)", PathAuth, bearer(f.Net), 403, ReasonNetworkNotAllowed},
		{"scope not allowed (query)", PathAuth + "?scope=orders", bearer(f.Scoped), 403, ReasonScopeNotAllowed},
		{"scope allowed (header)", PathAuth, map[string]string{"Authorization": "Bearer " + f.Scoped, HeaderScope: "reports"}, 200, ReasonOK},
		{"write derived from X-Forwarded-Method", PathAuth + "?scope=reports", map[string]string{"Authorization": "Bearer " + f.Scoped, HeaderForwardedMethod: "POST"}, 403, ReasonScopeNotAllowed},
		{"write derived from X-Original-Method", PathAuth + "?scope=reports", map[string]string{"Authorization": "Bearer " + f.Scoped, HeaderOriginalMethod: "DELETE"}, 403, ReasonScopeNotAllowed},
		{"read derived from HEAD", PathAuth + "?scope=reports", map[string]string{"Authorization": "Bearer " + f.Scoped, HeaderForwardedMethod: "HEAD"}, 200, ReasonOK},
		{"explicit access wins over the method", PathAuth + "?scope=orders&access=ReadWrite", map[string]string{"Authorization": "Bearer " + f.Active, HeaderForwardedMethod: "GET"}, 200, ReasonOK},
		{"Envoy-style path under /v1/auth/", PathAuth + "/api/orders", bearer(f.Active), 200, ReasonOK},
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
	resp := f.auth(t, PathAuth, bearer(f.Active))
	want := map[string]string{HeaderNamespace: "t", HeaderApplication: "billing", HeaderGroup: "Administrators", HeaderTeam: "payments",
		HeaderOwner: "alice", HeaderScopes: "orders:ReadWrite,reports:ReadOnly"}
	for h, v := range want {
		if got := resp.Header.Get(h); got != v {
			t.Errorf("%s: %q, want %q", h, got, v)
		}
	}
	if id := resp.Header.Get(HeaderKeyID); id == "" || !strings.Contains(f.Active, id) || strings.Contains(id, "_") {
		t.Errorf("key ID header %q", id)
	}
	// Forward-auth gateways pass on only 401 and 403: an access that is no
	// level refuses the key with 403.
	if resp := f.auth(t, PathAuth+"?access=Write", bearer(f.Active)); resp.StatusCode != 403 || resp.Header.Get(HeaderReason) != string(ReasonScopeNotAllowed) {
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
	if r := traefik(f.Scoped, "GET", "198.51.100.7"); r.StatusCode != 200 || r.Header.Get(HeaderOwner) != "alice" {
		t.Fatalf("GET: %d", r.StatusCode)
	}
	if r := traefik(f.Scoped, "PUT", "198.51.100.7"); r.StatusCode != 403 {
		t.Fatalf("PUT on a ReadOnly scope: %d, want 403", r.StatusCode)
	}
	// The client address is Traefik's X-Forwarded-For: the network key
	// passes from its network and fails from elsewhere.
	if r := traefik(f.Net, "GET", "198.51.100.7"); r.StatusCode != 200 {
		t.Fatalf("from an allowed network via a trusted proxy: %d", r.StatusCode)
	}
	if r := traefik(f.Net, "GET", "198.51.100.7, 203.0.113.1"); r.StatusCode != 403 {
		t.Fatalf("right-most untrusted hop outside the network: %d, want 403", r.StatusCode)
	}
}

func TestAuthRateLimited(t *testing.T) {
	f := newFixture(t, "127.0.0.1/32", NewLimiter(0.001, 3, 100))
	bad := verifytest.MustKey(t).Plaintext()
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
	if r := from(f.Active, "192.0.2.50"); r.StatusCode != 200 {
		t.Fatalf("a real key from a blocked address: %d, want 200", r.StatusCode)
	}
	if r := from(verifytest.MustKey(t).Plaintext(), "192.0.2.50"); r.StatusCode != 429 {
		t.Fatalf("another guess from the blocked address: %d, want 429", r.StatusCode)
	}
	if r := from(f.Active, "192.0.2.51"); r.StatusCode != 200 {
		t.Fatalf("another client: %d", r.StatusCode)
	}
	// Real but unusable keys are not guesses.
	for i := 0; i < 5; i++ {
		if r := from(f.Expired, "192.0.2.52"); r.StatusCode != 401 {
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
	code, r, _ := f.verify(t, body(map[string]string{"key": f.Active, "scope": "orders", "access": "ReadWrite"}))
	if code != 200 || !r.Valid || r.Reason != ReasonOK || r.Namespace != "t" || r.Application != "billing" ||
		r.Group != "Administrators" || r.Team != "payments" || r.Owner != "alice" || r.KeyID == "" || len(r.Scopes) != 2 {
		t.Fatalf("ok: %d %+v", code, r)
	}
	// Every reason is a 200.
	for key, want := range map[string]Reason{f.Revoked: ReasonRevoked, f.Inactive: ReasonInactive, f.Expired: ReasonExpired,
		f.Off: ReasonTenantDisabled, "kw_nope": ReasonMalformed, "": ReasonMalformed, verifytest.MustKey(t).Plaintext(): ReasonUnknown} {
		code, r, _ := f.verify(t, body(map[string]string{"key": key}))
		if code != 200 || r.Valid || r.Reason != want {
			t.Errorf("want %s: %d valid=%v reason=%s", want, code, r.Valid, r.Reason)
		}
	}
	if _, r, _ := f.verify(t, body(map[string]string{"key": f.Net, "sourceIP": "198.51.100.9"})); r.Reason != ReasonOK {
		t.Errorf("sourceIP inside the network: %s", r.Reason)
	}
	if _, r, _ := f.verify(t, body(map[string]string{"key": f.Net, "sourceIP": "::ffff:198.51.100.9"})); r.Reason != ReasonOK {
		t.Errorf("mapped sourceIP inside the network: %s", r.Reason)
	}
	if _, r, _ := f.verify(t, body(map[string]string{"key": f.Net, "sourceIP": "2001:db8::1"})); r.Reason != ReasonNetworkNotAllowed {
		t.Errorf("sourceIP outside the network: %s", r.Reason)
	}
	if _, r, _ := f.verify(t, body(map[string]string{"key": f.Scoped, "scope": "reports", "access": "ReadWrite"})); r.Reason != ReasonScopeNotAllowed {
		t.Errorf("scope: %s", r.Reason)
	}
	// Malformed bodies: 400 (413 when too large) with a message that never quotes the key.
	for name, c := range map[string]struct {
		body string
		code int
		msg  string
	}{
		"not JSON":      {`{"key": "` + f.Active, 400, "not valid JSON"},
		"empty":         {``, 400, "empty"},
		"array":         {`[1]`, 400, "must be"},
		"unknown field": {`{"key":"` + f.Active + `","clientIP":"1.2.3.4"}`, 400, `unknown field "clientIP"`},
		"wrong type":    {`{"key": 42}`, 400, `field "key" must be a string`},
		"bad access":    {`{"key":"` + f.Active + `","access":"Write"}`, 400, "access must be ReadOnly or ReadWrite"},
		"bad sourceIP":  {`{"key":"` + f.Active + `","sourceIP":"10.0.0.300"}`, 400, "sourceIP must be"},
		"two objects":   {`{"key":"x"}{"key":"y"}`, 400, "exactly one JSON object"},
		"too large":     {`{"key":"` + strings.Repeat("a", MaxBodyBytes) + `"}`, 413, "larger than"},
	} {
		code, _, msg := f.verify(t, c.body)
		if code != c.code || !strings.Contains(msg, c.msg) || strings.Contains(msg, f.Active) {
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
	_, _, raw := f.verify(t, body(map[string]string{"key": f.Active}))
	if strings.Contains(raw, f.Active[len(keyformat.Prefix)+keyformat.IDLen+1:][:keyformat.SecretLen]) {
		t.Error("the answer contains the secret")
	}
}

func TestVerifySourceIPCountsOnlyFromTrustedCallers(t *testing.T) {
	f := newFixture(t, "", NewLimiter(0.001, 2, 100))
	guess := func(ip string) Reason {
		_, r, _ := f.verify(t, `{"key":"`+verifytest.MustKey(t).Plaintext()+`","sourceIP":"`+ip+`"}`)
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

func TestAccessForMethod(t *testing.T) {
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
	m := verifytest.MustKey(b)
	k := verifytest.IssuedKey(m)
	app := verifytest.App(verifytest.Scope("orders", keyward.ReadWrite))
	store := verifytest.NewMemStore(KeyIDs, k, app, &keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: "t", Name: keyward.TenantSettingsName},
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
