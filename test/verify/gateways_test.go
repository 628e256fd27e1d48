package verify_test

// Hostile clients through real gateways (NGINX, Caddy, Traefik) and through
// the requests Envoy builds (ext_authz gRPC and HTTP mode): one table of
// requests, each gateway running the recipe of docs/gateways.md. The route
// /orders/ asks for the scope orders and pins the tenant shop; / pins the
// tenant only. docs/security.md lists the same attacks and what each gets.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/verify"
	"keyward.dev/keyward/test/harness/testenv"
)

// The tokens the recipes of docs/gateways.md use and the tests replace or
// keep: the tenant every recipe pins is a real namespace here.
const (
	docTenant = "shop"
	// docAllowedNet is where the key with allowedNetworks may be: loopback
	// addresses for real gateways, and the documentation network for the
	// requests built as Envoy builds them.
	allowedLoopbackNet = "127.0.2.0/24"
	allowedEnvoyNet    = "198.51.100.0/24"
)

// hostile are the keys of the hostile-client tables: four in the tenant the
// recipes pin, one in another tenant, all of Applications with the same
// scopes.
type hostile struct {
	other                 string // the other tenant
	rw, ro, reports, net  string // shop keys
	foreign               string // a key of the other tenant with every scope
	rwID, roID, foreignID string
	reportsID, netID      string
	group                 string
}

var (
	hostileOnce sync.Once
	hostileKeys hostile
)

func tenantNamed(name string) {
	GinkgoHelper()
	Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})).To(Succeed())
	Expect(k8s.Create(ctx, &keyward.TenantSettings{
		ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: keyward.TenantSettingsName},
		Spec:       keyward.TenantSettingsSpec{APIKeysEnabled: ptr.To(true), MaxKeysPerOwner: 1000},
	})).To(Succeed())
}

// setupHostile creates the tenant the recipes pin (once for the suite; the
// tables only read its keys).
func setupHostile() hostile {
	GinkgoHelper()
	hostileOnce.Do(func() {
		h := &hostileKeys
		h.group = "Developers"
		tenantNamed(docTenant)
		newApp(docTenant, "orders-api", h.group, sc("orders", keyward.ReadWrite), sc("reports", keyward.ReadWrite))
		rw := newKey(docTenant, "writer", "orders-api")
		ro := newKey(docTenant, "reader", "orders-api", func(a *keyward.AccessKey) {
			a.Spec.Scopes = []keyward.Scope{sc("orders", keyward.ReadOnly)}
		})
		reports := newKey(docTenant, "reports-only", "orders-api", func(a *keyward.AccessKey) {
			a.Spec.Scopes = []keyward.Scope{sc("reports", keyward.ReadWrite)}
		})
		nw := newKey(docTenant, "networked", "orders-api", func(a *keyward.AccessKey) {
			a.Spec.AllowedNetworks = []string{allowedLoopbackNet, allowedEnvoyNet}
		})
		h.other = newTenant(true)
		// The other tenant's admin names its group and scopes like shop's.
		newApp(h.other, "orders-api", h.group, sc("orders", keyward.ReadWrite), sc("reports", keyward.ReadWrite))
		foreign := newKey(h.other, "writer", "orders-api")
		h.rw, h.ro, h.reports, h.net, h.foreign = issued(rw), issued(ro), issued(reports), issued(nw), issued(foreign)
		h.rwID, h.roID, h.reportsID = get(rw).Status.KeyID, get(ro).Status.KeyID, get(reports).Status.KeyID
		h.netID, h.foreignID = get(nw).Status.KeyID, get(foreign).Status.KeyID
	})
	return hostileKeys
}

// clientReq is what a client sends to the gateway.
type clientReq struct {
	method, path string
	// bearer goes in Authorization: Bearer, apiKey in X-API-Key.
	bearer, apiKey string
	// fromAllowed: the client is really in the key's allowedNetworks;
	// otherwise it is somewhere else.
	fromAllowed bool
	// hdr are more client headers, name and value pairs; the value
	// "{allowed}" is an address in the key's allowedNetworks.
	hdr []string
}

// gatewayAnswer is what the client got, and what the upstream saw.
type gatewayAnswer struct {
	status int
	reason string
	// upstream: the request headers the upstream received (nil when the
	// request did not reach it).
	upstream http.Header
}

