// Command bench-verify measures the verifier on loopback: 10,000 keys in the
// store, GET /v1/auth and the ext_authz gRPC Check under concurrent load,
// each next to a no-op handler served the same way in the same run; plus the
// allocations of the decision. It writes the "## Verification" section of
// docs/benchmarks.md (other sections are kept). Bounded: each phase runs
// for -duration or -max requests, whichever ends first.
//
// The store is a verifytest.MemStore (no API server: creating 10,000 objects
// would measure the API server), but the decision, the limiter, the usage
// recorder, the metrics and the HTTP and gRPC front ends are the real ones.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/policy"
	"keyward.dev/keyward/internal/verify"
	"keyward.dev/keyward/internal/verify/verifytest"
	"keyward.dev/keyward/internal/verify/wire"
	"keyward.dev/keyward/test/bench/loadgen"
)

func main() {
	var (
		out         = flag.String("out", "docs/benchmarks.md", "file whose ## Verification section is (re)written; - for stdout only")
		nKeys       = flag.Int("keys", 10_000, "keys in the store")
		workers     = flag.Int("concurrency", 16, "concurrent client requests")
		duration    = flag.Duration("duration", 5*time.Second, "length of each phase (summed over its rounds)")
		rounds      = flag.Int("rounds", 10, "each phase runs in this many slices, alternating with its no-op, so that changing load on a shared machine hits both alike")
		maxRequests = flag.Int("max", 500_000, "requests per phase at most")
		cpuProfile  = flag.String("cpuprofile", "", "write a CPU profile of the whole run (client and servers) here")
	)
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		must(err)
		must(pprof.StartCPUProfile(f))
		defer pprof.StopCPUProfile()
	}

	store, plains := buildStore(*nKeys)
	v := &verify.Verifier{Store: store, Limiter: verify.NewLimiter(verify.DefaultFailureRate, verify.DefaultFailureBurst, verify.DefaultMaxClients),
		Metrics: verify.NewMetrics(store), Now: time.Now,
		Usage: &verify.Usage{Granularity: time.Hour, HeavyUseThreshold: 1 << 30, Store: store, Log: logr.Discard(), Now: time.Now}}
	must(v.Metrics.Register(prometheus.NewRegistry()))

	// HTTP: the real handler and a no-op, each with server-side timing.
	authTimes, noopTimes := loadgen.NewRecorder(*maxRequests), loadgen.NewRecorder(*maxRequests)
	h := &verify.Handler{Verifier: v, Log: logr.Discard()}
	authURL := loadgen.ServeHTTP(loadgen.Timed(h.Mux(), authTimes)) + verify.PathAuth
	noopURL := loadgen.ServeHTTP(loadgen.Timed(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(verify.HeaderReason, "ok")
		w.WriteHeader(http.StatusOK)
	}), noopTimes)) + verify.PathAuth

	// gRPC: the real ExtAuthz and a no-op Authorization server.
	checkTimes, noopCheckTimes := loadgen.NewRecorder(*maxRequests), loadgen.NewRecorder(*maxRequests)
	checkAddr := serveGRPC(&verify.ExtAuthz{Verifier: v}, checkTimes)
	noopCheckAddr := serveGRPC(noopAuthz{}, noopCheckTimes)

	pick := func() string { return plains[rand.IntN(len(plains))] }
	slice := *duration / time.Duration(*rounds)
	perRound := *maxRequests / *rounds
	httpPhase := func(url string, rec *loadgen.Recorder) loadgen.Result {
		tr := &http.Transport{MaxIdleConnsPerHost: *workers, MaxConnsPerHost: *workers}
		c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		return loadgen.Load(*workers, slice, perRound, rec, func() bool {
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			req.Header.Set("Authorization", "Bearer "+pick())
			resp, err := c.Do(req)
			if err != nil {
				return false
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	}
	grpcPhase := func(addr string, rec *loadgen.Recorder) loadgen.Result {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		must(err)
		defer conn.Close()
		cl := authv3.NewAuthorizationClient(conn)
		return loadgen.Load(*workers, slice, perRound, rec, func() bool {
			resp, err := cl.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
				Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
					Method: "GET", Path: "/api", Headers: map[string]string{"authorization": "Bearer " + pick()}}}}})
			return err == nil && resp.GetStatus().GetCode() == int32(codes.OK)
		})
	}

	fmt.Fprintln(os.Stderr, "warming up")
	httpPhase(authURL, nil)
	grpcPhase(checkAddr, nil)
	var noop, auth, noopCheck, check loadgen.Result
	for r := 0; r < *rounds; r++ {
		fmt.Fprintf(os.Stderr, "round %d/%d\n", r+1, *rounds)
		noop = noop.Merge(httpPhase(noopURL, noopTimes))
		auth = auth.Merge(httpPhase(authURL, authTimes))
		noopCheck = noopCheck.Merge(grpcPhase(noopCheckAddr, noopCheckTimes))
		check = check.Merge(grpcPhase(checkAddr, checkTimes))
	}
	for _, r := range []*loadgen.Result{&noop, &auth, &noopCheck, &check} {
		slices.Sort(r.Client)
		slices.Sort(r.Server)
	}

	decide, verifyPath := allocs(store, plains)
	section := report(*nKeys, *workers, *rounds, *duration, auth, noop, check, noopCheck, decide, verifyPath)
	fmt.Print(section)
	if *out != "-" {
		must(loadgen.WriteSection(*out, "## Verification", section))
		fmt.Fprintln(os.Stderr, "wrote", *out)
	}
}

