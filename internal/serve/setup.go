package serve

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/token"
	"keyward.dev/keyward/internal/verify"
	"keyward.dev/keyward/internal/verify/wire"
)

// Verification is what SetupWithManager wires: the pieces tests reach.
type Verification struct {
	Verifier *verify.Verifier
	Handler  *verify.Handler
	Usage    *verify.Usage
	Metrics  *verify.Metrics
	HTTP     *Server
	GRPC     *GRPCServer
	// Tokens and Keys are nil when tokens are off.
	Tokens *token.Handler
	Keys   *token.KeyRing
	// TLS keeps the self-signed certificate; nil unless --verify-tls=self-signed.
	TLS *SelfSigned
	// Ready is the readiness check registered with the manager.
	Ready func(*http.Request) error
}

// The verifier reads AccessKeys, Applications and TenantSettings (the
// controllers' rules already grant the reads), patches accesskeys/status
// (lastUsedAt) and records HeavyUse Events.
// +kubebuilder:rbac:groups=keyward.dev,resources=accesskeys;applications;tenantsettings,verbs=get;list;watch
// +kubebuilder:rbac:groups=keyward.dev,resources=accesskeys/status,verbs=patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// The token signing Secret is read, created and updated, and so is the
// self-signed TLS Secret, which cert-controller's rotator also lists and
// watches in the manager's namespace (the controllers' rules already grant
// these on Secrets). The CA ConfigMap is written by a namespaced Role of
// the install (config/manager/rbac.yaml), not by a marker.
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update

