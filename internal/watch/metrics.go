package watch

import "github.com/prometheus/client_golang/prometheus"

// metrics uses etcd's names so that watch dashboards keep working.
type metrics struct {
	watchers prometheus.Gauge
	streams  prometheus.Gauge
	slow     prometheus.Gauge
	pending  prometheus.Gauge
	events   prometheus.Counter
}

func newMetrics() metrics {
	return metrics{
		watchers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcd_debugging_mvcc_watcher_total", Help: "Total number of watchers."}),
		streams:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcd_debugging_mvcc_watch_stream_total", Help: "Total number of watch streams."}),
		slow:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcd_debugging_mvcc_slow_watcher_total", Help: "Total number of unsynced slow watchers."}),
		pending:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcd_debugging_mvcc_pending_events_total", Help: "Total number of pending events to be sent."}),
		events:   prometheus.NewCounter(prometheus.CounterOpts{Name: "etcd_debugging_mvcc_events_total", Help: "Total number of events sent by this member."}),
	}
}

// Collectors returns the hub's metrics for registration.
func (h *Hub) Collectors() []prometheus.Collector {
	m := h.metrics
	return []prometheus.Collector{m.watchers, m.streams, m.slow, m.pending, m.events}
}