// row is one hostile (or control) request and what it must get.
type row struct {
	name string
	req  clientReq
	// status and reason of the answer; keyID and namespace the upstream
	// must see on 200.
	status    int
	reason    verify.Reason
	keyID, ns string
}

// hostileRows is the table every gateway runs.
func hostileRows(h hostile) []row {
	const orders = "/orders/1"
	forged := []string{
		verify.HeaderNamespace, docTenant, // its own value: harmless, and overwritten
		verify.HeaderApplication, "forged-app",
		verify.HeaderGroup, "Administrators",
		verify.HeaderTeam, "forged-team",
		verify.HeaderOwner, "mallory",
		verify.HeaderKeyID, "forged-id",
		verify.HeaderScopes, "admin:ReadWrite",
		verify.HeaderReason, "forged",
	}
	return []row{
		// Controls: what must keep working.
		{name: "a ReadWrite key POSTs", req: clientReq{method: "POST", path: orders, bearer: h.rw},
			status: 200, reason: verify.ReasonOK, keyID: h.rwID, ns: docTenant},
		{name: "a ReadOnly key GETs", req: clientReq{method: "GET", path: orders, bearer: h.ro},
			status: 200, reason: verify.ReasonOK, keyID: h.roID, ns: docTenant},
		{name: "a ReadOnly key POSTs", req: clientReq{method: "POST", path: orders, bearer: h.ro},
			status: 403, reason: verify.ReasonScopeNotAllowed},
		{name: "a key in X-API-Key", req: clientReq{method: "GET", path: "/", apiKey: h.rw},
			status: 200, reason: verify.ReasonOK, keyID: h.rwID, ns: docTenant},

		// Access: a forged method or access never lowers a write.
		{name: "a ReadOnly key POSTs with X-Forwarded-Method: GET",
			req:    clientReq{method: "POST", path: orders, bearer: h.ro, hdr: []string{verify.HeaderForwardedMethod, "GET"}},
			status: 403, reason: verify.ReasonScopeNotAllowed},
		{name: "a ReadOnly key POSTs with X-Original-Method: GET",
			req:    clientReq{method: "POST", path: orders, bearer: h.ro, hdr: []string{verify.HeaderOriginalMethod, "GET"}},
			status: 403, reason: verify.ReasonScopeNotAllowed},
		{name: "a ReadOnly key POSTs with X-Keyward-Access: ReadOnly",
			req:    clientReq{method: "POST", path: orders, bearer: h.ro, hdr: []string{verify.HeaderAccess, "ReadOnly"}},
			status: 403, reason: verify.ReasonScopeNotAllowed},
		{name: "a ReadOnly key POSTs with ?access=ReadOnly",
			req:    clientReq{method: "POST", path: orders + "?access=ReadOnly", bearer: h.ro},
			status: 403, reason: verify.ReasonScopeNotAllowed},
		{name: "a ReadOnly key DELETEs with every method and access header saying read",
			req: clientReq{method: "DELETE", path: orders + "?access=ReadOnly&scope=orders", bearer: h.ro, hdr: []string{
				verify.HeaderForwardedMethod, "GET", verify.HeaderOriginalMethod, "HEAD", verify.HeaderAccess, "ReadOnly"}},
			status: 403, reason: verify.ReasonScopeNotAllowed},

		// Scope: only the route's configuration names it.
		{name: "a key without the route's scope sends X-Keyward-Scope naming a scope it has",
			req:    clientReq{method: "GET", path: orders, bearer: h.reports, hdr: []string{verify.HeaderScope, "reports"}},
			status: 403, reason: verify.ReasonScopeNotAllowed},
		{name: "a key without the route's scope sends ?scope= naming a scope it has",
			req:    clientReq{method: "GET", path: orders + "?scope=reports", bearer: h.reports},
			status: 403, reason: verify.ReasonScopeNotAllowed},
		{name: "a key without the route's scope sends an empty X-Keyward-Scope and ?scope=",
			req:    clientReq{method: "GET", path: orders + "?scope=", bearer: h.reports, hdr: []string{verify.HeaderScope, ""}},
			status: 403, reason: verify.ReasonScopeNotAllowed},

		// Tenant: the route is pinned to shop.
		{name: "a key of another tenant on a route pinned to shop",
			req:    clientReq{method: "GET", path: orders, bearer: h.foreign},
			status: 403, reason: verify.ReasonNamespaceNotAllowed},
		{name: "a key of another tenant on the route without a scope",
			req:    clientReq{method: "GET", path: "/", bearer: h.foreign},
			status: 403, reason: verify.ReasonNamespaceNotAllowed},
		{name: "a key of another tenant sends X-Keyward-Namespace naming its own tenant",
			req:    clientReq{method: "GET", path: orders, bearer: h.foreign, hdr: []string{verify.HeaderNamespace, h.other}},
			status: 403, reason: verify.ReasonNamespaceNotAllowed},
		{name: "a key of another tenant sends ?namespace= naming its own tenant",
			req:    clientReq{method: "GET", path: orders + "?namespace=" + h.other, bearer: h.foreign},
			status: 403, reason: verify.ReasonNamespaceNotAllowed},
		{name: "a key of another tenant sends X-Keyward-Namespace listing both tenants",
			req:    clientReq{method: "GET", path: "/", bearer: h.foreign, hdr: []string{verify.HeaderNamespace, docTenant + "," + h.other}},
			status: 403, reason: verify.ReasonNamespaceNotAllowed},

		// Networks: forwarding headers from the client are not believed.
		{name: "a key with allowedNetworks from inside them",
			req:    clientReq{method: "GET", path: orders, bearer: h.net, fromAllowed: true},
			status: 200, reason: verify.ReasonOK, keyID: h.netID, ns: docTenant},
		{name: "a key with allowedNetworks from outside them",
			req:    clientReq{method: "GET", path: orders, bearer: h.net},
			status: 403, reason: verify.ReasonNetworkNotAllowed},
		{name: "a key with allowedNetworks with a forged X-Forwarded-For",
			req:    clientReq{method: "GET", path: orders, bearer: h.net, hdr: []string{verify.HeaderForwardedFor, "{allowed}"}},
			status: 403, reason: verify.ReasonNetworkNotAllowed},
		{name: "a key with allowedNetworks with a forged X-Real-IP",
			req:    clientReq{method: "GET", path: orders, bearer: h.net, hdr: []string{verify.HeaderRealIP, "{allowed}"}},
			status: 403, reason: verify.ReasonNetworkNotAllowed},
		{name: "a key with allowedNetworks with forged X-Forwarded-For, X-Real-IP and Forwarded",
			req: clientReq{method: "GET", path: orders, bearer: h.net, hdr: []string{
				verify.HeaderForwardedFor, "{allowed}, {allowed}", verify.HeaderRealIP, "{allowed}", "Forwarded", "for={allowed}"}},
			status: 403, reason: verify.ReasonNetworkNotAllowed},

		// Two keys: Authorization comes first, and identities never mix.
		{name: "a valid key in Authorization and another tenant's key in X-API-Key",
			req:    clientReq{method: "POST", path: orders, bearer: h.rw, apiKey: h.foreign},
			status: 200, reason: verify.ReasonOK, keyID: h.rwID, ns: docTenant},
		{name: "another tenant's key in Authorization and a valid key in X-API-Key",
			req:    clientReq{method: "POST", path: orders, bearer: h.foreign, apiKey: h.rw},
			status: 403, reason: verify.ReasonNamespaceNotAllowed},
		{name: "a ReadOnly key in Authorization and a ReadWrite key in X-API-Key POST",
			req:    clientReq{method: "POST", path: orders, bearer: h.ro, apiKey: h.rw},
			status: 403, reason: verify.ReasonScopeNotAllowed},

		// Identity: the upstream sees the verifier's values only.
		{name: "a valid key with forged X-Keyward-* identity headers",
			req:    clientReq{method: "GET", path: orders, bearer: h.ro, hdr: forged},
			status: 200, reason: verify.ReasonOK, keyID: h.roID, ns: docTenant},
		{name: "a valid key with forged X-Keyward-* headers on the route without a scope",
			req:    clientReq{method: "PUT", path: "/", apiKey: h.rw, hdr: forged},
			status: 200, reason: verify.ReasonOK, keyID: h.rwID, ns: docTenant},
	}
}

