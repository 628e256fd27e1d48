// Command bench-token measures access-token issuance (POST /v1/token)
// against a no-op handler on the same server, at 1, 8 and 64 concurrent
// clients, and the cost of one local token validation with go-oidc against
// a POST /v1/verify round trip. It writes the "## Tokens" section of
// docs/benchmarks.md.
package main

import (
	"context"
	"crypto"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/token"
	"keyward.dev/keyward/internal/verify"
	"keyward.dev/keyward/internal/verify/verifytest"
	"keyward.dev/keyward/test/bench/loadgen"
)

const issuer = "https://keyward.bench"

func main() {
	var (
		out      = flag.String("out", "docs/benchmarks.md", "file whose ## Tokens section is (re)written; - for stdout only")
		nKeys    = flag.Int("keys", 1000, "keys in the store")
		duration = flag.Duration("duration", 3*time.Second, "length of each phase (summed over its rounds)")
		rounds   = flag.Int("rounds", 6, "slices per phase, alternating with the no-op")
		maxReq   = flag.Int("max", 300_000, "requests per phase at most")
	)
	flag.Parse()

	store, plains := buildStore(*nKeys)
	v := &verify.Verifier{Store: store, Metrics: verify.NewMetrics(store), Now: time.Now,
		Usage: &verify.Usage{Granularity: time.Hour, HeavyUseThreshold: 1 << 30, Store: store, Log: logr.Discard(), Now: time.Now}}
	must(v.Metrics.Register(prometheus.NewRegistry()))
	scheme := k8sruntime.NewScheme()
	must(corev1.AddToScheme(scheme))
	c := fake.NewClientBuilder().WithScheme(scheme).Build()
	ring := &token.KeyRing{Namespace: "keyward-system", Name: "signing", Reader: c, Writer: c, Log: logr.Discard(),
		Schedule: token.Schedule{Rotation: 720 * time.Hour, TTL: 15 * time.Minute, Margin: time.Minute}}
	must(ring.Sync(context.Background()))
	iss, err := token.NewIssuer(issuer, 15*time.Minute, time.Minute, ring)
	must(err)
	tm := token.NewMetrics()
	must(tm.Register(prometheus.NewRegistry()))
	h := &token.Handler{Issuer: iss, Verifier: v, Metrics: tm, Log: logr.Discard(), Now: time.Now}

	// One server: the real mux and a no-op under /noop, each timed.
	tokenTimes, noopTimes := loadgen.NewRecorder(*maxReq), loadgen.NewRecorder(*maxReq)
	real := h.Mux()
	(&verify.Handler{Verifier: v, Log: logr.Discard()}).Routes(real) // POST /v1/verify, for the round trip below
	mux := http.NewServeMux()
	mux.Handle("/", loadgen.Timed(real, tokenTimes))
	mux.Handle("/noop", loadgen.Timed(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"access_token":"x","token_type":"Bearer","expires_in":900,"scope":""}`)
	}), noopTimes))
	base := loadgen.ServeHTTP(mux)

	pick := func() (string, string) {
		p := plains[rand.IntN(len(plains))]
		k, _ := keyformat.Parse(p)
		return k.ID, p
	}
	body := url.Values{"grant_type": {"client_credentials"}}.Encode()
	phase := func(workers int, path string, rec *loadgen.Recorder, slice time.Duration, max int) loadgen.Result {
		tr := &http.Transport{MaxIdleConnsPerHost: workers, MaxConnsPerHost: workers}
		cl := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		return loadgen.Load(workers, slice, max, rec, func() bool {
			req, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			id, secret := pick()
			req.SetBasicAuth(id, secret)
			resp, err := cl.Do(req)
			if err != nil {
				return false
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	}
	fmt.Fprintln(os.Stderr, "warming up")
	phase(8, token.PathToken, nil, time.Second, *maxReq)
	type row struct {
		workers     int
		token, noop loadgen.Result
	}
	var rows []row
	slice := *duration / time.Duration(*rounds)
	for _, w := range []int{1, 8, 64} {
		var r row
		r.workers = w
		for i := 0; i < *rounds; i++ {
			fmt.Fprintf(os.Stderr, "%d clients, round %d/%d\n", w, i+1, *rounds)
			r.noop = r.noop.Merge(phase(w, "/noop", noopTimes, slice, *maxReq / *rounds))
			r.token = r.token.Merge(phase(w, token.PathToken, tokenTimes, slice, *maxReq / *rounds))
		}
		for _, x := range []*loadgen.Result{&r.noop, &r.token} {
			slices.Sort(x.Client)
			slices.Sort(x.Server)
		}
		rows = append(rows, r)
	}

	// Local validation with go-oidc (the key set in memory, as a gateway
	// holds it after its first JWKS fetch) vs a /v1/verify round trip.
	id, secret := pick()
	form := url.Values{"grant_type": {"client_credentials"}}.Encode()
	req, _ := http.NewRequest(http.MethodPost, base+token.PathToken, strings.NewReader(form))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(id, secret)
	resp, err := http.DefaultClient.Do(req)
	must(err)
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	signed := regexp.MustCompile(`"access_token":"([^"]+)"`).FindStringSubmatch(string(raw))[1]
	set, _ := ring.JWKS(time.Now())
	var pubs []crypto.PublicKey
	for _, k := range set.Keys {
		pubs = append(pubs, k.Key)
	}
	ver := oidc.NewVerifier(issuer, &oidc.StaticKeySet{PublicKeys: pubs}, &oidc.Config{ClientID: token.TenantAudience(issuer, "t"), SupportedSigningAlgs: []string{"ES256"}})
	local := testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ver.Verify(context.Background(), signed); err != nil {
				b.Fatal(err)
			}
		}
	})
	verifyBody := `{"key":"` + secret + `"}`
	rtCl := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	var rts []time.Duration
	for i := 0; i < 5000; i++ {
		t := time.Now()
		resp, err := rtCl.Post(base+verify.PathVerify, "application/json", strings.NewReader(verifyBody))
		must(err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		rts = append(rts, time.Since(t))
	}
	slices.Sort(rts)

	var b strings.Builder
	fmt.Fprintf(&b, "## Tokens\n\n")
	fmt.Fprintf(&b, "`make bench-token` (`test/bench/token`), run %s on %d CPUs (%s/%s, %s), shared with other work (load average at the end: %s): %d keys in an in-memory store (`verifytest.MemStore`), keys drawn at random, HTTP Basic client authentication, ES256 signing; the real handler (`POST /v1/token`: form, client authentication through the verifier, claims, signature) and a no-op handler answering a canned token response on the same server, %s per phase in %d slices alternating with the no-op, loopback.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), loadgen.Loadavg(), *nKeys, *duration, *rounds)
	fmt.Fprintf(&b, "| clients | endpoint | requests | req/s | client p50 | client p99 | server p50 | server p99 | failed | vs no-op |\n")
	fmt.Fprintf(&b, "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rows {
		for _, x := range []struct {
			name string
			res  loadgen.Result
		}{{"no-op", r.noop}, {"`POST /v1/token`", r.token}} {
			ratio := ""
			if x.name != "no-op" {
				ratio = fmt.Sprintf("%.2f×", x.res.RPS()/r.noop.RPS())
			}
			fmt.Fprintf(&b, "| %d | %s | %d | %.0f | %s | %s | %s | %s | %d | %s |\n", r.workers, x.name, x.res.Requests, x.res.RPS(),
				loadgen.US(loadgen.Pct(x.res.Client, .5)), loadgen.US(loadgen.Pct(x.res.Client, .99)), loadgen.US(loadgen.Pct(x.res.Server, .5)), loadgen.US(loadgen.Pct(x.res.Server, .99)), x.res.Failures, ratio)
		}
	}
	fmt.Fprintf(&b, "\n- One local validation of a token with go-oidc (`IDTokenVerifier.Verify`, key set in memory: ES256 signature, iss, aud, exp): **%s** (%d allocs/op), against a `POST /v1/verify` round trip on loopback (one client, keep-alive): p50 **%s**, p99 %s.\n",
		loadgen.US(time.Duration(local.NsPerOp())), local.AllocsPerOp(), loadgen.US(loadgen.Pct(rts, .5)), loadgen.US(loadgen.Pct(rts, .99)))
	fmt.Fprintf(&b, "- Goals (issue 11): issuance ≥ 0.5× the no-op's throughput, server-side p99 ≤ 2 ms.\n")
	fmt.Fprintf(&b, "- Client-side latency includes the load generator, on the same CPUs; server-side is measured around the handler.\n")
	section := b.String()
	fmt.Print(section)
	if *out != "-" {
		must(loadgen.WriteSection(*out, "## Tokens", section))
		fmt.Fprintln(os.Stderr, "wrote", *out)
	}
}

func buildStore(n int) (*verifytest.MemStore, []string) {
	store := verifytest.NewMemStore(verify.KeyIDs)
	store.Put(&keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: "t", Name: keyward.TenantSettingsName},
		Spec: keyward.TenantSettingsSpec{APIKeysEnabled: ptr.To(true)}})
	store.Put(&keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: "t", Name: "app"},
		Spec: keyward.ApplicationSpec{Group: "Developers", Team: "team", Scopes: []keyward.Scope{{Name: "orders", Access: keyward.ReadWrite}}}})
	expires := metav1.NewTime(time.Now().Add(24 * time.Hour))
	var plains []string
	for i := 0; i < n; i++ {
		m, err := keyformat.Generate()
		must(err)
		store.Put(&keyward.AccessKey{
			ObjectMeta: metav1.ObjectMeta{Namespace: "t", Name: fmt.Sprintf("key-%05d", i)},
			Spec: keyward.AccessKeySpec{Application: "app", Owner: "alice", State: keyward.StateActive,
				ExpiresAt: keyward.NewTimestamp(expires.Time), AllowedNetworks: []string{"127.0.0.0/8", "::1/128"}},
			Status: keyward.AccessKeyStatus{Phase: keyward.PhaseActive, KeyID: m.ID, SecretHash: keyformat.HashSecret(m.Secret), ExpiresAt: &expires},
		})
		plains = append(plains, m.Plaintext())
	}
	return store, plains
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-token:", err)
		os.Exit(1)
	}
}
