package transport

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the transport's Prometheus metrics, named as etcd's
// (server/etcdserver/api/rafthttp/metrics.go). Member IDs are hexadecimal
// label values, as in etcd.
type metrics struct {
	sentBytes    *prometheus.CounterVec // To
	recvBytes    *prometheus.CounterVec // From
	sentFailures *prometheus.CounterVec // To: dropped or lost messages
	recvFailures *prometheus.CounterVec // From
	activePeers  *prometheus.GaugeVec   // Local, Remote
	disconnected *prometheus.CounterVec // Local, Remote

	snapSendSuccess  *prometheus.CounterVec   // To
	snapSendFailures *prometheus.CounterVec   // To
	snapSendSeconds  *prometheus.HistogramVec // To
	snapSendInflight *prometheus.GaugeVec     // To
	snapRecvSuccess  *prometheus.CounterVec   // From
	snapRecvFailures *prometheus.CounterVec   // From
	snapRecvSeconds  *prometheus.HistogramVec // From
	snapRecvInflight *prometheus.GaugeVec     // From
}

func newMetrics() *metrics {
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "etcd", Subsystem: "network", Name: name, Help: help,
		}, labels)
	}
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "etcd", Subsystem: "network", Name: name, Help: help,
		}, labels)
	}
	histogram := func(name, help string, labels ...string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "etcd", Subsystem: "network", Name: name, Help: help,
			// 100 ms to about 27 minutes, as etcd.
			Buckets: prometheus.ExponentialBuckets(0.1, 2, 14),
		}, labels)
	}
	return &metrics{
		sentBytes:    counter("peer_sent_bytes_total", "The total number of bytes sent to peers.", "To"),
		recvBytes:    counter("peer_received_bytes_total", "The total number of bytes received from peers.", "From"),
		sentFailures: counter("peer_sent_failures_total", "The total number of send failures from peers.", "To"),
		recvFailures: counter("peer_received_failures_total", "The total number of receive failures from peers.", "From"),
		activePeers:  gauge("active_peers", "The current number of active peer connections.", "Local", "Remote"),
		disconnected: counter("disconnected_peers_total", "The total number of disconnected peers.", "Local", "Remote"),

		snapSendSuccess:  counter("snapshot_send_success", "Total number of successful snapshot sends", "To"),
		snapSendFailures: counter("snapshot_send_failures", "Total number of snapshot send failures", "To"),
		snapSendSeconds:  histogram("snapshot_send_total_duration_seconds", "Total latency distributions of v3 snapshot sends", "To"),
		snapSendInflight: gauge("snapshot_send_inflights_total", "Total number of inflight snapshot sends", "To"),
		snapRecvSuccess:  counter("snapshot_receive_success", "Total number of successful snapshot receives", "From"),
		snapRecvFailures: counter("snapshot_receive_failures", "Total number of snapshot receive failures", "From"),
		snapRecvSeconds:  histogram("snapshot_receive_total_duration_seconds", "Total latency distributions of v3 snapshot receives", "From"),
		snapRecvInflight: gauge("snapshot_receive_inflights_total", "Total number of inflight snapshot receives", "From"),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		m.sentBytes, m.recvBytes, m.sentFailures, m.recvFailures, m.activePeers, m.disconnected,
		m.snapSendSuccess, m.snapSendFailures, m.snapSendSeconds, m.snapSendInflight,
		m.snapRecvSuccess, m.snapRecvFailures, m.snapRecvSeconds, m.snapRecvInflight,
	}
}

// RegisterMetrics registers the transport's metrics (etcd's
// etcd_network_* names) with reg. Register one transport per registry.
func (t *Transport) RegisterMetrics(reg prometheus.Registerer) error {
	var errs []error
	for _, c := range t.met.collectors() {
		errs = append(errs, reg.Register(c))
	}
	return errors.Join(errs...)
}