// runHostile sends every row through send and checks the answer and what
// the upstream saw; it reports every row that fails, not only the first.
func runHostile(h hostile, send func(clientReq) gatewayAnswer) {
	GinkgoHelper()
	var failed []string
	for _, r := range hostileRows(h) {
		got := send(r.req)
		var why []string
		for _, f := range InterceptGomegaFailures(func() { checkRow(h, r, got) }) {
			why = append(why, strings.Join(strings.Fields(f), " "))
		}
		if len(why) > 0 {
			failed = append(failed, fmt.Sprintf("%s: got %d %s; want %d %s: %s", r.name, got.status, got.reason, r.status, r.reason,
				strings.Join(why, " | ")))
		}
	}
	Expect(len(failed)).To(BeZero(), "rows of the hostile-client table that failed:\n%s", strings.Join(failed, "\n"))
}

func checkRow(h hostile, r row, got gatewayAnswer) {
	keys := []string{h.rw, h.ro, h.reports, h.net, h.foreign}
	Expect(got.status).To(Equal(r.status), "status")
	Expect(got.reason).To(Equal(string(r.reason)), "reason")
	if r.status != 200 {
		Expect(got.upstream == nil).To(BeTrue(), "the request does not reach the upstream")
		return
	}
	Expect(got.upstream).NotTo(BeNil())
	// Failure messages never show a key: any value holding one is redacted
	// before it is compared, and the leak is reported by header name.
	up := http.Header{}
	var leaked []string
	for name, vals := range got.upstream {
		for _, v := range vals {
			for _, key := range keys {
				if strings.Contains(v, key) {
					leaked = append(leaked, name)
					v = "<redacted key>"
				}
			}
			up.Add(name, v)
		}
	}
	Expect(leaked).To(BeEmpty(), "a key reaches the upstream in these headers")
	Expect(up.Values(verify.HeaderAuthorization)).To(BeEmpty(), "Authorization does not reach the upstream")
	Expect(up.Values(verify.HeaderAPIKey)).To(BeEmpty(), "X-API-Key does not reach the upstream")
	want := map[string]string{
		verify.HeaderNamespace:   r.ns,
		verify.HeaderApplication: "orders-api",
		verify.HeaderGroup:       h.group,
		verify.HeaderTeam:        "payments",
		verify.HeaderOwner:       "alice",
		verify.HeaderKeyID:       r.keyID,
	}
	for name, v := range want {
		Expect(up.Values(name)).To(Equal([]string{v}), "the upstream sees the verifier's %s only", name)
	}
	Expect(up.Values(verify.HeaderScopes)).To(HaveLen(1), "one %s", verify.HeaderScopes)
	Expect(up.Get(verify.HeaderScopes)).NotTo(ContainSubstring("admin"), "the verifier's %s", verify.HeaderScopes)
	for name, vals := range up {
		canon := http.CanonicalHeaderKey(name)
		if !strings.HasPrefix(canon, "X-Keyward-") {
			continue
		}
		identity := false
		for _, id := range verify.IdentityHeaders {
			identity = identity || http.CanonicalHeaderKey(id) == canon
		}
		if identity {
			continue
		}
		// Only the verifier's own reason may pass besides identity.
		Expect(canon).To(Equal(verify.HeaderReason), "the client's %s reaches the upstream", name)
		Expect(vals).To(Equal([]string{string(verify.ReasonOK)}), "the verifier's reason only")
	}
}

