package serve

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// Transport security of the verifier's listeners (docs/operations.md,
// "Transport security").
const (
	// TLSSelfSigned: the manager keeps a CA and a serving certificate in a
	// Secret of its namespace (cert-controller's rotator), serves it and
	// publishes the CA in a ConfigMap.
	TLSSelfSigned = "self-signed"
	// TLSCertDir: tls.crt and tls.key come from --verify-cert-dir (a
	// mounted Secret, e.g. cert-manager's).
	TLSCertDir = "cert-dir"
	// TLSOff: plaintext.
	TLSOff = "off"

	DefaultTLS            = TLSSelfSigned
	DefaultServiceName    = "keyward-verifier"
	DefaultTLSSecret      = "keyward-verifier-tls"
	DefaultTLSCAConfigMap = "keyward-verifier-ca"
	// CABundleKey is the data key of the CA ConfigMap (PEM).
	CABundleKey = "ca.crt"
	// ReadyzTLSCheck is the readiness check that fails until the
	// self-signed serving certificate is in place.
	ReadyzTLSCheck = "verifier-tls"
	// DefaultManagerNamespace is the manager's namespace outside a Pod.
	DefaultManagerNamespace = "keyward-system"

	tlsCAName           = "keyward-verifier-ca"
	tlsCAOrganization   = "keyward"
	tlsRefresh          = time.Minute
	tlsFirstPoll        = 250 * time.Millisecond
	tlsComponent        = "verifier-tls"
	rotatorControllerID = "keyward-verifier-tls"
	// podNamespaceEnv names the manager's namespace in its Pod.
	podNamespaceEnv = "POD_NAMESPACE"
	// The Secret and the ConfigMap are labelled part-of, not managed-by:
	// the controllers (and their cache) treat every Secret managed-by
	// keyward as an AccessKey's Secret.
	labelPartOf    = "app.kubernetes.io/part-of"
	labelComponent = "app.kubernetes.io/component"
)

// ManagerNamespace is the namespace the manager keeps its own objects in:
// $POD_NAMESPACE, else DefaultManagerNamespace.
func ManagerNamespace() string {
	if ns := os.Getenv(podNamespaceEnv); ns != "" {
		return ns
	}
	return DefaultManagerNamespace
}

// validateTLS checks --verify-tls against --verify-cert-dir.
func (o *Options) validateTLS() error {
	switch o.TLS {
	case TLSSelfSigned, TLSOff:
		if o.CertDir != "" {
			return fmt.Errorf("--verify-cert-dir is read only with --verify-tls=%s (it is %q)", TLSCertDir, o.TLS)
		}
	case TLSCertDir:
		if o.CertDir == "" {
			return fmt.Errorf("--verify-tls=%s needs --verify-cert-dir", TLSCertDir)
		}
	default:
		return fmt.Errorf("--verify-tls must be %s, %s or %s, not %q", TLSSelfSigned, TLSCertDir, TLSOff, o.TLS)
	}
	if o.TLS == TLSSelfSigned && (o.ServiceName == "" || o.TLSSecret == "" || o.TLSCAConfigMap == "") {
		return errors.New("--verify-tls=self-signed needs --verify-service-name, --verify-tls-secret and --verify-tls-ca-configmap")
	}
	return nil
}

