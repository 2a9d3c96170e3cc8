package apply

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// slowApply is etcd's warning threshold for applying entries.
const slowApply = 100 * time.Millisecond

// metrics are the applier's Prometheus metrics, under etcd's names.
type metrics struct {
	backendCommit prometheus.Histogram
	slowApply     prometheus.Counter
	puts          prometheus.Counter
	deletes       prometheus.Counter
	txns          prometheus.Counter
}

func newMetrics() *metrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	return &metrics{
		// The commit of an apply batch (the state, and the applied index
		// with it), what etcd's backend commit is; etcd's buckets.
		backendCommit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "etcd_disk_backend_commit_duration_seconds",
			Help:    "The latency distributions of commit called by backend.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		slowApply: counter("etcd_server_slow_apply_total", "The total number of slow apply requests (likely overloaded from slow disk)."),
		puts:      counter("etcd_mvcc_put_total", "Total number of puts seen by this member."),
		deletes:   counter("etcd_mvcc_delete_total", "Total number of deletes seen by this member."),
		txns:      counter("etcd_mvcc_txn_total", "Total number of txns seen by this member."),
	}
}

// count records one applied client request.
func (m *metrics) count(req *pb.InternalRaftRequest) {
	switch {
	case req.Put != nil:
		m.puts.Inc()
	case req.DeleteRange != nil:
		m.deletes.Inc()
	case req.Txn != nil:
		m.txns.Inc()
	}
}

// Collectors returns the applier's metrics, for registration.
func (a *Applier) Collectors() []prometheus.Collector {
	m := a.met
	return []prometheus.Collector{m.backendCommit, m.slowApply, m.puts, m.deletes, m.txns}
}
