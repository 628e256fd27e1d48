package verify

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// Defaults of the verifier's flags, defined once.
const (
	DefaultBindAddress       = ":8082"
	DefaultGRPCBindAddress   = ":8083"
	DefaultFailureRate       = 1.0
	DefaultFailureBurst      = 20
	DefaultMaxClients        = 100_000
	DefaultLastUsedGran      = time.Hour
	DefaultHeavyUseThreshold = 6000
	DefaultFlushInterval     = 10 * time.Second
	// Access tokens (docs/tokens.md); the default issuer is DefaultIssuer's.
	DefaultTokenTTL              = 15 * time.Minute
	DefaultTokenSigningSecret    = "keyward-token-signing-keys"
	DefaultTokenSigningNamespace = DefaultManagerNamespace
	DefaultTokenSigningRotation  = 720 * time.Hour
	DefaultTokenSigningRefresh   = 30 * time.Second
	DefaultTokenJWKSMaxAge       = 5 * time.Minute
	// Off is the bind address that turns a listener off.
	Off = "0"
	// EventSource is the name the verifier's Events are reported by.
	EventSource = "keyward-verifier"
	// ReadyzCheck is the name of the readiness check.
	ReadyzCheck = "verifier"
)

// Options configure the verifier.
type Options struct {
	BindAddress     string
	GRPCBindAddress string
	// TLS is how both listeners are secured: TLSSelfSigned, TLSCertDir or
	// TLSOff (docs/operations.md, "Transport security").
	TLS string
	// CertDir holds tls.crt and tls.key with TLSCertDir (only then).
	CertDir string
	// ServiceName is the verifier's Service: the self-signed certificate's
	// DNS names and the default issuer's host.
	ServiceName string
	// TLSSecret and TLSCAConfigMap, in the manager's namespace, hold the
	// self-signed CA and certificate, and publish the CA.
	TLSSecret      string
	TLSCAConfigMap string
	// TokenAllowPlaintext lets /v1/token and /v1/introspect answer
	// plaintext from a client that is not on loopback.
	TokenAllowPlaintext bool
	// TrustedProxies, comma-separated addresses or CIDRs, each optionally
	// with the header that gateway sets: "=xff:<hops>" or "=x-real-ip"
	// (wire.ParseTrustedProxies).
	TrustedProxies string
	// KeyHeader is one more header /v1/auth reads a key from.
	KeyHeader         string
	FailureRate       float64
	FailureBurst      int
	MaxClients        int
	LastUsedGran      time.Duration
	HeavyUseThreshold int
	FlushInterval     time.Duration
	// PerKeyMetrics: the leader reports one expiry series per AccessKey
	// (docs/operations.md, "Metrics and Prometheus").
	PerKeyMetrics bool
	// Tokens switches the access-token endpoints on (docs/tokens.md).
	Tokens bool
	// TokenIssuer is iss, the base of each tenant's aud and the base URL of the token
	// endpoints in the discovery document; empty is DefaultIssuer's.
	TokenIssuer string
	TokenTTL    time.Duration
	// TokenSigningSecret and TokenSigningNamespace name the Secret of the
	// signing keys; an empty namespace is POD_NAMESPACE, else
	// DefaultTokenSigningNamespace.
	TokenSigningSecret    string
	TokenSigningNamespace string
	TokenSigningRotation  time.Duration
	// TokenSigningRefresh is how often every replica re-reads the Secret.
	TokenSigningRefresh time.Duration
	// TokenJWKSMaxAge is the max-age of the JWKS answer.
	TokenJWKSMaxAge time.Duration
	// APIKeysEnabledByDefault mirrors the controllers' flag.
	APIKeysEnabledByDefault bool
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// DefaultOptions returns the flags' defaults.
func DefaultOptions() Options {
	return Options{
		BindAddress: DefaultBindAddress, GRPCBindAddress: DefaultGRPCBindAddress,
		FailureRate: DefaultFailureRate, FailureBurst: DefaultFailureBurst, MaxClients: DefaultMaxClients,
		LastUsedGran: DefaultLastUsedGran, HeavyUseThreshold: DefaultHeavyUseThreshold, FlushInterval: DefaultFlushInterval,
		TLS: DefaultTLS, ServiceName: DefaultServiceName, TLSSecret: DefaultTLSSecret, TLSCAConfigMap: DefaultTLSCAConfigMap,
		Tokens: true, TokenTTL: DefaultTokenTTL, PerKeyMetrics: true,
		TokenSigningSecret: DefaultTokenSigningSecret, TokenSigningRotation: DefaultTokenSigningRotation,
		TokenSigningRefresh: DefaultTokenSigningRefresh, TokenJWKSMaxAge: DefaultTokenJWKSMaxAge,
	}
}

// BindFlags registers the verifier's flags on fs.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.BindAddress, "verify-bind-address", o.BindAddress, "Address the verification API (POST /v1/verify, GET /v1/auth) binds to; 0 turns it off.")
	fs.StringVar(&o.GRPCBindAddress, "verify-grpc-bind-address", o.GRPCBindAddress, "Address the Envoy ext_authz gRPC service binds to; 0 turns it off.")
	fs.StringVar(&o.TLS, "verify-tls", o.TLS, "TLS of the verification API and the gRPC service: "+TLSSelfSigned+" (a CA and serving certificate the manager keeps in the Secret --verify-tls-secret of its namespace, CA published in the ConfigMap --verify-tls-ca-configmap), "+TLSCertDir+" (tls.crt and tls.key from --verify-cert-dir, e.g. a cert-manager Secret) or "+TLSOff+" (plaintext).")
	fs.StringVar(&o.CertDir, "verify-cert-dir", o.CertDir, "With --verify-tls="+TLSCertDir+": directory with tls.crt and tls.key (reloaded when they change).")
	fs.StringVar(&o.ServiceName, "verify-service-name", o.ServiceName, "Name of the verifier's Service: the self-signed certificate is for <name>.<namespace>.svc (and .svc.cluster.local), and the default --token-issuer is https://<name>.<namespace>.svc:<port>.")
	fs.StringVar(&o.TLSSecret, "verify-tls-secret", o.TLSSecret, "With --verify-tls="+TLSSelfSigned+": the Secret, in the manager's namespace, holding the CA and the serving certificate (created when missing).")
	fs.StringVar(&o.TLSCAConfigMap, "verify-tls-ca-configmap", o.TLSCAConfigMap, "With --verify-tls="+TLSSelfSigned+": the ConfigMap, in the manager's namespace, the CA certificate is published in (key "+CABundleKey+") for gateways and clients.")
	fs.BoolVar(&o.TokenAllowPlaintext, "token-allow-plaintext", o.TokenAllowPlaintext, "Let POST /v1/token and /v1/introspect answer over plaintext to clients that are not on loopback (RFC 6749 requires TLS; only behind a TLS-terminating proxy in the same Pod network).")
	fs.StringVar(&o.TrustedProxies, "trusted-proxies", o.TrustedProxies, "Comma-separated addresses or CIDRs of proxies whose X-Forwarded-For / X-Real-IP (and Envoy's source address) are believed.")
	fs.StringVar(&o.KeyHeader, "verify-key-header", o.KeyHeader, "One more request header /v1/auth and ext_authz read the key from (besides Authorization: Bearer and X-API-Key).")
	fs.Float64Var(&o.FailureRate, "verify-failure-rate", o.FailureRate, "Failed verifications (malformed or unknown keys) allowed per second per client address after the burst; 0 turns the limit off.")
	fs.IntVar(&o.FailureBurst, "verify-failure-burst", o.FailureBurst, "Failed verifications a client address may make at once before being rate limited.")
	fs.IntVar(&o.MaxClients, "verify-failure-max-clients", o.MaxClients, "Client addresses the failure limiter remembers; the least recently failing is forgotten first.")
	fs.DurationVar(&o.LastUsedGran, "last-used-granularity", o.LastUsedGran, "status.lastUsedAt is written at most once per this duration per key.")
	fs.IntVar(&o.HeavyUseThreshold, "heavy-use-threshold", o.HeavyUseThreshold, "Verifications per minute of one key, on one replica, above which it is in heavy use (HeavyUse Event, metric); 0 turns it off.")
	fs.BoolVar(&o.PerKeyMetrics, "metrics-per-key", o.PerKeyMetrics, "Report "+MetricKeyExpiry+", one series per AccessKey with an expiry, from the leader only; false drops it (the expiry alerts then have nothing to read).")
	fs.BoolVar(&o.Tokens, "tokens", o.Tokens, "Serve short-lived access tokens on the verification API: POST /v1/token, POST /v1/introspect, /.well-known/openid-configuration and /.well-known/jwks.json.")
	fs.StringVar(&o.TokenIssuer, "token-issuer", o.TokenIssuer, "The issuer (iss; each tenant's aud is <issuer>/namespaces/<namespace>) of access tokens: the URL clients and gateways reach the verification API at; the discovery document's endpoints are under it. Default: https://<--verify-service-name>.<namespace>.svc:<port of --verify-bind-address> (http:// with --verify-tls=off; the bind address itself when it is a loopback address).")
	fs.DurationVar(&o.TokenTTL, "token-ttl", o.TokenTTL, "Lifetime of an access token (shorter when the key expires or its grace period ends sooner).")
	fs.StringVar(&o.TokenSigningSecret, "token-signing-secret", o.TokenSigningSecret, "Name of the Secret holding the token signing keys (created on first start).")
	fs.StringVar(&o.TokenSigningNamespace, "token-signing-namespace", o.TokenSigningNamespace, "Namespace of the token signing Secret (default: $POD_NAMESPACE, else "+DefaultTokenSigningNamespace+").")
	fs.DurationVar(&o.TokenSigningRotation, "token-signing-rotation", o.TokenSigningRotation, "How long a token signing key signs before the next one takes over.")
	fs.DurationVar(&o.TokenSigningRefresh, "token-signing-refresh", o.TokenSigningRefresh, "How often every replica re-reads the token signing Secret.")
	fs.DurationVar(&o.TokenJWKSMaxAge, "token-jwks-max-age", o.TokenJWKSMaxAge, "max-age of the JWKS answer; key rotation overlaps by the token lifetime plus this plus --token-signing-refresh.")
}