// buildStore makes 10 tenants with 10 Applications each and n keys in all.
func buildStore(n int) (*verifytest.MemStore, []string) {
	store := verifytest.NewMemStore(verify.KeyIDs)
	plains := make([]string, 0, n)
	for t := 0; t < 10; t++ {
		ns := fmt.Sprintf("tenant-%d", t)
		store.Put(&keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: keyward.TenantSettingsName},
			Spec: keyward.TenantSettingsSpec{APIKeysEnabled: ptr.To(true)}})
		for a := 0; a < 10; a++ {
			store.Put(&keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("app-%d", a)},
				Spec: keyward.ApplicationSpec{Group: "Developers", Team: "team", Scopes: []keyward.Scope{{Name: "orders", Access: keyward.ReadWrite}}}})
		}
	}
	expires := metav1.NewTime(time.Now().Add(24 * time.Hour))
	for i := 0; i < n; i++ {
		m, err := keyformat.Generate()
		must(err)
		ns := fmt.Sprintf("tenant-%d", i%10)
		store.Put(&keyward.AccessKey{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("key-%05d", i)},
			Spec: keyward.AccessKeySpec{Application: fmt.Sprintf("app-%d", (i/10)%10), Owner: "alice", State: keyward.StateActive,
				ExpiresAt: keyward.NewTimestamp(expires.Time), AllowedNetworks: []string{"127.0.0.0/8", "::1/128"}},
			Status: keyward.AccessKeyStatus{Phase: keyward.PhaseActive, KeyID: m.ID, SecretHash: keyformat.HashSecret(m.Secret), ExpiresAt: &expires},
		})
		plains = append(plains, m.Plaintext())
	}
	return store, plains
}

type noopAuthz struct {
	authv3.UnimplementedAuthorizationServer
}

func (noopAuthz) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}}}, nil
}

func serveGRPC(srv authv3.AuthorizationServer, rec *loadgen.Recorder) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	s := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := h(ctx, req)
		rec.Add(time.Since(start))
		return resp, err
	}))
	authv3.RegisterAuthorizationServer(s, srv)
	go func() { _ = s.Serve(ln) }()
	return ln.Addr().String()
}

