package verify

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// Metric names, defined once.
const (
	MetricRequests    = "keyward_verify_requests_total"
	MetricDuration    = "keyward_verify_duration_seconds"
	MetricAccessKeys  = "keyward_access_keys"
	MetricKeyExpiry   = "keyward_access_key_expiry_timestamp_seconds"
	MetricKeyHeavyUse = "keyward_access_key_heavy_use"
	labelNamespace    = "namespace"
	labelApplication  = "application"
	labelResult       = "result"
	labelPhase        = "phase"
	labelName         = "name"
	collectTimeout    = 5 * time.Second
)

// Metrics are the verifier's Prometheus metrics. The request counters carry
// no per-key label (cardinality). The per-key expiry gauge is one series per
// AccessKey, like cert-manager's certificate expiry, reported by the leader
// only and switched off by --metrics-per-key=false; the cardinality of each
// metric is in docs/operations.md ("Metrics and Prometheus").
type Metrics struct {
	requests *prometheus.CounterVec
	duration prometheus.Histogram
	heavyUse *prometheus.GaugeVec
	keys     *keysCollector
}

// NewMetrics creates the metrics; the key collector reads store.
func NewMetrics(store Store) *Metrics {
	return &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricRequests,
			Help: "Key verifications by namespace, application and result (the reason, docs/gateways.md).",
		}, []string{labelNamespace, labelApplication, labelResult}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    MetricDuration,
			Help:    "Time to verify a key, in seconds, inside the verifier (lookup and decision).",
			Buckets: []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .05, .25},
		}),
		heavyUse: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricKeyHeavyUse,
			Help: "1 while a key is used more often than --heavy-use-threshold requests per minute on this replica.",
		}, []string{labelNamespace, labelName}),
		keys: &keysCollector{
			store: store,
			count: prometheus.NewDesc(MetricAccessKeys, "AccessKeys by namespace, application and phase.",
				[]string{labelNamespace, labelApplication, labelPhase}, nil),
			expiry: prometheus.NewDesc(MetricKeyExpiry, "The effective expiry of an AccessKey (status.expiresAt), in seconds since the epoch, with its application and phase; reported by the leader only, and not at all with --metrics-per-key=false.",
				[]string{labelNamespace, labelName, labelApplication, labelPhase}, nil),
		},
	}
}

// Register registers the metrics with reg. Vectors already registered (a
// second verifier in the same process, as in tests) are reused; an earlier
// key collector is replaced by this one.
func (m *Metrics) Register(reg prometheus.Registerer) error {
	if err := RegisterOrReuse(reg, &m.requests); err != nil {
		return err
	}
	if err := RegisterOrReuse(reg, &m.duration); err != nil {
		return err
	}
	if err := RegisterOrReuse(reg, &m.heavyUse); err != nil {
		return err
	}
	if err := reg.Register(m.keys); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return err
		}
		reg.Unregister(are.ExistingCollector)
		return reg.Register(m.keys)
	}
	return nil
}

// RegisterOrReuse registers *c with reg, or, when a collector of its type
// is registered under its name already (a second manager in one process, as
// in tests), points *c at that one.
func RegisterOrReuse[T prometheus.Collector](reg prometheus.Registerer, c *T) error {
	err := reg.Register(*c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(T); ok {
			*c = existing
			return nil
		}
	}
	return err
}

// CollectWhen makes the key collector read the store only while ready
// reports true (the caches are synced).
func (m *Metrics) CollectWhen(ready func() bool) { m.keys.ready = ready }

// ReportPerKeyWhen makes the key collector report the per-key expiry
// series only while perKey reports true (on the leader, unless switched
// off).
func (m *Metrics) ReportPerKeyWhen(perKey func() bool) { m.keys.perKey = perKey }

// Observe counts one verification.
func (m *Metrics) Observe(res Result, took time.Duration) {
	m.requests.WithLabelValues(res.Namespace, res.Application, string(res.Reason)).Inc()
	m.duration.Observe(took.Seconds())
}

// SetHeavyUse shows or clears a key's heavy use.
func (m *Metrics) SetHeavyUse(namespace, name string, heavy bool) {
	if heavy {
		m.heavyUse.WithLabelValues(namespace, name).Set(1)
	} else {
		m.heavyUse.DeleteLabelValues(namespace, name)
	}
}

// keysCollector reports keyward_access_keys and the expiry gauges from the
// cache at scrape time.
type keysCollector struct {
	store         Store
	count, expiry *prometheus.Desc
	// ready reports whether the store can be read without waiting (the
	// caches are synced); nil means always. Before that the collector
	// reports nothing rather than fail the whole scrape, which would hide
	// every other metric (keyward_watch_failing among them) from a
	// manager that cannot watch.
	ready func() bool
	// perKey reports whether this replica reports the per-key expiry
	// series: the leader does (one series per key in the cluster, not one
	// per replica), no replica does with --metrics-per-key=false. nil means
	// always.
	perKey func() bool
}

func (c *keysCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.count; ch <- c.expiry }

func (c *keysCollector) Collect(ch chan<- prometheus.Metric) {
	if c.ready != nil && !c.ready() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), collectTimeout)
	defer cancel()
	keys, err := c.store.AccessKeys(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.count, err)
		return
	}
	perKey := c.perKey == nil || c.perKey()
	type group struct{ ns, app, phase string }
	counts := map[group]int{}
	for _, k := range keys {
		phase := string(k.Status.Phase)
		if phase == "" {
			phase = string(keyward.PhasePending)
		}
		counts[group{k.Namespace, k.Spec.Application, phase}]++
		if perKey && k.Status.ExpiresAt != nil {
			ch <- prometheus.MustNewConstMetric(c.expiry, prometheus.GaugeValue,
				float64(k.Status.ExpiresAt.Unix()), k.Namespace, k.Name, k.Spec.Application, phase)
		}
	}
	for g, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.count, prometheus.GaugeValue, float64(n), g.ns, g.app, g.phase)
	}
}
