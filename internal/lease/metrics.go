package lease

import "github.com/prometheus/client_golang/prometheus"

// metrics keep etcd's names, so lease dashboards carry over.
type metrics struct {
	granted prometheus.Counter
	revoked prometheus.Counter
	renewed prometheus.Counter
	ttl     prometheus.Histogram
}

func newMetrics() *metrics {
	return &metrics{
		granted: prometheus.NewCounter(prometheus.CounterOpts{Name: "etcd_debugging_lease_granted_total", Help: "The total number of granted leases."}),
		revoked: prometheus.NewCounter(prometheus.CounterOpts{Name: "etcd_debugging_lease_revoked_total", Help: "The total number of revoked leases."}),
		renewed: prometheus.NewCounter(prometheus.CounterOpts{Name: "etcd_debugging_lease_renewed_total", Help: "The number of renewed leases seen by the leader."}),
		ttl: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "etcd_debugging_lease_ttl_total",
			Help:    "Bucketed histogram of lease TTLs.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14),
		}),
	}
}

// Register registers the lessor's metrics.
func (l *Lessor) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{l.met.granted, l.met.revoked, l.met.renewed, l.met.ttl} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