func allocs(store *verifytest.MemStore, plains []string) (testing.BenchmarkResult, testing.BenchmarkResult) {
	k, _ := store.AccessKeysByID(context.Background(), mustParse(plains[0]).ID)
	app, _ := store.Application(context.Background(), k[0].Namespace, k[0].Spec.Application)
	req := verify.Request{Key: mustParse(plains[0]), Scope: "orders", Access: keyward.ReadOnly}
	req.Addr, _ = wire.ParseHop("127.0.0.1")
	in := verify.Input{AccessKey: k[0], App: app, Tenant: policy.Tenant{Enabled: true}, Now: time.Now()}
	decide := testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !verify.Decide(req, in).Valid {
				b.Fatal("not valid")
			}
		}
	})
	v := &verify.Verifier{Store: store, Now: time.Now}
	call := verify.Call{Key: plains[0], Addr: req.Addr, LimitAddr: req.Addr, Scope: "orders", Access: keyward.ReadOnly}
	whole := testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if r, _ := v.Verify(context.Background(), call); !r.Valid {
				b.Fatal("not valid")
			}
		}
	})
	return decide, whole
}

func mustParse(s string) keyformat.Key {
	k, err := keyformat.Parse(s)
	must(err)
	return k
}

func report(nKeys, workers, rounds int, d time.Duration, auth, noop, check, noopCheck loadgen.Result, decide, whole testing.BenchmarkResult) string {
	var b strings.Builder
	row := func(name string, r loadgen.Result) {
		fmt.Fprintf(&b, "| %s | %d | %.0f | %s | %s | %s | %s | %d |\n", name, r.Requests, r.RPS(),
			loadgen.US(loadgen.Pct(r.Client, .5)), loadgen.US(loadgen.Pct(r.Client, .99)), loadgen.US(loadgen.Pct(r.Server, .5)), loadgen.US(loadgen.Pct(r.Server, .99)), r.Failures)
	}
	fmt.Fprintf(&b, "## Verification\n\n")
	fmt.Fprintf(&b, "`make bench-verify` (`test/bench/verify`), run %s on %d CPUs (%s/%s, %s), shared with other work: %d keys in the store, %d concurrent clients on loopback, %s per endpoint in %d slices alternating with its no-op (load average at the start: %s), keys drawn at random; every key restricted to loopback networks and checked for scope `orders:ReadOnly`. The store is an in-memory index (`verifytest.MemStore`) instead of the informer cache; decision, limiter, usage recording, metrics, HTTP handler and gRPC service are the real ones. Each real endpoint runs next to a no-op served the same way (same server, same client).\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), nKeys, workers, d, rounds, loadgen.Loadavg())
	fmt.Fprintf(&b, "| endpoint | requests | req/s | client p50 | client p99 | server p50 | server p99 | failed |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	row("HTTP no-op", noop)
	row("HTTP `GET /v1/auth`", auth)
	row("gRPC no-op `Check`", noopCheck)
	row("gRPC ext_authz `Check`", check)
	fmt.Fprintf(&b, "\n- `/v1/auth` throughput is **%.2f×** the no-op's (target ≥ 0.7×); server-side p99 **%s** (target ≤ 1 ms).\n",
		auth.RPS()/noop.RPS(), loadgen.US(loadgen.Pct(auth.Server, .99)))
	fmt.Fprintf(&b, "- gRPC `Check` throughput is **%.2f×** the no-op's; server-side p99 **%s**.\n", check.RPS()/noopCheck.RPS(), loadgen.US(loadgen.Pct(check.Server, .99)))
	fmt.Fprintf(&b, "- The decision (`verify.Decide`): %d ns/op, **%d allocs/op** (%d B/op); the whole verification without transport (`Verifier.Verify`: parse, index lookup, Application and tenant reads, decision): %d ns/op, %d allocs/op (%d B/op).\n",
		decide.NsPerOp(), decide.AllocsPerOp(), decide.AllocedBytesPerOp(), whole.NsPerOp(), whole.AllocsPerOp(), whole.AllocedBytesPerOp())
	fmt.Fprintf(&b, "- Client-side latency includes the load generator itself, on the same CPUs; server-side is measured around the handler.\n\n")
	return b.String()
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
