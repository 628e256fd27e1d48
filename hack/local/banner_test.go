package main

import (
	"strings"
	"testing"
)

// The banner names where the verifier, the token service and the metrics
// are, following the flags the user passed after make local's own.
func TestBannerFollowsTheManagerFlags(t *testing.T) {
	svc := servicesWhere(nil)
	for got, want := range map[string]string{
		svc.verify:        "http://127.0.0.1:8082  (POST /v1/verify",
		svc.grpc:          "127.0.0.1:8083  (Envoy ext_authz gRPC)",
		svc.tokens:        "http://127.0.0.1:8082/v1/token  (issuer http://127.0.0.1:8082;",
		metricsWhere(nil): "http://127.0.0.1:8080/metrics",
	} {
		if !strings.HasPrefix(got, want) {
			t.Errorf("default: got %q, want it to start with %q", got, want)
		}
	}

	svc = servicesWhere([]string{"--verify-bind-address=127.0.0.1:9443", "--verify-tls=self-signed", "--token-issuer=https://keys.example"})
	if !strings.HasPrefix(svc.verify, "https://127.0.0.1:9443 ") || !strings.HasPrefix(svc.tokens, "https://127.0.0.1:9443/v1/token  (issuer https://keys.example;") {
		t.Errorf("moved verifier: %+v", svc)
	}
	if svc = servicesWhere([]string{"--tokens=false"}); !strings.HasPrefix(svc.tokens, "off") {
		t.Errorf("--tokens=false: tokens %q", svc.tokens)
	}
	if svc = servicesWhere([]string{"--verify-bind-address=0"}); !strings.HasPrefix(svc.verify, "off") || !strings.HasPrefix(svc.tokens, "off") {
		t.Errorf("verifier off: %+v", svc)
	}
	if got := metricsWhere([]string{"--metrics-secure", "--metrics-bind-address=:8443"}); !strings.HasPrefix(got, "https://:8443/metrics") {
		t.Errorf("secure metrics: %q", got)
	}
}
