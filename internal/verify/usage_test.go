package verify

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/verify/verifytest"
)

// fakeWriter records status patches.
type fakeWriter struct {
	client.SubResourceWriter
	mu      sync.Mutex
	patches []string
	owners  []string
}

func (w *fakeWriter) Patch(_ context.Context, obj client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
	data, _ := p.Data(obj)
	po := &client.SubResourcePatchOptions{}
	po.ApplyOptions(opts)
	w.mu.Lock()
	defer w.mu.Unlock()
	if p.Type() != types.MergePatchType {
		panic("not a merge patch")
	}
	w.patches = append(w.patches, obj.GetName()+" "+string(data))
	w.owners = append(w.owners, po.FieldManager)
	return nil
}

type fakeRecorder struct {
	mu      sync.Mutex
	reasons []string
}

func (r *fakeRecorder) Eventf(_ runtime.Object, _ runtime.Object, eventtype, reason, _, note string, _ ...interface{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reasons = append(r.reasons, eventtype+" "+reason)
	if strings.Contains(note, "kw_") {
		panic("key material in an Event")
	}
}

func TestUsageLastUsedAt(t *testing.T) {
	now := verifytest.T0
	k := verifytest.IssuedKey(verifytest.MustKey(t))
	store := verifytest.NewMemStore(KeyIDs, k)
	w := &fakeWriter{}
	u := &Usage{Granularity: time.Hour, Store: store, Writer: w, Log: logr.Discard(), Now: func() time.Time { return now }}
	u.Flush(context.Background())
	if len(w.patches) != 0 {
		t.Fatal("nothing used, nothing written")
	}
	u.Record("t", "k1", now.Add(1500*time.Millisecond))
	u.Flush(context.Background())
	want := `k1 {"status":{"lastUsedAt":"2026-11-24T12:00:01Z"}}`
	if len(w.patches) != 1 || w.patches[0] != want || w.owners[0] != LastUsedFieldManager {
		t.Fatalf("patches %v by %v, want [%s] by %s", w.patches, w.owners, want, LastUsedFieldManager)
	}
	// Within the granularity: no second write, however often used.
	for i := 0; i < 10; i++ {
		u.Record("t", "k1", now.Add(time.Duration(i)*time.Minute))
		u.Flush(context.Background())
	}
	if len(w.patches) != 1 {
		t.Fatalf("written again within the granularity: %v", w.patches)
	}
	// Another replica wrote a newer value (seen in the cache): not written back.
	k2 := k.DeepCopy()
	k2.Status.LastUsedAt = verifytest.At(2 * time.Hour)
	store.Put(k2)
	u.Record("t", "k1", now.Add(90*time.Minute))
	u.Flush(context.Background())
	if len(w.patches) != 1 {
		t.Fatalf("moved backwards: %v", w.patches)
	}
	// A granularity after the cached value: written.
	u.Record("t", "k1", now.Add(3*time.Hour+time.Second))
	u.Flush(context.Background())
	if len(w.patches) != 2 || !strings.Contains(w.patches[1], "15:00:01Z") {
		t.Fatalf("patches %v", w.patches)
	}
}

func TestUsageHeavyUse(t *testing.T) {
	now := verifytest.T0
	k := verifytest.IssuedKey(verifytest.MustKey(t))
	store := verifytest.NewMemStore(KeyIDs, k)
	rec := &fakeRecorder{}
	m := NewMetrics(store)
	if err := m.Register(prometheus.NewRegistry()); err != nil {
		t.Fatal(err)
	}
	u := &Usage{Granularity: time.Hour, HeavyUseThreshold: 5, Store: store, Recorder: rec, Metrics: m,
		Log: logr.Discard(), Now: func() time.Time { return now }}
	gauge := func() float64 { return testutil.ToFloat64(m.heavyUse.WithLabelValues("t", "k1")) }
	for i := 0; i < 5; i++ {
		u.Record("t", "k1", now)
	}
	u.Flush(context.Background())
	if len(rec.reasons) != 0 || testutil.CollectAndCount(m.heavyUse) != 0 {
		t.Fatal("at the threshold is not over it")
	}
	u.Record("t", "k1", now)
	u.Flush(context.Background())
	if len(rec.reasons) != 1 || rec.reasons[0] != "Warning "+EventHeavyUse || gauge() != 1 {
		t.Fatalf("events %v gauge %v", rec.reasons, gauge())
	}
	// Still heavy the next minute: no second Event within the hour.
	now = now.Add(time.Minute)
	for i := 0; i < 10; i++ {
		u.Record("t", "k1", now)
	}
	u.Flush(context.Background())
	if len(rec.reasons) != 1 {
		t.Fatalf("second Event within the hour: %v", rec.reasons)
	}
	// Two quiet minutes later the gauge clears.
	now = now.Add(2 * time.Minute)
	u.Record("t", "k1", now)
	u.Flush(context.Background())
	if testutil.CollectAndCount(m.heavyUse) != 0 {
		t.Fatal("heavy use shown after it ended")
	}
	// An hour after the first Event, heavy again: a second Event.
	now = verifytest.T0.Add(time.Hour + time.Minute)
	for i := 0; i < 6; i++ {
		u.Record("t", "k1", now)
	}
	u.Flush(context.Background())
	if len(rec.reasons) != 2 {
		t.Fatalf("events %v", rec.reasons)
	}
}

func TestMetricsCollector(t *testing.T) {
	a, b := verifytest.IssuedKey(verifytest.MustKey(t)), verifytest.IssuedKey(verifytest.MustKey(t))
	b.Name, b.Status.Phase, b.Status.ExpiresAt = "k2", keyward.PhaseExpired, verifytest.At(-time.Hour)
	m := NewMetrics(verifytest.NewMemStore(KeyIDs, a, b))
	reg := prometheus.NewRegistry()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	// Registering again (a second verifier in one process) works.
	if err := NewMetrics(verifytest.NewMemStore(KeyIDs, a, b)).Register(reg); err != nil {
		t.Fatal(err)
	}
	m.Observe(Result{Reason: ReasonOK, Namespace: "t", Application: "billing"}, time.Millisecond)
	expected := `
# HELP keyward_access_keys AccessKeys by namespace, application and phase.
# TYPE keyward_access_keys gauge
keyward_access_keys{application="billing",namespace="t",phase="Active"} 1
keyward_access_keys{application="billing",namespace="t",phase="Expired"} 1
# HELP keyward_access_key_expiry_timestamp_seconds The effective expiry of an AccessKey (status.expiresAt), in seconds since the epoch, with its application and phase; reported by the leader only, and not at all with --metrics-per-key=false.
# TYPE keyward_access_key_expiry_timestamp_seconds gauge
keyward_access_key_expiry_timestamp_seconds{application="billing",name="k2",namespace="t",phase="Expired"} 1.795518e+09
# HELP keyward_verify_requests_total Key verifications by namespace, application and result (the reason, docs/gateways.md).
# TYPE keyward_verify_requests_total counter
keyward_verify_requests_total{application="billing",namespace="t",result="ok"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expected), MetricAccessKeys, MetricKeyExpiry, MetricRequests); err != nil {
		t.Fatal(err)
	}
}

// The per-key expiry series come from the leader only (one series per key
// in the cluster, not one per replica) and from no replica with
// --metrics-per-key=false; the per-phase counts from every replica.
func TestMetricsPerKeyOnlyWhereAsked(t *testing.T) {
	key := verifytest.IssuedKey(verifytest.MustKey(t))
	key.Status.ExpiresAt = verifytest.At(time.Hour)
	for _, tc := range []struct {
		name       string
		perKey     func() bool
		wantExpiry int
	}{
		{"leader", func() bool { return true }, 1},
		{"not the leader, or --metrics-per-key=false", func() bool { return false }, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMetrics(verifytest.NewMemStore(KeyIDs, key))
			m.ReportPerKeyWhen(tc.perKey)
			reg := prometheus.NewRegistry()
			if err := m.Register(reg); err != nil {
				t.Fatal(err)
			}
			counts := map[string]int{}
			families, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range families {
				counts[f.GetName()] = len(f.GetMetric())
			}
			if counts[MetricKeyExpiry] != tc.wantExpiry || counts[MetricAccessKeys] != 1 {
				t.Fatalf("series: %v, want %d expiry and 1 count", counts, tc.wantExpiry)
			}
		})
	}
}

func TestCheckResponseFor(t *testing.T) {
	ok := CheckResponseFor(Result{Valid: true, Reason: ReasonOK, Namespace: "t", KeyID: "id"}, false, "X-API-Key")
	if got := ok.GetOkResponse().GetHeadersToRemove(); len(got) != 1 || got[0] != "x-api-key" {
		t.Fatalf("headers to remove %v", got)
	}
	for _, h := range ok.GetOkResponse().GetHeaders() {
		if h.GetAppendAction().String() != "OVERWRITE_IF_EXISTS_OR_ADD" {
			t.Fatalf("%s may be appended to the client's", h.GetHeader().GetKey())
		}
	}
	for reason, status := range map[Reason]int{ReasonUnknown: 401, ReasonScopeNotAllowed: 403, ReasonRateLimited: 429} {
		r := CheckResponseFor(Result{Reason: reason, RetryAfter: 1500 * time.Millisecond}, false, "")
		if int(r.GetDeniedResponse().GetStatus().GetCode()) != status || r.GetStatus().GetCode() == 0 {
			t.Fatalf("%s: %v", reason, r)
		}
	}
}

func TestExtAuthzCheck(t *testing.T) {
	f := newFixture(t, "", nil)
	a := &ExtAuthz{Verifier: &Verifier{Store: f.Store, Now: func() time.Time { return f.now }}, KeyHeader: "X-Custom-Key"}
	var ext map[string]string // the route's context_extensions
	check := func(method, path string, headers map[string]string) *authv3.CheckResponse {
		resp, err := a.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{ContextExtensions: ext,
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: method, Path: path, Headers: headers}}}})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for header, remove := range map[string]string{"x-api-key": "x-api-key", "x-custom-key": "x-custom-key"} {
		r := check("GET", "/x", map[string]string{header: f.Active})
		if r.GetOkResponse() == nil || len(r.GetOkResponse().GetHeadersToRemove()) != 1 || r.GetOkResponse().GetHeadersToRemove()[0] != remove {
			t.Fatalf("%s: %v", header, r.GetOkResponse().GetHeadersToRemove())
		}
	}
	ext = map[string]string{"scope": "reports"}
	if r := check("POST", "/reports", map[string]string{"authorization": "Bearer " + f.Scoped}); r.GetDeniedResponse().GetStatus().GetCode() != 403 {
		t.Fatalf("POST on a ReadOnly scope: %v", r.GetDeniedResponse())
	}
	if r := check("GET", "/reports", map[string]string{"authorization": "Bearer " + f.Scoped}); r.GetOkResponse() == nil {
		t.Fatalf("GET on a ReadOnly scope: %v", r.GetDeniedResponse())
	}
	ext = nil
	if r := check("GET", "/", map[string]string{"authorization": "Bearer " + f.Scoped, "x-keyward-scope": "orders"}); r.GetDeniedResponse().GetStatus().GetCode() != 403 {
		t.Fatal("scope from X-Keyward-Scope")
	}
	if r := check("GET", "/", nil); r.GetDeniedResponse().GetStatus().GetCode() != 401 {
		t.Fatal("no key")
	}
}
