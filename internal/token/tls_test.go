package token

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"keyward.dev/keyward/internal/verify"
)

// readSpy records whether a request body was read.
type readSpy struct {
	r    io.Reader
	read bool
}

func (s *readSpy) Read(p []byte) (int, error) { s.read = true; return s.r.Read(p) }

// TestTokenEndpointsRequireTLS: /v1/token and /v1/introspect refuse
// plaintext from a client that is not on loopback, before reading
// anything; everything else, loopback clients, TLS and
// --token-allow-plaintext pass.
func TestTokenEndpointsRequireTLS(t *testing.T) {
	const remote, secret = "10.1.2.3:40000", "kw_not_a_real_key_but_a_secret"
	cases := []struct {
		name, method, path, remote string
		tls, allow, refused        bool
	}{
		{"token, plaintext, pod network", http.MethodPost, PathToken, remote, false, false, true},
		{"introspect, plaintext, pod network", http.MethodPost, PathIntrospect, remote, false, false, true},
		{"token through an unclean path", http.MethodPost, "/v1/./token", remote, false, false, true},
		{"token, a GET", http.MethodGet, PathToken, remote, false, false, true},
		{"token, plaintext, IPv6 client", http.MethodPost, PathToken, "[2001:db8::1]:443", false, false, true},
		{"token, plaintext, unparsable address", http.MethodPost, PathToken, "somewhere", false, false, true},
		{"token over TLS", http.MethodPost, PathToken, remote, true, false, false},
		{"token, plaintext, IPv4 loopback", http.MethodPost, PathToken, "127.0.0.1:5000", false, false, false},
		{"token, plaintext, IPv6 loopback", http.MethodPost, PathToken, "[::1]:5000", false, false, false},
		{"token, plaintext, mapped loopback", http.MethodPost, PathToken, "[::ffff:127.0.0.1]:5000", false, false, false},
		{"token, plaintext allowed by flag", http.MethodPost, PathToken, remote, false, true, false},
		{"introspect, plaintext allowed by flag", http.MethodPost, PathIntrospect, remote, false, true, false},
		{"auth, plaintext", http.MethodGet, verify.PathAuth, remote, false, false, false},
		{"verify, plaintext", http.MethodPost, verify.PathVerify, remote, false, false, false},
		{"discovery, plaintext", http.MethodGet, PathDiscovery, remote, false, false, false},
		{"jwks, plaintext", http.MethodGet, PathJWKS, remote, false, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			called := false
			next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { called = true; w.WriteHeader(http.StatusTeapot) })
			body := &readSpy{r: strings.NewReader("grant_type=client_credentials&client_secret=" + secret)}
			req := httptest.NewRequest(c.method, "http://verifier"+c.path, body)
			req.URL.Path = c.path // as sent, not cleaned by NewRequest
			req.RemoteAddr = c.remote
			req.Header.Set("Content-Type", formContentType)
			req.SetBasicAuth("kid", secret)
			if c.tls {
				req.TLS = &tls.ConnectionState{HandshakeComplete: true}
			}
			rec := httptest.NewRecorder()
			RequireTLS(next, c.allow).ServeHTTP(rec, req)
			if !c.refused {
				if !called || rec.Code != http.StatusTeapot {
					t.Fatalf("not passed on: called %v, status %d", called, rec.Code)
				}
				return
			}
			if called || body.read {
				t.Fatalf("refused request reached the handler (%v) or had its body read (%v)", called, body.read)
			}
			var e OAuthError
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
				t.Fatal(err)
			}
			if rec.Code != http.StatusBadRequest || e.Error != ErrInvalidRequest || e.Description != "TLS is required" {
				t.Fatalf("got %d %+v", rec.Code, e)
			}
			if rec.Header().Get("Cache-Control") != "no-store" || strings.Contains(rec.Body.String(), secret) {
				t.Fatalf("headers %v, body %q", rec.Header(), rec.Body.String())
			}
		})
	}
}
