package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestMetricsEtcdNames: /metrics serves the metrics etcd operators watch,
// under etcd's names, and they count what happened. Passes against etcd
// (E2E_SERVER_BINARY) too.
func TestMetricsEtcdNames(t *testing.T) {
	s := startServer(t)
	cli := s.client()
	ctx := testCtx(t)
	mustPut(t, cli, "a", "1", 2)
	mustPut(t, cli, "b", "2", 3)
	_, err := cli.Get(ctx, "a")
	require.NoError(t, err)
	_, err = cli.Txn(ctx).If(clientv3.Compare(clientv3.Value("a"), "=", "1")).Then(clientv3.OpPut("c", "3"), clientv3.OpPut("d", "4")).Commit()
	require.NoError(t, err)
	_, err = cli.Delete(ctx, "b")
	require.NoError(t, err)

	atLeast := map[string]float64{
		"etcd_server_has_leader":                          1,
		"etcd_server_is_leader":                           1,
		"etcd_server_leader_changes_seen_total":           1,
		"etcd_server_proposals_committed_total":           5,
		"etcd_server_proposals_applied_total":             5,
		"etcd_mvcc_put_total":                             2,
		"etcd_mvcc_range_total":                           1,
		"etcd_mvcc_txn_total":                             1,
		"etcd_mvcc_delete_total":                          1,
		"etcd_disk_wal_fsync_duration_seconds_count":      1,
		"etcd_disk_backend_commit_duration_seconds_count": 1,
		"etcd_debugging_mvcc_current_revision":            5,
		"etcd_mvcc_db_total_size_in_bytes":                1,
		"os_fd_used":                                      1,
		"os_fd_limit":                                     1,
	}
	for name, min := range atLeast {
		require.GreaterOrEqual(t, metricValue(t, s, name), min, name)
	}
	for _, name := range []string{"etcd_server_is_learner", "etcd_server_proposals_failed_total", "etcd_server_proposals_pending",
		"etcd_server_slow_apply_total", "etcd_server_read_indexes_failed_total", "etcd_server_slow_read_indexes_total"} {
		metricValue(t, s, name) // present
	}
	resp, err := http.Get(s.clientURL() + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	for _, labelled := range []string{`etcd_server_version{server_version="`, `etcd_server_go_version{server_go_version="go`, `etcd_cluster_version{cluster_version="3.`} {
		require.True(t, strings.Contains(string(body), labelled), "no %s...} in /metrics", labelled)
	}
}
