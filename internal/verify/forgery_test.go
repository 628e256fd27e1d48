package verify

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/policy"
	"keyward.dev/keyward/internal/verify/verifytest"
)

// forged is one request as a hostile client shapes it through a gateway
// that passes its headers along (NGINX's auth_request, Traefik, Caddy).
type forged struct {
	name   string
	method string
	path   string
	header http.Header
	key    func(*fixture) string
	status int
	reason Reason
}

func (f *fixture) send(t *testing.T, method, path string, h http.Header) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(method, f.srv.URL+path, nil)
	for k, vs := range h {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

var (
	scopedKey = func(f *fixture) string { return f.Scoped }
	activeKey = func(f *fixture) string { return f.Active }
)

// TestClientCannotWidenTheCheck: nothing a client adds to its request
// lowers the access, changes the scope or escapes the tenant the gateway
// asked for. The scoped key holds reports:ReadOnly only; the active key
// holds orders:ReadWrite and reports:ReadOnly in tenant "t".
func TestClientCannotWidenTheCheck(t *testing.T) {
	f := newFixture(t, "", nil)
	const nginx = PathAuth + "?scope=reports" // what the gateway's fixed auth URL asks
	writes := hdr("X-Original-Method", "POST")
	cases := []forged{
		{name: "the gateway's read passes", method: "GET", path: nginx, header: hdr("X-Original-Method", "GET"), key: scopedKey, status: 200, reason: ReasonOK},
		{name: "a write through NGINX", method: "GET", path: nginx, header: writes, key: scopedKey, status: 403, reason: ReasonScopeNotAllowed},
		{name: "a write with a forged X-Forwarded-Method: GET", method: "GET", path: nginx,
			header: hdr("X-Original-Method", "POST", "X-Forwarded-Method", "GET"), key: scopedKey, status: 403, reason: ReasonScopeNotAllowed},
		{name: "a write with a forged X-Keyward-Access: ReadOnly", method: "GET", path: nginx,
			header: hdr("X-Original-Method", "DELETE", "X-Keyward-Access", "ReadOnly"), key: scopedKey, status: 403, reason: ReasonScopeNotAllowed},
		{name: "a write with a second X-Original-Method: GET", method: "GET", path: nginx,
			header: hdr("X-Original-Method", "PUT", "X-Original-Method", "GET"), key: scopedKey, status: 403, reason: ReasonScopeNotAllowed},
		{name: "a write folded into one method header", method: "GET", path: nginx,
			header: hdr("X-Forwarded-Method", "GET, PATCH"), key: scopedKey, status: 403, reason: ReasonScopeNotAllowed},
		{name: "Envoy HTTP mode keeps the real method; the client's query cannot lower it", method: "POST",
			path: PathAuth + "/reports?access=ReadOnly&scope=reports", header: hdr("X-Keyward-Scope", "reports"), key: scopedKey, status: 403, reason: ReasonScopeNotAllowed},
		{name: "Envoy HTTP mode: a forged method header cannot lower the real method", method: "POST",
			path: PathAuth + "/reports", header: hdr("X-Keyward-Scope", "reports", "X-Forwarded-Method", "GET"), key: scopedKey, status: 403, reason: ReasonScopeNotAllowed},
		{name: "explicit access raises a read", method: "GET", path: nginx + "&access=ReadWrite", key: scopedKey, status: 403, reason: ReasonScopeNotAllowed},
		{name: "a client's scope header differing from the gateway's refuses", method: "GET", path: nginx,
			header: hdr("X-Keyward-Scope", "orders"), key: activeKey, status: 403, reason: ReasonScopeNotAllowed},
		{name: "a client's second scope in the gateway's header refuses", method: "GET", path: PathAuth,
			header: hdr("X-Keyward-Scope", "reports", "X-Keyward-Scope", "orders"), key: activeKey, status: 403, reason: ReasonScopeNotAllowed},
		{name: "a client's query under /v1/auth/ is not read (scope)", method: "GET", path: PathAuth + "/x?scope=orders&access=ReadWrite",
			header: hdr("X-Keyward-Scope", "reports"), key: scopedKey, status: 200, reason: ReasonOK},
		{name: "a client's query under /v1/auth/ is not read (namespace)", method: "GET", path: PathAuth + "/x?namespace=elsewhere",
			key: activeKey, status: 200, reason: ReasonOK},
		{name: "an access that is no level refuses", method: "GET", path: nginx, header: hdr("X-Keyward-Access", "Admin"),
			key: scopedKey, status: 403, reason: ReasonScopeNotAllowed},
		{name: "the tenant pin passes its own tenant", method: "GET", path: PathAuth + "?namespace=t", key: activeKey, status: 200, reason: ReasonOK},
		{name: "a key of another tenant is refused", method: "GET", path: PathAuth + "?namespace=shop", key: activeKey, status: 403, reason: ReasonNamespaceNotAllowed},
		{name: "a list pin", method: "GET", path: PathAuth + "?namespace=shop,t", key: activeKey, status: 200, reason: ReasonOK},
		{name: "a forged X-Keyward-Namespace naming the key's tenant does not widen the pin", method: "GET", path: PathAuth + "?namespace=shop",
			header: hdr("X-Keyward-Namespace", "t"), key: activeKey, status: 403, reason: ReasonNamespaceNotAllowed},
		{name: "a forged pin list does not widen the pin", method: "GET", path: PathAuth + "?namespace=shop",
			header: hdr("X-Keyward-Namespace", "shop,t"), key: activeKey, status: 403, reason: ReasonNamespaceNotAllowed},
		{name: "Envoy's headers_to_add pin", method: "GET", path: PathAuth + "/orders", header: hdr("X-Keyward-Namespace", "shop"),
			key: activeKey, status: 403, reason: ReasonNamespaceNotAllowed},
		{name: "a pin applies to a revoked key known by its ID alone", method: "GET", path: PathAuth + "?namespace=shop",
			key: func(f *fixture) string { return f.Revoked }, status: 403, reason: ReasonNamespaceNotAllowed},
		{name: "an unknown key stays unknown whatever is asked", method: "GET", path: nginx + "&namespace=shop",
			header: writes, key: func(*fixture) string { return "kw_nope" }, status: 401, reason: ReasonMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := c.header.Clone()
			if h == nil {
				h = http.Header{}
			}
			h.Set("Authorization", "Bearer "+c.key(f))
			resp := f.send(t, c.method, c.path, h)
			if resp.StatusCode != c.status || resp.Header.Get(HeaderReason) != string(c.reason) {
				t.Fatalf("%d %s, want %d %s", resp.StatusCode, resp.Header.Get(HeaderReason), c.status, c.reason)
			}
		})
	}
}

