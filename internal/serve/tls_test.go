package serve

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

func TestDefaultIssuer(t *testing.T) {
	for _, c := range []struct{ tls, bind, want string }{
		{TLSSelfSigned, ":8082", "https://keyward-verifier.team-a.svc:8082"},
		{TLSCertDir, "0.0.0.0:9443", "https://keyward-verifier.team-a.svc:9443"},
		{TLSOff, ":8082", "http://keyward-verifier.team-a.svc:8082"},
		{TLSOff, "127.0.0.1:8082", "http://127.0.0.1:8082"},
		{TLSOff, "[::1]:8082", "http://[::1]:8082"},
		{TLSOff, "localhost:18082", "http://localhost:18082"},
		{TLSSelfSigned, "127.0.0.1:8082", "https://127.0.0.1:8082"},
		{TLSSelfSigned, "0", "https://keyward-verifier.team-a.svc:8082"},
	} {
		if got := DefaultIssuer(c.tls, c.bind, "keyward-verifier", "team-a"); got != c.want {
			t.Errorf("DefaultIssuer(%s, %s) = %s, want %s", c.tls, c.bind, got, c.want)
		}
	}
}

func TestValidateTLS(t *testing.T) {
	ok := DefaultOptions()
	if ok.TLS != TLSSelfSigned {
		t.Fatalf("the default is %q, want %q", ok.TLS, TLSSelfSigned)
	}
	for _, c := range []struct {
		tls, dir string
		valid    bool
	}{
		{TLSSelfSigned, "", true}, {TLSOff, "", true}, {TLSCertDir, "/etc/tls", true},
		{TLSCertDir, "", false}, {TLSSelfSigned, "/etc/tls", false}, {TLSOff, "/etc/tls", false}, {"on", "", false}, {"", "", false},
	} {
		o := DefaultOptions()
		o.TLS, o.CertDir = c.tls, c.dir
		if err := o.validateTLS(); (err == nil) != c.valid {
			t.Errorf("--verify-tls=%q --verify-cert-dir=%q: %v", c.tls, c.dir, err)
		}
	}
}

// issue makes a CA and a serving certificate with cert-controller's own
// functions, as its rotator stores them.
func issue(t *testing.T, dnsName string) (ca, cert, key []byte) {
	t.Helper()
	r := &rotator.CertRotator{CAName: tlsCAName, CAOrganization: tlsCAOrganization, DNSName: dnsName,
		ExtKeyUsages: &[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	now := time.Now()
	art, err := r.CreateCACert(now.Add(-time.Hour), now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err = r.CreateCertPEM(art, now.Add(-time.Hour), now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return art.CertPEM, cert, key
}

// TestSelfSignedSync: the Secret is created when missing; once it holds a
// valid certificate the files are written, readiness passes, the CA is
// published, the listener serves a certificate that verifies against the
// published CA for the Service's name, and a renewed certificate is
// served without a restart. A certificate for another name is not served.
func TestSelfSignedSync(t *testing.T) {
	const ns = "team-a"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := fake.NewClientBuilder().WithScheme(testScheme(t)).Build()
	dir := t.TempDir()
	s := &SelfSigned{Namespace: ns, Secret: DefaultTLSSecret, ConfigMap: DefaultTLSCAConfigMap, Service: DefaultServiceName,
		Dir: dir, Reader: c, Writer: c, Log: logr.Discard()}
	s.init()
	secretKey := types.NamespacedName{Namespace: ns, Name: DefaultTLSSecret}
	dns := DNSNames(DefaultServiceName, ns)[0]

	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	var sec corev1.Secret
	if err := c.Get(ctx, secretKey, &sec); err != nil {
		t.Fatalf("the Secret was not created: %v", err)
	}
	if s.Check(nil) == nil {
		t.Fatal("ready without a certificate")
	}
	if _, err := os.Stat(filepath.Join(dir, "tls.crt")); err == nil {
		t.Fatal("a file was written for an empty Secret")
	}

	fill := func(ca, cert, key []byte) {
		t.Helper()
		if err := c.Get(ctx, secretKey, &sec); err != nil {
			t.Fatal(err)
		}
		sec.Data = map[string][]byte{"ca.crt": ca, "tls.crt": cert, "tls.key": key}
		if err := c.Update(ctx, &sec); err != nil {
			t.Fatal(err)
		}
		if err := s.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	ca0, cert0, key0 := issue(t, "someone-else.team-a.svc")
	fill(ca0, cert0, key0)
	if s.Check(nil) == nil {
		t.Fatal("ready with a certificate for another name")
	}

	ca1, cert1, key1 := issue(t, dns)
	fill(ca1, cert1, key1)
	if err := s.Check(nil); err != nil {
		t.Fatal(err)
	}
	if err := s.wait(ctx); err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: DefaultTLSCAConfigMap}, &cm); err != nil {
		t.Fatal(err)
	}
	if cm.Data[CABundleKey] != string(ca1) {
		t.Fatal("the ConfigMap does not hold the Secret's CA")
	}

	ln, err := listen(ctx, "127.0.0.1:0", dir, []string{"http/1.1"})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}), ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	served := func(bundle string) ([]byte, error) {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(bundle)) {
			t.Fatal("no certificate in the bundle")
		}
		conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: dns, MinVersion: tls.VersionTLS12})
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Raw, nil
	}
	raw, err := served(cm.Data[CABundleKey])
	if err != nil {
		t.Fatalf("the served certificate does not verify against the published CA: %v", err)
	}

	// A renewed CA and certificate: the ConfigMap and the served
	// certificate follow (certwatcher reloads the files).
	ca2, cert2, key2 := issue(t, dns)
	fill(ca2, cert2, key2)
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: DefaultTLSCAConfigMap}, &cm); err != nil {
		t.Fatal(err)
	}
	if cm.Data[CABundleKey] != string(ca2) {
		t.Fatal("the ConfigMap still holds the old CA")
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		now, err := served(cm.Data[CABundleKey])
		if err == nil && !bytes.Equal(now, raw) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the renewed certificate is not served: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // polling the listener, not synchronising on time
	}

	// A ConfigMap edited by someone else is put back.
	cm.Data[CABundleKey] = "tampered"
	if err := c.Update(ctx, &cm); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(&cm), &cm); err != nil || cm.Data[CABundleKey] != string(ca2) {
		t.Fatalf("the CA ConfigMap was not restored: %v", err)
	}
}
