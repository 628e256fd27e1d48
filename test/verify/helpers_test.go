package verify_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/secrets"
	"keyward.dev/keyward/internal/verify"
	"keyward.dev/keyward/test/harness/testenv"
)

// seenKeys are the full keys and secrets the suite read; the leak check
// looks for each in the manager's log, Events and AccessKeys.
var seenKeys = struct {
	sync.Mutex
	keys map[string]bool
}{keys: map[string]bool{}}

func newTenant(enabled bool) string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "v-" + rand.String(8)}}
	Expect(k8s.Create(ctx, ns)).To(Succeed())
	Expect(k8s.Create(ctx, &keyward.TenantSettings{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: keyward.TenantSettingsName},
		Spec:       keyward.TenantSettingsSpec{APIKeysEnabled: ptr.To(enabled), MaxKeysPerOwner: 1000},
	})).To(Succeed())
	return ns.Name
}

func newApp(ns, name, group string, scopes ...keyward.Scope) *keyward.Application {
	app := &keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: keyward.ApplicationSpec{Group: group, Team: "payments", MaxAccessKeys: 100, Scopes: scopes}}
	Expect(k8s.Create(ctx, app)).To(Succeed())
	return app
}

func newKey(ns, name, app string, opts ...func(*keyward.AccessKey)) *keyward.AccessKey {
	k := &keyward.AccessKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: keyward.AccessKeySpec{Application: app, Owner: "alice"}}
	for _, o := range opts {
		o(k)
	}
	Expect(k8s.Create(ctx, k)).To(Succeed())
	return k
}

func sc(name string, a keyward.AccessLevel) keyward.Scope {
	return keyward.Scope{Name: name, Access: a}
}

func update[T client.Object](obj T, mutate func(T)) {
	GinkgoHelper()
	Expect(retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		mutate(obj)
		return k8s.Update(ctx, obj)
	})).To(Succeed())
}

func eventuallyPhase(key *keyward.AccessKey, phase keyward.KeyPhase) *keyward.AccessKey {
	GinkgoHelper()
	got := &keyward.AccessKey{}
	Eventually(func(g Gomega) {
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(key), got)).To(Succeed())
		g.Expect(got.Status.Phase).To(Equal(phase))
	}, timeout, interval).Should(Succeed())
	return got
}

// issued waits for the key to be Active and returns the key from its Secret,
// as a workload would read it. It never prints it.
func issued(key *keyward.AccessKey) string {
	GinkgoHelper()
	k := eventuallyPhase(key, keyward.PhaseActive)
	return material(k)
}

func material(k *keyward.AccessKey) string {
	GinkgoHelper()
	var m keyformat.Key
	Eventually(func(g Gomega) {
		var s corev1.Secret
		g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: k.Namespace, Name: k.SecretName()}, &s)).To(Succeed())
		var ok bool
		m, ok = secrets.Material(&s)
		g.Expect(ok).To(BeTrue())
		cur := &keyward.AccessKey{}
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(k), cur)).To(Succeed())
		g.Expect(m.ID).To(Equal(cur.Status.KeyID), "the Secret holds the key status describes")
	}, timeout, interval).Should(Succeed())
	seenKeys.Lock()
	seenKeys.keys[m.Plaintext()] = true
	seenKeys.keys[m.Secret] = true
	seenKeys.Unlock()
	return m.Plaintext()
}

// clientIPs hands every check its own client address, so that guesses in
// one spec do not use up another's rate limit.
var clientIPs atomic.Int32

func nextClientIP() string {
	n := clientIPs.Add(1)
	return fmt.Sprintf("192.0.2.%d", n%250+1)
}

// answer is what one check through one front end gave.
type answer struct {
	Status int
	Reason string
	Header http.Header
}

// auth calls GET /v1/auth with the key as a bearer token from client ip.
func auth(key, ip string, hdr ...string) answer {
	GinkgoHelper()
	req, err := http.NewRequest(http.MethodGet, verifyURL+verify.PathAuth, nil)
	Expect(err).NotTo(HaveOccurred())
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Header.Set("X-Forwarded-For", ip)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := httpClient.Do(req)
	Expect(err).NotTo(HaveOccurred())
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return answer{Status: resp.StatusCode, Reason: resp.Header.Get(verify.HeaderReason), Header: resp.Header}
}

// verifyJSON calls POST /v1/verify.
func verifyJSON(body verify.VerifyRequest) verify.Result {
	GinkgoHelper()
	b, _ := json.Marshal(body)
	resp, err := httpClient.Post(verifyURL+verify.PathVerify, "application/json", strings.NewReader(string(b)))
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	Expect(resp.StatusCode).To(Equal(http.StatusOK))
	var r verify.Result
	Expect(json.NewDecoder(resp.Body).Decode(&r)).To(Succeed())
	return r
}

var (
	grpcOnce sync.Once
	grpcConn *grpc.ClientConn
)

// check calls Envoy's ext_authz Check as Envoy would: the client's address
// as the source, its headers, method and path.
func check(key, ip, method, path string, hdr ...string) *authv3.CheckResponse {
	GinkgoHelper()
	grpcOnce.Do(func() {
		var err error
		grpcConn, err = grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		Expect(err).NotTo(HaveOccurred())
	})
	headers := map[string]string{":method": method, ":path": path}
	if key != "" {
		headers["authorization"] = "Bearer " + key
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		headers[strings.ToLower(hdr[i])] = hdr[i+1]
	}
	resp, err := authv3.NewAuthorizationClient(grpcConn).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 40000}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Path: path, Headers: headers, Protocol: "HTTP/1.1"}},
	}})
	Expect(err).NotTo(HaveOccurred())
	return resp
}

// grpcStatus is the HTTP status Envoy would answer with: 200 for OK.
func grpcStatus(r *authv3.CheckResponse) int {
	if d := r.GetDeniedResponse(); d != nil {
		return int(d.GetStatus().GetCode())
	}
	return http.StatusOK
}

func grpcHeader(r *authv3.CheckResponse, name string) string {
	hs := r.GetOkResponse().GetHeaders()
	if d := r.GetDeniedResponse(); d != nil {
		hs = d.GetHeaders()
	}
	for _, h := range hs {
		if strings.EqualFold(h.GetHeader().GetKey(), name) {
			return h.GetHeader().GetValue()
		}
	}
	return ""
}

// expectNoKeyMaterialLeaked looks for every key the suite read in the
// manager's log, in every Event and in every AccessKey's status.
func expectNoKeyMaterialLeaked() {
	seenKeys.Lock()
	defer seenKeys.Unlock()
	Expect(seenKeys.keys).NotTo(BeEmpty())
	Expect(testenv.FindKeyMaterial(ctx, k8s, seenKeys.keys, managerLog.String())).To(Succeed())
}