// TestExtAuthzClientCannotWidenTheCheck: in gRPC mode the route's
// context_extensions say what to check; the client's path, query and
// headers can only add checks.
func TestExtAuthzClientCannotWidenTheCheck(t *testing.T) {
	f := newFixture(t, "", nil)
	a := &ExtAuthz{Verifier: &Verifier{Store: f.Store, Now: func() time.Time { return f.now }}}
	check := func(method, path string, ext, headers map[string]string) *authv3.CheckResponse {
		t.Helper()
		resp, err := a.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{ContextExtensions: ext,
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: method, Path: path, Headers: headers}}}})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	reports := map[string]string{"scope": "reports", "namespace": "t"}
	bearer := func(key string, kv ...string) map[string]string {
		m := map[string]string{"authorization": "Bearer " + key}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	for _, c := range []struct {
		name    string
		method  string
		path    string
		ext     map[string]string
		headers map[string]string
		status  int
		reason  Reason
	}{
		{"a read passes", "GET", "/reports", reports, bearer(f.Scoped), 200, ReasonOK},
		{"a write is refused", "POST", "/reports", reports, bearer(f.Scoped), 403, ReasonScopeNotAllowed},
		{"forged method headers cannot lower a write", "POST", "/reports", reports,
			bearer(f.Scoped, "x-forwarded-method", "GET", "x-original-method", "GET", "x-keyward-access", "ReadOnly"), 403, ReasonScopeNotAllowed},
		{"the client's query cannot lower the access", "DELETE", "/reports?access=ReadOnly", reports, bearer(f.Scoped), 403, ReasonScopeNotAllowed},
		{"the client's query cannot pick the scope", "GET", "/x?scope=reports", map[string]string{"scope": "orders"}, bearer(f.Scoped), 403, ReasonScopeNotAllowed},
		{"the client's scope header conflicting with the route's refuses", "GET", "/x", map[string]string{"scope": "reports"},
			bearer(f.Active, "x-keyward-scope", "orders"), 403, ReasonScopeNotAllowed},
		{"a key of another tenant is refused", "GET", "/x", map[string]string{"namespace": "shop"}, bearer(f.Active), 403, ReasonNamespaceNotAllowed},
		{"the client's namespace header cannot widen the pin", "GET", "/x", map[string]string{"namespace": "shop"},
			bearer(f.Active, "x-keyward-namespace", "t"), 403, ReasonNamespaceNotAllowed},
		{"the client's query cannot widen the pin", "GET", "/x?namespace=t", map[string]string{"namespace": "shop"}, bearer(f.Active), 403, ReasonNamespaceNotAllowed},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := check(c.method, c.path, c.ext, c.headers)
			got := 200
			if d := r.GetDeniedResponse(); d != nil {
				got = int(d.GetStatus().GetCode())
			}
			if got != c.status || (c.status != 200 && r.GetStatus().GetMessage() != string(c.reason)) {
				t.Fatalf("%d %q, want %d %s", got, r.GetStatus().GetMessage(), c.status, c.reason)
			}
		})
	}
}

