package verify

import (
	"context"
	"net/http"
	"net/netip"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"keyward.dev/keyward/internal/verify/wire"
)

// ExtAuthz implements Envoy's envoy.service.auth.v3.Authorization/Check
// (ext_authz in gRPC mode, as Istio's CUSTOM provider and Envoy Gateway's
// SecurityPolicy extAuth call it) over the same Verifier as /v1/auth.
type ExtAuthz struct {
	authv3.UnimplementedAuthorizationServer
	Verifier *Verifier
	// Trusted: Envoy's source address and the forwarding headers are
	// believed only when the gRPC peer (Envoy) is a trusted proxy.
	Trusted   wire.TrustedProxies
	KeyHeader string
}

// Check verifies the key of the request Envoy describes. OK answers add the
// X-Keyward-* headers (replacing any the client sent) and remove the header
// that carried the key; denials carry 401, 403 or 429 like /v1/auth.
func (a *ExtAuthz) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	attrs := req.GetAttributes()
	hr := attrs.GetRequest().GetHttp()
	hdr := envoyHeaders(hr, a.KeyHeader)
	key, keyHeader := keyAndHeader(hdr, a.KeyHeader)

	var grpcPeer netip.Addr
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		grpcPeer = wire.PeerAddr(p.Addr.String())
	}
	addr := grpcPeer.Unmap()
	if a.Trusted.Contains(grpcPeer) {
		src, _ := wire.ParseHop(attrs.GetSource().GetAddress().GetSocketAddress().GetAddress())
		addr = wire.ClientAddr(src, hdr.Values(HeaderForwardedFor), hdr.Get(HeaderRealIP), a.Trusted)
	}

	// What to check: Envoy's method (the client's real one), the method
	// and X-Keyward-* headers (the client's own, so they can only add
	// checks), and the route's context_extensions, which only the
	// gateway's configuration sets. The path's query is the client's and
	// is not read.
	var ask asked
	ask.method(hr.GetMethod())
	ask.headers(hdr)
	ext := attrs.GetContextExtensions()
	ask.access(ext[QueryAccess])
	ask.scopeName(ext[QueryScope])
	ask.pin(ext[QueryNamespace])
	call := Call{Key: key, Addr: addr, LimitAddr: addr}
	ask.call(&call)
	res, err := a.Verifier.Verify(ctx, call)
	if err != nil {
		return nil, status.Error(codes.Unavailable, "the verifier cannot read its cache yet")
	}
	return CheckResponseFor(res, key == "", keyHeader), nil
}

// CheckResponseFor builds Envoy's answer for a result.
func CheckResponseFor(res Result, noKey bool, keyHeader string) *authv3.CheckResponse {
	code := StatusOf(res.Reason)
	reason := &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: HeaderReason, Value: string(res.Reason)},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}
	if code == http.StatusOK {
		headers := make([]*corev3.HeaderValueOption, 0, len(IdentityHeaders))
		for i, v := range IdentityValues(res) {
			headers = append(headers, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: IdentityHeaders[i], Value: v},
				AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD})
		}
		ok := &authv3.OkHttpResponse{Headers: headers}
		if keyHeader != "" {
			ok.HeadersToRemove = []string{strings.ToLower(keyHeader)}
		}
		return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok}}
	}
	denied := &authv3.DeniedHttpResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode(code)},
		Headers: []*corev3.HeaderValueOption{reason},
		Body:    string(res.Reason) + "\n",
	}
	grpcCode := codes.PermissionDenied
	switch code {
	case http.StatusUnauthorized:
		grpcCode = codes.Unauthenticated
		v := wwwAuthenticateInvalid
		if noKey {
			v = wwwAuthenticate
		}
		denied.Headers = append(denied.Headers, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: HeaderWWWAuthenticate, Value: v}})
	case http.StatusTooManyRequests:
		grpcCode = codes.ResourceExhausted
		denied.Headers = append(denied.Headers, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: HeaderRetryAfter, Value: RetryAfter(res.RetryAfter)}})
	}
	return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(grpcCode), Message: string(res.Reason)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: denied}}
}

// envoyHeaders turns Envoy's header map (lower-case names) into an
// http.Header, keeping only the headers the verifier reads.
func envoyHeaders(hr *authv3.AttributeContext_HttpRequest, extra string) http.Header {
	h := make(http.Header, 8)
	for k, v := range hr.GetHeaders() {
		if wanted(k, extra) {
			h.Add(k, v)
		}
	}
	for _, hv := range hr.GetHeaderMap().GetHeaders() {
		v := hv.GetValue()
		if v == "" {
			v = string(hv.GetRawValue())
		}
		if wanted(hv.GetKey(), extra) {
			h.Add(hv.GetKey(), v)
		}
	}
	return h
}

// checkHeaders are the headers Check reads.
var checkHeaders = []string{HeaderAuthorization, HeaderAPIKey, HeaderForwardedFor, HeaderRealIP, HeaderScope, HeaderAccess,
	HeaderNamespace, HeaderForwardedMethod, HeaderOriginalMethod}

// wanted: the headers Check reads.
func wanted(name, extra string) bool {
	for _, h := range checkHeaders {
		if strings.EqualFold(name, h) {
			return true
		}
	}
	return extra != "" && strings.EqualFold(name, extra)
}

// keyAndHeader is KeyFrom, also saying which header carried the key.
func keyAndHeader(h http.Header, extra string) (string, string) {
	key := wire.KeyFrom(h, extra)
	if key == "" {
		return "", ""
	}
	for _, name := range []string{extra, HeaderAuthorization, HeaderAPIKey} {
		if name != "" && strings.Contains(h.Get(name), key) {
			return key, name
		}
	}
	return key, ""
}