// DefaultIssuer is the issuer when --token-issuer is empty: the verifier's
// own URL. A loopback bind address is its own host (make local);
// otherwise the Service's cluster DNS name in namespace ns with the bind
// address's port. https unless TLS is off.
func DefaultIssuer(tlsMode, bindAddress, service, ns string) string {
	scheme := "https"
	if tlsMode == TLSOff {
		scheme = "http"
	}
	host, port, err := net.SplitHostPort(bindAddress)
	if err != nil || port == "" {
		_, port, _ = net.SplitHostPort(DefaultBindAddress)
	}
	if host == "localhost" {
		return scheme + "://" + net.JoinHostPort(host, port)
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.Unmap().IsLoopback() {
		return scheme + "://" + net.JoinHostPort(host, port)
	}
	return scheme + "://" + service + "." + ns + ".svc:" + port
}

// DNSNames are the names the self-signed serving certificate holds: the
// Service's, in namespace ns; the first is the one it is checked against.
func DNSNames(service, ns string) []string {
	return []string{service + "." + ns + ".svc", service + "." + ns + ".svc.cluster.local", service + "." + ns, service}
}

// SelfSigned keeps the verifier's serving certificate: it makes sure the
// Secret exists, hands it to cert-controller's rotator (which fills and
// renews the CA and the serving certificate in it, on every replica, with
// optimistic concurrency so they agree on one), copies tls.crt and tls.key
// into Dir for the listeners (reloaded by certwatcher) and publishes ca.crt
// in the CA ConfigMap. It runs on every replica.
type SelfSigned struct {
	Namespace, Secret, ConfigMap, Service string
	// Dir is where tls.crt and tls.key are written.
	Dir string
	// Reader reads past the cache (the manager's API reader).
	Reader client.Reader
	Writer client.Writer
	// Manager gets the rotator once the Secret exists; nil adds none (tests).
	Manager manager.Manager
	Log     logr.Logger
	// Refresh is how often the Secret is re-read once the files are in place.
	Refresh time.Duration

	ready     atomic.Bool
	readyOnce sync.Once
	readyCh   chan struct{}
	initOnce  sync.Once
	written   []byte // the tls.crt+tls.key last written
	published []byte // the ca.crt last seen in the ConfigMap
	rotating  bool
}

var rotatorCount atomic.Int32

func (s *SelfSigned) init() {
	s.initOnce.Do(func() { s.readyCh = make(chan struct{}) })
}

// NeedLeaderElection is false: every replica serves, so every replica
// needs the files.
func (s *SelfSigned) NeedLeaderElection() bool { return false }

// Check is the readiness check: not ready until the certificate is in Dir.
func (s *SelfSigned) Check(*http.Request) error {
	if !s.ready.Load() {
		return fmt.Errorf("the verifier's serving certificate (Secret %s/%s) is not in place yet", s.Namespace, s.Secret)
	}
	return nil
}

// wait blocks until the certificate is in Dir or ctx ends.
func (s *SelfSigned) wait(ctx context.Context) error {
	s.init()
	select {
	case <-s.readyCh:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Start keeps the files and the ConfigMap in step with the Secret until
// ctx ends, then removes Dir.
func (s *SelfSigned) Start(ctx context.Context) error {
	s.init()
	defer func() { _ = os.RemoveAll(s.Dir) }()
	refresh := s.Refresh
	if refresh <= 0 {
		refresh = tlsRefresh
	}
	delay := tlsFirstPoll
	for {
		if err := s.Sync(ctx); err != nil && ctx.Err() == nil {
			s.Log.Error(err, "keeping the verifier's serving certificate", "secret", s.Namespace+"/"+s.Secret)
		}
		next := refresh
		if !s.ready.Load() {
			next, delay = delay, min(2*delay, 10*time.Second)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(next):
		}
	}
}

// Sync is one round: create the Secret when it is missing (and start the
// rotator once it exists), write the files when the Secret holds a valid
// certificate that differs from what is written, publish its CA.
func (s *SelfSigned) Sync(ctx context.Context) error {
	key := types.NamespacedName{Namespace: s.Namespace, Name: s.Secret}
	var sec corev1.Secret
	err := s.Reader.Get(ctx, key, &sec)
	if apierrors.IsNotFound(err) {
		sec = corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Secret,
			Labels: map[string]string{labelPartOf: "keyward", labelComponent: tlsComponent}}, Type: corev1.SecretTypeOpaque}
		if err := s.Writer.Create(ctx, &sec); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating the Secret: %w", err)
		}
		s.Log.Info("created the Secret of the verifier's serving certificate", "secret", key.String())
	} else if err != nil {
		return fmt.Errorf("reading the Secret: %w", err)
	}
	if err := s.startRotator(key); err != nil {
		return err
	}
	caPEM, certPEM, keyPEM := sec.Data[CABundleKey], sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey]
	if err := validServing(caPEM, certPEM, keyPEM, DNSNames(s.Service, s.Namespace)[0]); err != nil {
		if len(certPEM) > 0 {
			s.Log.V(1).Info("the Secret holds no valid serving certificate yet", "secret", key.String(), "why", err.Error())
		}
		return nil // the rotator fills it
	}
	if pair := append(append([]byte{}, certPEM...), keyPEM...); !bytes.Equal(pair, s.written) {
		if err := writeFileAtomic(s.Dir, corev1.TLSPrivateKeyKey, keyPEM); err != nil {
			return err
		}
		if err := writeFileAtomic(s.Dir, corev1.TLSCertKey, certPEM); err != nil {
			return err
		}
		s.written = pair
		s.Log.Info("serving the verifier's certificate from its Secret", "secret", key.String(), "dnsNames", DNSNames(s.Service, s.Namespace))
	}
	if !s.ready.Load() {
		s.ready.Store(true)
		s.readyOnce.Do(func() { close(s.readyCh) })
	}
	return s.publish(ctx, caPEM)
}