// TestDeletingKeyIsUnknown: a key whose object is held by a finalizer
// after delete answers unknown everywhere, and is not counted as a guess.
func TestDeletingKeyIsUnknown(t *testing.T) {
	f := newFixture(t, "127.0.0.1/32", NewLimiter(0.001, 1, 10))
	k, _ := f.Store.AccessKey(context.Background(), "t", "active")
	deleting := k.DeepCopy()
	deleting.DeletionTimestamp = &metav1.Time{Time: verifytest.T0}
	deleting.Finalizers = []string{"example.com/hold"}
	f.Store.Put(deleting)
	for i := 0; i < 3; i++ {
		resp := f.send(t, "GET", PathAuth, hdr("Authorization", "Bearer "+f.Active, "X-Forwarded-For", "192.0.2.9"))
		if resp.StatusCode != 401 || resp.Header.Get(HeaderReason) != string(ReasonUnknown) {
			t.Fatalf("/v1/auth try %d: %d %s, want 401 unknown (and never rate_limited)", i, resp.StatusCode, resp.Header.Get(HeaderReason))
		}
	}
	if code, res, _ := f.verify(t, `{"key":"`+f.Active+`"}`); code != 200 || res.Reason != ReasonUnknown || res.Namespace != "" {
		t.Fatalf("/v1/verify: %d %s %q", code, res.Reason, res.Namespace)
	}
	if res := DecideHeld(deleting.Status.KeyID, Input{AccessKey: deleting, App: verifytest.App(), Tenant: enabledTenant(), Now: verifytest.T0}); res.Reason != ReasonUnknown {
		t.Fatalf("introspection's decision: %s", res.Reason)
	}
}

// TestVerifyNamespaceField: /v1/verify's namespace is a string or a list.
func TestVerifyNamespaceField(t *testing.T) {
	f := newFixture(t, "", nil)
	for _, c := range []struct {
		ns     string
		status int
		reason Reason
	}{
		{`"t"`, 200, ReasonOK},
		{`["shop","t"]`, 200, ReasonOK},
		{`"shop"`, 200, ReasonNamespaceNotAllowed},
		{`[]`, 200, ReasonNamespaceNotAllowed},
		{`null`, 200, ReasonOK},
		{`""`, 400, ""},
		{`[""]`, 400, ""},
		{`3`, 400, ""},
		{`{"a":1}`, 400, ""},
	} {
		code, res, body := f.verify(t, `{"key":"`+f.Active+`","namespace":`+c.ns+`}`)
		if code != c.status || res.Reason != c.reason {
			t.Errorf("namespace %s: %d %s %q, want %d %s", c.ns, code, res.Reason, body, c.status, c.reason)
		}
	}
}

func enabledTenant() policy.Tenant { return policy.Tenant{Enabled: true} }

// TestLegacyScopeNameIsNeverGranted: a scope name stored before the CRD
// refused it ("orders:ReadWrite x" reads as orders:ReadWrite in a header)
// is left out of every answer; the key's other scopes still work. (The
// token service's claim: internal/token.)
func TestLegacyScopeNameIsNeverGranted(t *testing.T) {
	f := newFixture(t, "", nil)
	app, _ := f.Store.Application(context.Background(), "t", "billing")
	legacy := app.DeepCopy()
	legacy.Spec.Scopes = append(legacy.Spec.Scopes, verifytest.Scope("orders:ReadWrite x", keyward.ReadOnly), verifytest.Scope("a,b", keyward.ReadOnly))
	f.Store.Put(legacy)
	resp := f.send(t, "GET", PathAuth, hdr("Authorization", "Bearer "+f.Active))
	if resp.StatusCode != 200 || resp.Header.Get(HeaderScopes) != "orders:ReadWrite,reports:ReadOnly" {
		t.Fatalf("/v1/auth: %d scopes %q", resp.StatusCode, resp.Header.Get(HeaderScopes))
	}
	if resp := f.send(t, "GET", PathAuth+"?scope=orders:ReadWrite+x", hdr("Authorization", "Bearer "+f.Active)); resp.StatusCode != 403 {
		t.Fatalf("asking for the legacy scope: %d", resp.StatusCode)
	}
}
