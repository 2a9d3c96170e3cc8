package raftnode

import "github.com/prometheus/client_golang/prometheus"

// metrics are the raft loop's Prometheus metrics, under etcd's names so
// that dashboards and alerts written for etcd keep working.
type metrics struct {
	leaderChanges   prometheus.Counter
	walFsync        prometheus.Histogram
	walWriteBytes   prometheus.Counter
	readIndexFailed prometheus.Counter
	slowReadIndex   prometheus.Counter
	readRounds      prometheus.Counter
	remoteReads     prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "etcd_server_leader_changes_seen_total", Help: "The number of leader changes seen.",
		}),
		// Cairn's raft log lives in Pebble: this is the synced write of a
		// Ready's entries and HardState, the moment etcd's WAL fsync
		// stands for. etcd's buckets: 1 ms to about 8 s.
		walFsync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "etcd_disk_wal_fsync_duration_seconds",
			Help:    "The latency distributions of fsync called by WAL.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		walWriteBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "etcd_disk_wal_write_bytes_total", Help: "Total number of bytes written in WAL.",
		}),
		readIndexFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "etcd_server_read_indexes_failed_total", Help: "The total number of failed read indexes seen.",
		}),
		slowReadIndex: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "etcd_server_slow_read_indexes_total", Help: "The total number of pending read indexes not in sync with leader's or timed out read index requests.",
		}),
		// Cairn's own: etcd has no per-round metric. Reads per round =
		// linearizable reads / rounds; each round costs a heartbeat
		// broadcast on the leader.
		readRounds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cairn_server_read_index_rounds_total", Help: "The number of read-index rounds this member started.",
		}),
		remoteReads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cairn_server_read_index_remote_total", Help: "The number of read-index requests from other members this leader answered from its own rounds.",
		}),
	}
}

// Collectors returns the node's metrics, for registration.
func (n *Node) Collectors() []prometheus.Collector {
	m := n.met
	return []prometheus.Collector{m.leaderChanges, m.walFsync, m.walWriteBytes, m.readIndexFailed, m.slowReadIndex, m.readRounds, m.remoteReads}
}