// --- real gateways over loopback ---------------------------------------

// Client addresses of real gateways: the test binds each client connection
// to its own loopback address (Linux routes all of 127/8 to lo), so that
// the gateway sees a real remote address that is not a trusted proxy
// (127.0.0.1 is). 127.0.2.x is in the networked key's allowedNetworks.
var loopbackSeq atomic.Int32

func nextLoopback(allowed bool) string {
	n := loopbackSeq.Add(1)
	if allowed {
		return fmt.Sprintf("127.0.2.%d", n%250+1)
	}
	return fmt.Sprintf("127.1.%d.%d", (n/250)%250+1, n%250+1)
}

// clientFrom is an HTTP client whose connections come from src.
func clientFrom(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
		DisableKeepAlives: true,
	}}
}

// echoUpstream records the headers of every request it gets under the
// request's Echo-Id and answers "upstream".
type echoUpstream struct {
	*httptest.Server
	mu   sync.Mutex
	seen map[string]http.Header
}

const headerEchoID = "Echo-Id"

func newEchoUpstream() *echoUpstream {
	u := &echoUpstream{seen: map[string]http.Header{}}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seen[r.Header.Get(headerEchoID)] = r.Header.Clone()
		u.mu.Unlock()
		for _, h := range verify.IdentityHeaders {
			w.Header().Set("Echo-"+h, r.Header.Get(h))
		}
		saw := "no"
		if r.Header.Get("Authorization") != "" || r.Header.Get("X-API-Key") != "" {
			saw = "yes"
		}
		w.Header().Set("Echo-Saw-Key", saw)
		w.Header().Set("Echo-Method", r.Method)
		_, _ = io.WriteString(w, "upstream\n")
	}))
	DeferCleanup(u.Close)
	return u
}