// SetupWithManager registers the key-ID index, the verification servers (on
// every replica: they need no leader election), usage reporting, the
// metrics, the token service with its signing keys (unless opts.Tokens is
// off), and a readiness check that fails until the caches are synced.
func SetupWithManager(ctx context.Context, mgr ctrl.Manager, opts Options) (*Verification, error) {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &keyward.AccessKey{}, verify.IndexKeyID, verify.KeyIDs); err != nil {
		return nil, err
	}
	trusted, err := wire.ParseTrustedProxies(opts.TrustedProxies)
	if err != nil {
		return nil, err
	}
	if err := opts.validateTLS(); err != nil {
		return nil, err
	}
	mgrNS := ManagerNamespace()
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	log := mgr.GetLogger().WithName("verifier")
	store := verify.CacheStore{Reader: mgr.GetCache()}
	m := verify.NewMetrics(store)
	if err := m.Register(metrics.Registry); err != nil {
		return nil, err
	}
	usage := &verify.Usage{
		Granularity: opts.LastUsedGran, HeavyUseThreshold: opts.HeavyUseThreshold, FlushInterval: opts.FlushInterval,
		Store: store, Writer: mgr.GetClient().Status(), Recorder: mgr.GetEventRecorder(verify.EventSource),
		Metrics: m, Log: log, Now: now,
	}
	if usage.FlushInterval <= 0 {
		usage.FlushInterval = verify.DefaultFlushInterval
	}
	v := &verify.Verifier{
		Store: store, Limiter: verify.NewLimiter(opts.FailureRate, opts.FailureBurst, opts.MaxClients),
		APIKeysEnabledByDefault: opts.APIKeysEnabledByDefault, Usage: usage, Metrics: m, Now: now,
	}
	h := &verify.Handler{Verifier: v, Trusted: trusted, KeyHeader: opts.KeyHeader, Log: log}
	out := &Verification{Verifier: v, Handler: h, Usage: usage, Metrics: m}
	mux := http.NewServeMux()
	h.Routes(mux)
	if opts.Tokens {
		ns := opts.TokenSigningNamespace
		if ns == "" {
			ns = mgrNS
		}
		ring := &token.KeyRing{
			Namespace: ns, Name: opts.TokenSigningSecret, Refresh: opts.TokenSigningRefresh,
			Schedule: token.Schedule{Rotation: opts.TokenSigningRotation, TTL: opts.TokenTTL, Margin: opts.TokenSigningRefresh + opts.TokenJWKSMaxAge},
			Reader:   mgr.GetAPIReader(), Writer: mgr.GetClient(), Log: log.WithName("signing-keys"), Now: now,
		}
		if opts.TokenSigningRotation <= 0 {
			return nil, fmt.Errorf("--token-signing-rotation must be positive, not %s", opts.TokenSigningRotation)
		}
		issuer := opts.TokenIssuer
		if issuer == "" {
			issuer = DefaultIssuer(opts.TLS, opts.BindAddress, opts.ServiceName, mgrNS)
		}
		iss, err := token.NewIssuer(issuer, opts.TokenTTL, opts.TokenJWKSMaxAge, ring)
		if err != nil {
			return nil, err
		}
		tm := token.NewMetrics()
		if err := tm.Register(metrics.Registry); err != nil {
			return nil, err
		}
		log.Info("access tokens", "issuer", issuer, "tls", opts.TLS, "plaintextAllowed", opts.TokenAllowPlaintext)
		if err := mgr.Add(ring); err != nil {
			return nil, err
		}
		out.Tokens = &token.Handler{Issuer: iss, Verifier: v, Trusted: trusted, Metrics: tm, Log: log, Now: now}
		out.Tokens.Routes(mux)
		out.Keys = ring
	}
	if err := mgr.Add(usage); err != nil {
		return nil, err
	}
	synced := &syncGate{cache: mgr.GetCache()}
	m.CollectWhen(synced.ready.Load)
	m.ReportPerKeyWhen(perKeyMetrics(opts.PerKeyMetrics, mgr.Elected()))
	if err := mgr.Add(synced); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck(ReadyzCheck, synced.Check); err != nil {
		return nil, err
	}
	out.Ready = synced.Check
	httpOn, grpcOn := opts.BindAddress != Off && opts.BindAddress != "", opts.GRPCBindAddress != Off && opts.GRPCBindAddress != ""
	certDir := opts.CertDir
	if opts.TLS == TLSSelfSigned && (httpOn || grpcOn) {
		if certDir, err = os.MkdirTemp("", "keyward-verifier-tls-"); err != nil {
			return nil, fmt.Errorf("--verify-tls=%s: a directory for the serving certificate: %w", TLSSelfSigned, err)
		}
		out.TLS = &SelfSigned{Namespace: mgrNS, Secret: opts.TLSSecret, ConfigMap: opts.TLSCAConfigMap, Service: opts.ServiceName,
			Dir: certDir, Reader: mgr.GetAPIReader(), Writer: mgr.GetClient(), Manager: mgr, Log: log.WithName("tls")}
		if err := mgr.Add(out.TLS); err != nil {
			return nil, err
		}
		if err := mgr.AddReadyzCheck(ReadyzTLSCheck, out.TLS.Check); err != nil {
			return nil, err
		}
	}
	var certs func(context.Context) error
	if out.TLS != nil {
		certs = out.TLS.wait
	}
	if httpOn {
		out.HTTP = &Server{endpoint: endpoint{Addr: opts.BindAddress, CertDir: certDir, Log: log, gate: synced, certs: certs},
			Handler: token.RequireTLS(mux, opts.TokenAllowPlaintext)}
		if err := mgr.Add(out.HTTP); err != nil {
			return nil, err
		}
	}
	if grpcOn {
		out.GRPC = &GRPCServer{endpoint: endpoint{Addr: opts.GRPCBindAddress, CertDir: certDir, Log: log, gate: synced, certs: certs},
			Auth: &verify.ExtAuthz{Verifier: v, Trusted: trusted, KeyHeader: opts.KeyHeader}}
		if err := mgr.Add(out.GRPC); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// perKeyMetrics reports whether this replica reports the per-key series: only
// once it is the leader (elected is closed at once without leader election),
// and never when switched off. A replica that loses the lease exits, so the
// answer never goes back to false.
func perKeyMetrics(on bool, elected <-chan struct{}) func() bool {
	return func() bool {
		if !on {
			return false
		}
		select {
		case <-elected:
			return true
		default:
			return false
		}
	}
}

// syncGate starts the informers the verifier reads and opens once they are synced.
type syncGate struct {
	cache cache.Cache
	ready atomic.Bool
	done  chan struct{}
}

func (g *syncGate) init() {
	if g.done == nil {
		g.done = make(chan struct{})
	}
}

// Start gets (and so starts) the informers of AccessKeys, Applications and
// TenantSettings and waits for them to sync.
func (g *syncGate) Start(ctx context.Context) error {
	for _, obj := range []client.Object{&keyward.AccessKey{}, &keyward.Application{}, &keyward.TenantSettings{}} {
		if _, err := g.cache.GetInformer(ctx, obj); err != nil {
			return fmt.Errorf("starting the verifier's informers: %w", err)
		}
	}
	if !g.cache.WaitForCacheSync(ctx) {
		return ctx.Err()
	}
	g.ready.Store(true)
	return nil
}

func (g *syncGate) NeedLeaderElection() bool { return false }

// Check is the readiness check: not ready until the caches are synced.
func (g *syncGate) Check(*http.Request) error {
	if !g.ready.Load() {
		return errors.New("the verifier's caches are not synced yet")
	}
	return nil
}

// wait blocks until ready or ctx ends.
func (g *syncGate) wait(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !g.ready.Load() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}
