package serve

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"keyward.dev/keyward/internal/verify"
)

// TestServerTLS serves the API from --verify-cert-dir's tls.crt and tls.key.
func TestServerTLS(t *testing.T) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "keyward-verifier"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	f, v := newWorld(t)
	h := &verify.Handler{Verifier: v, Log: logr.Discard()}
	s := &Server{endpoint: endpoint{Addr: "127.0.0.1:0", CertDir: dir, Log: logr.Discard()}, Handler: h.Mux()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for s.ListenAddr() == nil {
		if time.Now().After(deadline) {
			t.Fatal("not listening")
		}
		select {
		case err := <-done:
			t.Fatal(err)
		case <-time.After(10 * time.Millisecond): // polling for the listener, not synchronising on time
		}
	}
	pool := x509.NewCertPool()
	cert, _ := x509.ParseCertificate(der)
	pool.AddCert(cert)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 5 * time.Second}
	req, _ := http.NewRequest(http.MethodGet, "https://"+s.ListenAddr().String()+verify.PathAuth, nil)
	req.Header.Set("Authorization", "Bearer "+f.Active)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil {
		t.Fatalf("status %d over TLS %v", resp.StatusCode, resp.TLS != nil)
	}
	// Plaintext gets an error or Go's "client sent an HTTP request to an HTTPS server" 400.
	if r, err := http.Get("http://" + s.ListenAddr().String() + verify.PathAuth); err == nil {
		r.Body.Close()
		if r.StatusCode != http.StatusBadRequest {
			t.Fatalf("plaintext answered %d on the TLS listener", r.StatusCode)
		}
	}
}

// Oversized requests are refused by the server the manager runs (its
// MaxHeaderBytes and the body limit of /v1/verify), before any decision.
func TestAbuseOversizedRequests(t *testing.T) {
	f, v := newWorld(t)
	h := (&verify.Handler{Verifier: v, Log: logr.Discard()}).Mux()
	srv := &Server{endpoint: endpoint{Addr: "127.0.0.1:0", Log: logr.Discard()}, Handler: h}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	ready := time.NewTimer(10 * time.Second)
	defer ready.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for srv.ListenAddr() == nil {
		select {
		case <-ready.C:
			t.Fatal("the verification server did not listen within 10s")
		case <-tick.C:
		}
	}
	base := "http://" + srv.ListenAddr().String()

	// Headers beyond MaxHeaderBytes (64 KiB, plus net/http's slack): 431.
	req, _ := http.NewRequest(http.MethodGet, base+verify.PathAuth, nil)
	req.Header.Set(verify.HeaderAuthorization, "Bearer "+f.Active)
	req.Header.Set("X-Padding", strings.Repeat("p", 128<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("oversized headers: %d, want 431", resp.StatusCode)
	}

	// A body beyond verify.MaxBodyBytes: 413, also when it holds a valid key.
	body := `{"key":"` + f.Active + `","sourceIP":"` + strings.Repeat(" ", verify.MaxBodyBytes) + `"}`
	resp, err = http.Post(base+verify.PathVerify, "application/json", bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized body: %d, want 413", resp.StatusCode)
	}
	if strings.Contains(string(msg), f.Active) {
		t.Error("the refusal quotes the key")
	}

	// And the server still verifies normally afterwards.
	req, _ = http.NewRequest(http.MethodGet, base+verify.PathAuth, nil)
	req.Header.Set(verify.HeaderAuthorization, "Bearer "+f.Active)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("a normal request after the oversized ones: %d", resp.StatusCode)
	}
}

func TestReadyOnlyWhenSynced(t *testing.T) {
	g := &syncGate{}
	if g.Check(&http.Request{}) == nil {
		t.Fatal("ready before the caches synced")
	}
	g.ready.Store(true)
	if err := g.Check(&http.Request{}); err != nil {
		t.Fatal(err)
	}
}

func TestPerKeyMetricsGate(t *testing.T) {
	elected := make(chan struct{})
	on := perKeyMetrics(true, elected)
	if on() {
		t.Fatal("per-key series before this replica was elected")
	}
	close(elected)
	if !on() {
		t.Fatal("no per-key series on the leader")
	}
	if perKeyMetrics(false, elected)() {
		t.Fatal("per-key series with --metrics-per-key=false")
	}
}
