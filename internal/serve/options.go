// Package serve serves the verifier (package verify) and the token service
// (package token) on one listener, and Envoy's ext_authz on another: the
// flags, the TLS both listeners share (a self-signed CA the manager keeps,
// or a mounted certificate), the listeners, which open on every replica
// once the caches are synced, and the wiring into the manager. It sits
// above both services so that neither imports the other's serving.
package serve

import (
	"flag"
	"time"

	"keyward.dev/keyward/internal/token"
	"keyward.dev/keyward/internal/verify"
)

// Defaults of the listeners' flags, defined once (the verifier's and the
// token service's are in their packages).
const (
	DefaultBindAddress     = ":8082"
	DefaultGRPCBindAddress = ":8083"
	// Off is the bind address that turns a listener off.
	Off = "0"
	// ReadyzCheck is the name of the readiness check.
	ReadyzCheck = "verifier"
)

// Options configure the verifier and the token service and how they are
// served.
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
	// signing keys; an empty namespace is the manager's (ManagerNamespace).
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
		FailureRate: verify.DefaultFailureRate, FailureBurst: verify.DefaultFailureBurst, MaxClients: verify.DefaultMaxClients,
		LastUsedGran: verify.DefaultLastUsedGran, HeavyUseThreshold: verify.DefaultHeavyUseThreshold, FlushInterval: verify.DefaultFlushInterval,
		TLS: DefaultTLS, ServiceName: DefaultServiceName, TLSSecret: DefaultTLSSecret, TLSCAConfigMap: DefaultTLSCAConfigMap,
		Tokens: true, TokenTTL: token.DefaultTTL, PerKeyMetrics: true,
		TokenSigningSecret: token.DefaultSigningSecret, TokenSigningRotation: token.DefaultSigningRotation,
		TokenSigningRefresh: token.DefaultSigningRefresh, TokenJWKSMaxAge: token.DefaultJWKSMaxAge,
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
	fs.BoolVar(&o.PerKeyMetrics, "metrics-per-key", o.PerKeyMetrics, "Report "+verify.MetricKeyExpiry+", one series per AccessKey with an expiry, from the leader only; false drops it (the expiry alerts then have nothing to read).")
	fs.BoolVar(&o.Tokens, "tokens", o.Tokens, "Serve short-lived access tokens on the verification API: POST /v1/token, POST /v1/introspect, /.well-known/openid-configuration and /.well-known/jwks.json.")
	fs.StringVar(&o.TokenIssuer, "token-issuer", o.TokenIssuer, "The issuer (iss; each tenant's aud is <issuer>/namespaces/<namespace>) of access tokens: the URL clients and gateways reach the verification API at; the discovery document's endpoints are under it. Default: https://<--verify-service-name>.<namespace>.svc:<port of --verify-bind-address> (http:// with --verify-tls=off; the bind address itself when it is a loopback address).")
	fs.DurationVar(&o.TokenTTL, "token-ttl", o.TokenTTL, "Lifetime of an access token (shorter when the key expires or its grace period ends sooner).")
	fs.StringVar(&o.TokenSigningSecret, "token-signing-secret", o.TokenSigningSecret, "Name of the Secret holding the token signing keys (created on first start).")
	fs.StringVar(&o.TokenSigningNamespace, "token-signing-namespace", o.TokenSigningNamespace, "Namespace of the token signing Secret (default: $"+podNamespaceEnv+", else "+DefaultManagerNamespace+").")
	fs.DurationVar(&o.TokenSigningRotation, "token-signing-rotation", o.TokenSigningRotation, "How long a token signing key signs before the next one takes over.")
	fs.DurationVar(&o.TokenSigningRefresh, "token-signing-refresh", o.TokenSigningRefresh, "How often every replica re-reads the token signing Secret.")
	fs.DurationVar(&o.TokenJWKSMaxAge, "token-jwks-max-age", o.TokenJWKSMaxAge, "max-age of the JWKS answer; key rotation overlaps by the token lifetime plus this plus --token-signing-refresh.")
}