func (s *SelfSigned) startRotator(key types.NamespacedName) error {
	if s.rotating || s.Manager == nil {
		return nil
	}
	name := rotatorControllerID
	if n := rotatorCount.Add(1); n > 1 { // controller names are unique per process
		name = fmt.Sprintf("%s-%d", rotatorControllerID, n)
	}
	dns := DNSNames(s.Service, s.Namespace)
	if err := rotator.AddRotator(s.Manager, &rotator.CertRotator{
		SecretKey: key, CertDir: s.Dir, CAName: tlsCAName, CAOrganization: tlsCAOrganization,
		DNSName: dns[0], ExtraDNSNames: dns[1:], IsReady: make(chan struct{}),
		RequireLeaderElection: false, ControllerName: name,
	}); err != nil {
		return fmt.Errorf("starting the certificate rotator: %w", err)
	}
	s.rotating = true
	return nil
}

// publish makes the CA ConfigMap hold caPEM.
func (s *SelfSigned) publish(ctx context.Context, caPEM []byte) error {
	key := types.NamespacedName{Namespace: s.Namespace, Name: s.ConfigMap}
	var cm corev1.ConfigMap
	err := s.Reader.Get(ctx, key, &cm)
	switch {
	case apierrors.IsNotFound(err):
		cm = corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.ConfigMap,
			Labels: map[string]string{labelPartOf: "keyward", labelComponent: tlsComponent}},
			Data: map[string]string{CABundleKey: string(caPEM)}}
		if err := s.Writer.Create(ctx, &cm); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating the CA ConfigMap: %w", err)
		}
	case err != nil:
		return fmt.Errorf("reading the CA ConfigMap: %w", err)
	case cm.Data[CABundleKey] != string(caPEM):
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[CABundleKey] = string(caPEM)
		if err := s.Writer.Update(ctx, &cm); err != nil {
			return fmt.Errorf("updating the CA ConfigMap: %w", err)
		}
	default:
		return nil
	}
	if !bytes.Equal(s.published, caPEM) {
		s.Log.Info("published the verifier's CA", "configMap", key.String())
		s.published = caPEM
	}
	return nil
}

// validServing checks that certPEM and keyPEM are a pair, and that the
// certificate is valid now for dnsName under caPEM.
func validServing(caPEM, certPEM, keyPEM []byte, dnsName string) error {
	if len(caPEM) == 0 || len(certPEM) == 0 || len(keyPEM) == 0 {
		return errors.New("empty")
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return errors.New("no CA certificate")
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return err
	}
	_, err = leaf.Verify(x509.VerifyOptions{DNSName: dnsName, Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err
}

// writeFileAtomic writes dir/name through a temporary file and a rename,
// so a reader never sees half a file.
func writeFileAtomic(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, "."+name+"-*")
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		_ = os.Remove(f.Name())
		return err
	}
	return os.Rename(f.Name(), filepath.Join(dir, name))
}
