package token

import (
	"github.com/prometheus/client_golang/prometheus"

	"keyward.dev/keyward/internal/verify"
)

// MetricTokens counts token requests.
const MetricTokens = "keyward_tokens_total"

// resultIssued is MetricTokens' result of a token issued.
const resultIssued = "issued"

// Metrics are the token service's Prometheus metrics; no per-key label.
type Metrics struct {
	requests *prometheus.CounterVec
}

// NewMetrics creates the metrics.
func NewMetrics() *Metrics {
	return &Metrics{requests: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricTokens,
		Help: "Token requests at /v1/token by namespace, application and result: issued, the verification reason of a refused client, or the OAuth error (invalid_request, unsupported_grant_type, invalid_scope).",
	}, []string{"namespace", "application", "result"})}
}

// Register registers the metrics with reg, reusing them when a second
// manager in the same process (as in tests) registered them first.
func (m *Metrics) Register(reg prometheus.Registerer) error {
	return verify.RegisterOrReuse(reg, &m.requests)
}

// Observe counts one token request.
func (m *Metrics) Observe(namespace, application, result string) {
	m.requests.WithLabelValues(namespace, application, result).Inc()
}
