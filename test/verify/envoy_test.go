package verify_test

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	"keyward.dev/keyward/internal/verify"
)

// Envoy is not on the machine, so these tables send what Envoy sends for
// each client request under the recipes of docs/gateways.md, and apply the
// answer to the client's headers as Envoy does to compute what the upstream
// would see.

// envoyRecipe is what the tests read from a recipe.
type envoyRecipe struct {
	useRemoteAddress bool
	// HTTP mode.
	pathPrefix      string
	allowedHeaders  []string // exact, lower case
	headersToAdd    [][2]string
	upstreamPrefix  []string // allowed_upstream_headers prefixes
	upstreamExact   []string
	headersToRemove []string // the virtual host's request_headers_to_remove
	// gRPC mode: the virtual host's extensions and the routes' in order.
	hostExt map[string]string
	routes  []envoyRoute
}

type envoyRoute struct {
	prefix string
	ext    map[string]string
}

func envoyRecipeFrom(heading string) envoyRecipe {
	GinkgoHelper()
	var doc map[string]any
	Expect(yaml.Unmarshal([]byte(docBlocks(heading, "yaml")[0]), &doc)).To(Succeed())
	var r envoyRecipe
	r.useRemoteAddress, _ = doc["use_remote_address"].(bool)
	for _, f := range list(doc["http_filters"]) {
		cfg := obj(obj(f)["typed_config"])
		if hs := obj(cfg["http_service"]); hs != nil {
			Expect(obj(hs["server_uri"])["uri"]).To(Equal(docVerifier))
			r.pathPrefix, _ = hs["path_prefix"].(string)
			req := obj(hs["authorization_request"])
			for _, p := range list(obj(req["allowed_headers"])["patterns"]) {
				Expect(obj(p)).To(HaveKey("exact"), "the test knows exact patterns of allowed_headers only")
				r.allowedHeaders = append(r.allowedHeaders, strings.ToLower(obj(p)["exact"].(string)))
			}
			for _, h := range list(req["headers_to_add"]) {
				r.headersToAdd = append(r.headersToAdd, [2]string{obj(h)["key"].(string), obj(h)["value"].(string)})
			}
			for _, p := range list(obj(obj(hs["authorization_response"])["allowed_upstream_headers"])["patterns"]) {
				if v, ok := obj(p)["prefix"].(string); ok {
					r.upstreamPrefix = append(r.upstreamPrefix, v)
				}
				if v, ok := obj(p)["exact"].(string); ok {
					r.upstreamExact = append(r.upstreamExact, v)
				}
			}
		}
	}
	vhosts := list(obj(doc["route_config"])["virtual_hosts"])
	Expect(vhosts).To(HaveLen(1))
	vh := obj(vhosts[0])
	for _, h := range list(vh["request_headers_to_remove"]) {
		r.headersToRemove = append(r.headersToRemove, h.(string))
	}
	r.hostExt = extensions(vh)
	for _, rt := range list(vh["routes"]) {
		r.routes = append(r.routes, envoyRoute{prefix: obj(obj(rt)["match"])["prefix"].(string), ext: extensions(obj(rt))})
	}
	return r
}

func extensions(o map[string]any) map[string]string {
	ext := obj(obj(obj(obj(o["typed_per_filter_config"])["envoy.filters.http.ext_authz"])["check_settings"])["context_extensions"])
	out := map[string]string{}
	for k, v := range ext {
		out[k] = fmt.Sprint(v)
	}
	return out
}

func obj(v any) map[string]any { m, _ := v.(map[string]any); return m }
func list(v any) []any         { l, _ := v.([]any); return l }

// contextExtensions: the first route whose prefix matches, merged over the
// virtual host's (Envoy's per-route merge: the more specific wins).
func (e envoyRecipe) contextExtensions(path string) map[string]string {
	out := map[string]string{}
	for k, v := range e.hostExt {
		out[k] = v
	}
	for _, rt := range e.routes {
		if strings.HasPrefix(path, rt.prefix) {
			for k, v := range rt.ext {
				out[k] = v
			}
			break
		}
	}
	return out
}

// envoyClient is the client's request as Envoy's connection manager has it:
// the client's headers, lower case, repeated ones kept, and the real peer
// appended to X-Forwarded-For (use_remote_address).
type envoyClient struct {
	method, path, peer string
	headers            [][2]string
}

var envoyPeers atomic.Int32