// Verification is what Setup wires: the pieces tests and benchmarks reach.
type Verification struct {
	Verifier *Verifier
	Handler  *Handler
	Usage    *Usage
	Metrics  *Metrics
	HTTP     *Server
	GRPC     *GRPCServer
	// Tokens and Keys are nil when tokens are off.
	Tokens *Tokens
	Keys   *KeyRing
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
// metrics and a readiness check that fails until the caches are synced.
func SetupWithManager(ctx context.Context, mgr ctrl.Manager, opts Options) (*Verification, error) {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &keyward.AccessKey{}, IndexKeyID, KeyIDs); err != nil {
		return nil, err
	}
	trusted, err := ParseTrustedProxies(opts.TrustedProxies)
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
	store := CacheStore{Reader: mgr.GetCache()}
	m := NewMetrics(store)
	if err := m.Register(metrics.Registry); err != nil {
		return nil, err
	}
	usage := &Usage{
		Granularity: opts.LastUsedGran, HeavyUseThreshold: opts.HeavyUseThreshold, FlushInterval: opts.FlushInterval,
		Store: store, Writer: mgr.GetClient().Status(), Recorder: mgr.GetEventRecorder(EventSource),
		Metrics: m, Log: log, Now: now,
	}
	if usage.FlushInterval <= 0 {
		usage.FlushInterval = DefaultFlushInterval
	}
	v := &Verifier{
		Store: store, Limiter: NewLimiter(opts.FailureRate, opts.FailureBurst, opts.MaxClients),
		APIKeysEnabledByDefault: opts.APIKeysEnabledByDefault, Usage: usage, Metrics: m, Now: now,
	}
	h := &Handler{Verifier: v, Trusted: trusted, KeyHeader: opts.KeyHeader, Log: log}
	out := &Verification{Verifier: v, Handler: h, Usage: usage, Metrics: m}
	if opts.Tokens {
		ns := opts.TokenSigningNamespace
		if ns == "" {
			ns = mgrNS
		}
		ring := &KeyRing{
			Namespace: ns, Name: opts.TokenSigningSecret, Refresh: opts.TokenSigningRefresh,
			Schedule: Schedule{Rotation: opts.TokenSigningRotation, TTL: opts.TokenTTL, Margin: opts.TokenSigningRefresh + opts.TokenJWKSMaxAge},
			Reader:   mgr.GetAPIReader(), Writer: mgr.GetClient(), Log: log.WithName("signing-keys"), Now: now,
		}
		if opts.TokenSigningRotation <= 0 {
			return nil, fmt.Errorf("--token-signing-rotation must be positive, not %s", opts.TokenSigningRotation)
		}
		issuer := opts.TokenIssuer
		if issuer == "" {
			issuer = DefaultIssuer(opts.TLS, opts.BindAddress, opts.ServiceName, mgrNS)
		}
		t, err := NewTokens(issuer, opts.TokenTTL, opts.TokenJWKSMaxAge, ring)
		if err != nil {
			return nil, err
		}
		log.Info("access tokens", "issuer", issuer, "tls", opts.TLS, "plaintextAllowed", opts.TokenAllowPlaintext)
		if err := mgr.Add(ring); err != nil {
			return nil, err
		}
		h.Tokens, out.Tokens, out.Keys = t, t, ring
	}
	if err := mgr.Add(usage); err != nil {
		return nil, err
	}
	synced := &syncGate{cache: mgr.GetCache()}
	m.keys.ready = synced.ready.Load
	m.keys.perKey = perKeyMetrics(opts.PerKeyMetrics, mgr.Elected())
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
			Handler: requireTLS(h.Mux(), opts.TokenAllowPlaintext)}
		if err := mgr.Add(out.HTTP); err != nil {
			return nil, err
		}
	}
	if grpcOn {
		out.GRPC = &GRPCServer{endpoint: endpoint{Addr: opts.GRPCBindAddress, CertDir: certDir, Log: log, gate: synced, certs: certs},
			Auth: &ExtAuthz{Verifier: v, Trusted: trusted, KeyHeader: opts.KeyHeader}}
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

// endpoint is what the HTTP and the gRPC server share: an address, optional
// TLS, and a listener opened only once the caches are synced, on every
// replica (no leader election).
type endpoint struct {
	Addr    string
	CertDir string
	Log     logr.Logger
	gate    *syncGate
	// certs, when set, blocks until the serving certificate is in CertDir.
	certs func(context.Context) error

	listening atomic.Pointer[net.Addr]
}

// NeedLeaderElection is false: every replica verifies.
func (e *endpoint) NeedLeaderElection() bool { return false }

// ListenAddr is the address the server listens on once it does (for ":0").
func (e *endpoint) ListenAddr() net.Addr {
	if a := e.listening.Load(); a != nil {
		return *a
	}
	return nil
}

// serve waits for the caches, listens, runs serve on the listener and
// calls stop when ctx ends. A ctx that ends before the caches sync is a
// clean stop.
func (e *endpoint) serve(ctx context.Context, what string, protos []string, serve func(net.Listener) error, stop func() error) error {
	if e.gate != nil {
		if err := e.gate.wait(ctx); err != nil {
			return nil
		}
	}
	if e.certs != nil {
		if err := e.certs(ctx); err != nil {
			return nil
		}
	}
	ln, err := listen(ctx, e.Addr, e.CertDir, protos)
	if err != nil {
		return err
	}
	a := ln.Addr()
	e.listening.Store(&a)
	e.Log.Info("serving "+what, "address", a.String(), "tls", e.CertDir != "")
	errc := make(chan error, 1)
	go func() { errc <- serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return stop()
	}
}

// Server serves the HTTP verification API on every replica.
type Server struct {
	endpoint
	Handler http.Handler
}

// Start listens once the caches are synced and serves until ctx ends.
func (s *Server) Start(ctx context.Context) error {
	srv := &http.Server{
		Handler:           s.Handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	return s.serve(ctx, "the verification API", []string{"http/1.1", "h2"}, srv.Serve, func() error {
		shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return srv.Shutdown(shutdown)
	})
}

// listen opens a TCP listener, with TLS from certDir (tls.crt, tls.key,
// reloaded when they change) when certDir is set.
func listen(ctx context.Context, addr, certDir string, protos []string) (net.Listener, error) {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if certDir == "" {
		return ln, nil
	}
	w, err := certwatcher.New(filepath.Join(certDir, "tls.crt"), filepath.Join(certDir, "tls.key"))
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	go func() { _ = w.Start(ctx) }()
	return tls.NewListener(ln, &tls.Config{GetCertificate: w.GetCertificate, MinVersion: tls.VersionTLS12, NextProtos: protos}), nil
}