func (u *echoUpstream) take(id string) http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	h := u.seen[id]
	delete(u.seen, id)
	return h
}

var echoSeq atomic.Int64

// sendThrough sends a client request to a real gateway at base from a
// loopback address of its own.
func sendThrough(base string, up *echoUpstream, r clientReq) gatewayAnswer {
	GinkgoHelper()
	allowed := nextLoopback(true)
	src := nextLoopback(r.fromAllowed)
	req, err := http.NewRequest(r.method, base+r.path, nil)
	Expect(err).NotTo(HaveOccurred())
	if r.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+r.bearer)
	}
	if r.apiKey != "" {
		req.Header.Set("X-API-Key", r.apiKey)
	}
	for i := 0; i+1 < len(r.hdr); i += 2 {
		req.Header.Add(r.hdr[i], strings.ReplaceAll(r.hdr[i+1], "{allowed}", allowed))
	}
	id := fmt.Sprint(echoSeq.Add(1))
	req.Header.Set(headerEchoID, id)
	resp, err := clientFrom(src).Do(req)
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := gatewayAnswer{status: resp.StatusCode, upstream: up.take(id)}
	if resp.StatusCode == 200 {
		Expect(string(b)).To(Equal("upstream\n"))
		a.reason = string(verify.ReasonOK)
	} else {
		a.reason = strings.TrimSpace(string(b))
	}
	return a
}

// --- recipes from docs/gateways.md ---------------------------------------

func gatewaysDoc() string {
	GinkgoHelper()
	doc, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "docs", "gateways.md"))
	Expect(err).NotTo(HaveOccurred())
	return string(doc)
}

// docBlocks returns the fenced blocks of language lang in the section of
// docs/gateways.md whose heading starts with heading.
func docBlocks(heading, lang string) []string {
	GinkgoHelper()
	doc := gatewaysDoc()
	i := strings.Index(doc, "\n## "+heading)
	if i < 0 {
		i = strings.Index(doc, "\n### "+heading)
	}
	Expect(i).To(BeNumerically(">=", 0), "docs/gateways.md has a section %q", heading)
	sec := doc[i+1:]
	if j := regexp.MustCompile(`\n##+ `).FindStringIndex(sec); j != nil {
		sec = sec[:j[0]]
	}
	var out []string
	for _, m := range regexp.MustCompile("(?s)```"+regexp.QuoteMeta(lang)+"\n(.*?)```").FindAllStringSubmatch(sec, -1) {
		out = append(out, m[1])
	}
	Expect(out).NotTo(BeEmpty(), "section %q of docs/gateways.md has a %s block", heading, lang)
	return out
}

// gatewayBinary is a gateway built by `make gateways` into bin/gateways.
func gatewayBinary(name string) string {
	GinkgoHelper()
	dir := os.Getenv("GATEWAYS_DIR")
	if dir == "" {
		dir = filepath.Join(testenv.RepoRoot(), "bin", "gateways")
	}
	bin := filepath.Join(dir, name)
	_, err := os.Stat(bin)
	Expect(err).NotTo(HaveOccurred(), "%s is built by `make gateways` (hack/gateways/build.sh)", bin)
	return bin
}

// waitListening waits until addr accepts connections.
// startGateway starts a gateway process for the rest of the container:
// at cleanup it is stopped with stop (killed after 5 s), then after runs.
func startGateway(cmd *exec.Cmd, stop os.Signal, after func()) {
	GinkgoHelper()
	cmd.Stdout, cmd.Stderr = GinkgoWriter, GinkgoWriter
	Expect(cmd.Start()).To(Succeed())
	DeferCleanup(func() {
		_ = cmd.Process.Signal(stop)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
		}
		if after != nil {
			after()
		}
	})
}

func waitListening(addr string) {
	GinkgoHelper()
	Eventually(func() error {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	}, timeout, interval).Should(Succeed())
}