func envoyClientFor(e envoyRecipe, r clientReq) envoyClient {
	GinkgoHelper()
	n := envoyPeers.Add(1)
	allowed := fmt.Sprintf("198.51.100.%d", n%250+1)
	peer := fmt.Sprintf("203.0.113.%d", n%250+1)
	if r.fromAllowed {
		peer = allowed
	}
	c := envoyClient{method: r.method, path: r.path, peer: peer}
	add := func(k, v string) { c.headers = append(c.headers, [2]string{strings.ToLower(k), v}) }
	add(":authority", "api.example.com")
	add(":method", r.method)
	add(":path", r.path)
	add(":scheme", "http")
	if r.bearer != "" {
		add("authorization", "Bearer "+r.bearer)
	}
	if r.apiKey != "" {
		add("x-api-key", r.apiKey)
	}
	var xff []string
	for i := 0; i+1 < len(r.hdr); i += 2 {
		v := strings.ReplaceAll(r.hdr[i+1], "{allowed}", allowed)
		if strings.EqualFold(r.hdr[i], verify.HeaderForwardedFor) {
			xff = append(xff, v)
			continue
		}
		add(r.hdr[i], v)
	}
	Expect(e.useRemoteAddress).To(BeTrue(), "the recipe sets use_remote_address")
	// Envoy appends the peer to the client's X-Forwarded-For (one header).
	add("x-forwarded-for", strings.Join(append(xff, peer), ","))
	add("x-forwarded-proto", "http")
	add("x-request-id", fmt.Sprintf("req-%d", n))
	add("x-envoy-external-address", peer)
	return c
}

// upstreamAfter is what Envoy sends upstream after an OK: the client's
// headers, changed by the answer, then the virtual host's removals.
func upstreamAfter(e envoyRecipe, c envoyClient, remove []string, set map[string][]string) http.Header {
	h := http.Header{}
	for _, kv := range c.headers {
		if !strings.HasPrefix(kv[0], ":") {
			h.Add(kv[0], kv[1])
		}
	}
	for _, n := range remove {
		h.Del(n)
	}
	for n, v := range set {
		h[http.CanonicalHeaderKey(n)] = v
	}
	for _, n := range e.headersToRemove {
		h.Del(n)
	}
	return h
}

// checkAsEnvoy builds the CheckRequest Envoy builds for the client's
// request: source and destination, the route's context extensions, the
// method, path with query, host and scheme, and the headers either as a map
// (repeated headers joined with ",") or, with encode_raw_headers, as a
// header_map of raw values.
func checkAsEnvoy(e envoyRecipe, c envoyClient, raw bool) *authv3.CheckRequest {
	hr := &authv3.AttributeContext_HttpRequest{
		Id: "1", Method: c.method, Path: c.path, Host: "api.example.com", Scheme: "http", Protocol: "HTTP/1.1", Size: -1,
	}
	if raw {
		hm := &corev3.HeaderMap{}
		for _, kv := range c.headers {
			hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[0], RawValue: []byte(kv[1])})
		}
		hr.HeaderMap = hm
	} else {
		hr.Headers = map[string]string{}
		for _, kv := range c.headers {
			if v, ok := hr.Headers[kv[0]]; ok {
				hr.Headers[kv[0]] = v + "," + kv[1]
			} else {
				hr.Headers[kv[0]] = kv[1]
			}
		}
	}
	sock := func(ip string, port uint32) *corev3.Address {
		return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:            &authv3.AttributeContext_Peer{Address: sock(c.peer, 40000)},
		Destination:       &authv3.AttributeContext_Peer{Address: sock("10.0.0.10", 8080)},
		ContextExtensions: e.contextExtensions(strings.SplitN(c.path, "?", 2)[0]),
		Request:           &authv3.AttributeContext_Request{Time: timestamppb.Now(), Http: hr},
	}}
}

func grpcClient() authv3.AuthorizationClient {
	GinkgoHelper()
	grpcOnce.Do(func() {
		var err error
		grpcConn, err = grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		Expect(err).NotTo(HaveOccurred())
	})
	return authv3.NewAuthorizationClient(grpcConn)
}

