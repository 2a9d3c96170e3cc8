package server

import (
	"os"
	"runtime"
	"strings"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairnkv/cairn/internal/config"
	"github.com/cairnkv/cairn/internal/member"
)

// registerMetrics registers the member's gauges under etcd's metric names,
// so existing dashboards and alerts keep working.
func registerMetrics(reg prometheus.Registerer, m *member.Member) {
	gauge := func(name, help string, fn func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, fn))
	}
	gauge("etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.", func() float64 {
		return b2f(m.Status().Leader != 0)
	})
	gauge("etcd_server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise.", func() float64 {
		return b2f(m.Status().Leader == m.ID())
	})
	gauge("etcd_server_id", "Member ID of this member.", func() float64 { return float64(m.ID()) })
	gauge("etcd_server_proposals_committed_total", "The total number of consensus proposals committed.", func() float64 {
		return float64(m.Status().Committed)
	})
	gauge("etcd_server_proposals_applied_total", "The total number of consensus proposals applied.", func() float64 {
		return float64(m.Status().Applied)
	})
	gauge("etcd_mvcc_db_total_size_in_bytes", "Total size of the underlying database physically allocated in bytes.", func() float64 {
		return float64(m.Status().DBSize)
	})
	gauge("etcd_mvcc_db_total_size_in_use_in_bytes", "Total size of the underlying database logically in use in bytes.", func() float64 {
		return float64(m.Status().DBSizeInUse)
	})
	gauge("etcd_debugging_mvcc_current_revision", "The current revision of store.", func() float64 {
		return float64(m.Store().Rev())
	})
	gauge("etcd_debugging_mvcc_compact_revision", "The revision of the last compaction in store.", func() float64 {
		return float64(m.Store().CompactRev())
	})
	gauge("etcd_server_is_learner", "Whether or not this member is a learner. 1 if is, 0 otherwise.", func() float64 {
		return b2f(m.IsLearner())
	})
	gauge("etcd_server_proposals_pending", "The current number of pending proposals to commit.", func() float64 {
		return float64(m.PendingProposals())
	})
	gauge("os_fd_used", "The number of used file descriptors.", func() float64 {
		entries, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			return 0
		}
		return float64(len(entries))
	})
	gauge("os_fd_limit", "The file descriptor limit.", func() float64 {
		var rl syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return 0
		}
		return float64(rl.Cur)
	})
	reg.MustRegister(m.Watch().Collectors()...)
	reg.MustRegister(m.Collectors()...)
	labelled := func(name, help, label, value string) {
		v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, []string{label})
		v.WithLabelValues(value).Set(1)
		reg.MustRegister(v)
	}
	labelled("etcd_server_version", "Which version is running. 1 for 'server_version' label with current version.", "server_version", config.EtcdVersion)
	labelled("etcd_server_go_version", "Which Go version server is running with. 1 for 'server_go_version' label with current version.", "server_go_version", runtime.Version())
	// etcd reports the cluster version as major.minor.
	labelled("etcd_cluster_version", "Which version is running. 1 for 'cluster_version' label with current cluster version", "cluster_version", clusterVersion(config.EtcdVersion))
}

// clusterVersion is etcd's major.minor form of a version.
func clusterVersion(v string) string {
	if i := strings.LastIndexByte(v, '.'); i > 0 {
		return v[:i]
	}
	return v
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