// sendGRPC: the client's request through Envoy in gRPC mode.
func sendGRPC(e envoyRecipe, r clientReq, raw bool) gatewayAnswer {
	GinkgoHelper()
	c := envoyClientFor(e, r)
	resp, err := grpcClient().Check(ctx, checkAsEnvoy(e, c, raw))
	Expect(err).NotTo(HaveOccurred())
	if d := resp.GetDeniedResponse(); d != nil {
		return gatewayAnswer{status: int(d.GetStatus().GetCode()), reason: grpcHeader(resp, verify.HeaderReason)}
	}
	ok := resp.GetOkResponse()
	set := map[string][]string{}
	for _, o := range ok.GetHeaders() {
		n := http.CanonicalHeaderKey(o.GetHeader().GetKey())
		switch o.GetAppendAction() {
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			set[n] = []string{o.GetHeader().GetValue()}
		default:
			// Appending would keep the client's value next to the verifier's.
			Fail(fmt.Sprintf("the OK answer appends to %s instead of overwriting it", n))
		}
	}
	return gatewayAnswer{status: 200, reason: string(verify.ReasonOK), upstream: upstreamAfter(e, c, ok.GetHeadersToRemove(), set)}
}

// sendEnvoyHTTP: the client's request through Envoy in HTTP mode: the
// client's method, path_prefix + the client's path and query, only the
// allowed headers, then headers_to_add replacing the client's.
func sendEnvoyHTTP(e envoyRecipe, r clientReq) gatewayAnswer {
	GinkgoHelper()
	c := envoyClientFor(e, r)
	req, err := http.NewRequest(c.method, verifyURL+e.pathPrefix+c.path, nil)
	Expect(err).NotTo(HaveOccurred())
	Expect(req.URL.Path).To(HavePrefix(verify.PathAuth + "/"))
	req.Host = "api.example.com"
	for _, kv := range c.headers {
		for _, a := range e.allowedHeaders {
			if kv[0] == a {
				req.Header.Add(kv[0], kv[1])
			}
		}
	}
	for _, kv := range e.headersToAdd {
		req.Header.Set(kv[0], kv[1])
	}
	resp, err := httpClient.Do(req)
	Expect(err).NotTo(HaveOccurred())
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	a := gatewayAnswer{status: resp.StatusCode, reason: resp.Header.Get(verify.HeaderReason)}
	if resp.StatusCode != 200 {
		return a
	}
	set := map[string][]string{}
	for n, v := range resp.Header {
		l := strings.ToLower(n)
		for _, p := range e.upstreamPrefix {
			if strings.HasPrefix(l, p) {
				set[n] = v
			}
		}
		for _, x := range e.upstreamExact {
			if l == x {
				set[n] = v
			}
		}
	}
	a.upstream = upstreamAfter(e, c, nil, set)
	return a
}

var _ = Describe("Hostile clients through Envoy ext_authz, with the requests Envoy builds", Ordered, ContinueOnFailure, func() {
	var h hostile
	BeforeAll(func() { h = setupHostile() })

	It("gRPC mode (headers map) gives hostile clients nothing", func() {
		e := envoyRecipeFrom("Envoy `ext_authz`, gRPC mode")
		Expect(e.contextExtensions("/orders/1")).To(Equal(map[string]string{"namespace": docTenant, "scope": "orders"}))
		runHostile(h, func(r clientReq) gatewayAnswer { return sendGRPC(e, r, false) })
	})

	It("gRPC mode (header_map of raw values, encode_raw_headers) gives hostile clients nothing", func() {
		e := envoyRecipeFrom("Envoy `ext_authz`, gRPC mode")
		runHostile(h, func(r clientReq) gatewayAnswer { return sendGRPC(e, r, true) })
	})

	It("gRPC mode ignores scope, access and namespace in the client's path and headers when the route names none", func() {
		e := envoyRecipeFrom("Envoy `ext_authz`, gRPC mode")
		e.routes = nil // the virtual host's extensions only: the tenant, no scope
		r := sendGRPC(e, clientReq{method: "POST", path: "/anything?" + url.Values{"scope": {"orders"}, "access": {"ReadOnly"},
			"namespace": {h.other}}.Encode(), bearer: h.reports}, false)
		Expect(r.status).To(Equal(200), "the client cannot add a scope or a tenant from its query")
	})

	It("HTTP mode gives hostile clients nothing", func() {
		e := envoyRecipeFrom("Envoy `ext_authz`, HTTP mode")
		Expect(e.headersToAdd).To(ContainElement([2]string{"x-keyward-namespace", docTenant}))
		for _, a := range e.allowedHeaders {
			Expect(a).NotTo(HavePrefix("x-keyward-"), "the client's own x-keyward-* headers are not passed to the verifier")
		}
		runHostile(h, func(r clientReq) gatewayAnswer { return sendEnvoyHTTP(e, r) })
	})
})
