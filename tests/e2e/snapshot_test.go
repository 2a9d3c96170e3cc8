package e2e

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestSnapshotSaveRestore: `etcdctl snapshot save` backs up a member, and
// `cairnctl snapshot restore` turns the file into the data dirs of a new
// 3-member cluster that serves the same keys, values and revisions
// (compaction included), has its own identity and takes writes.
func TestSnapshotSaveRestore(t *testing.T) {
	if !isCairn() {
		t.Skip("cairnctl restores Cairn snapshots; etcd's are restored by etcdutl")
	}
	ctx := testCtx(t)
	src := startServer(t)
	cli := src.client()
	for i, kv := range [][2]string{{"a", "1"}, {"b", "2"}, {"a", "3"}, {"c", "4"}} {
		mustPut(t, cli, kv[0], kv[1], int64(i+2))
	}
	_, err := cli.Delete(ctx, "b")
	require.NoError(t, err)
	_, err = cli.Compact(ctx, 3, clientv3.WithCompactPhysical())
	require.NoError(t, err)
	want, err := cli.Get(ctx, "", clientv3.WithPrefix())
	require.NoError(t, err)

	file := filepath.Join(t.TempDir(), "backup.db")
	r := src.etcdctl(t, "", "snapshot", "save", file)
	require.Zero(t, r.code, r.stderr)
	require.Contains(t, r.stdout, "Snapshot saved at "+file)

	st := cairnctl(t, "snapshot", "status", file, "-w", "json")
	require.Contains(t, st, `"revision":6`)

	// A new cluster: every member restored from the same file.
	c := &cluster{t: t, token: "restored"}
	for _, name := range []string{"r1", "r2", "r3"} {
		c.members = append(c.members, newMember(t, name))
	}
	t.Cleanup(c.stopAll)
	c.setInitialArgs()
	for _, s := range c.members {
		out := cairnctl(t, "snapshot", "restore", file,
			"--name", s.name, "--data-dir", s.dataDir,
			"--initial-cluster", argOf(s.args, "--initial-cluster"),
			"--initial-cluster-token", c.token,
			"--initial-advertise-peer-urls", argOf(s.args, "--initial-advertise-peer-urls"))
		require.Contains(t, out, "revision 6")
	}
	require.NoError(t, c.tryStart())

	rcli := clusterClient(t, c.members)
	for _, s := range c.members {
		got, err := s.client().Get(ctx, "", clientv3.WithPrefix(), clientv3.WithSerializable())
		require.NoError(t, err)
		require.Equal(t, want.Kvs, got.Kvs, "%s serves the backed-up keys", s.name)
		require.GreaterOrEqual(t, got.Header.Revision, want.Header.Revision)
		require.NotEqual(t, want.Header.ClusterId, got.Header.ClusterId, "a restored cluster is a new cluster")
	}
	// The compaction came along: history below it is gone, above it kept.
	_, err = rcli.Get(ctx, "a", clientv3.WithRev(2))
	require.ErrorIs(t, err, rpctypes.ErrCompacted)
	old, err := rcli.Get(ctx, "b", clientv3.WithRev(3))
	require.NoError(t, err)
	require.Len(t, old.Kvs, 1)
	// It takes writes, after the backed-up revision.
	put, err := rcli.Put(ctx, "d", "5")
	require.NoError(t, err)
	require.Greater(t, put.Header.Revision, want.Header.Revision)
	members, err := rcli.MemberList(ctx)
	require.NoError(t, err)
	var names []string
	for _, m := range members.Members {
		names = append(names, m.Name)
	}
	slices.Sort(names)
	require.Equal(t, []string{"r1", "r2", "r3"}, names)

	// Restoring over a data dir that exists is refused.
	out, code := cairnctlRun(t, "snapshot", "restore", file, "--name", "r1", "--data-dir", c.members[0].dataDir,
		"--initial-cluster", argOf(c.members[0].args, "--initial-cluster"),
		"--initial-advertise-peer-urls", argOf(c.members[0].args, "--initial-advertise-peer-urls"))
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "not empty")
	// A damaged file is refused.
	out, code = cairnctlRun(t, "snapshot", "status", filepath.Join(t.TempDir(), "missing"))
	require.Equal(t, 1, code, out)
}

// argOf returns the value of flag in a server's arguments.
func argOf(args []string, flag string) string {
	if i := slices.Index(args, flag); i >= 0 && i+1 < len(args) {
		return args[i+1]
	}
	return ""
}

func cairnctl(t *testing.T, args ...string) string {
	t.Helper()
	out, code := cairnctlRun(t, args...)
	require.Zero(t, code, "cairnctl %s: %s", strings.Join(args, " "), out)
	return out
}

func cairnctlRun(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	var buf bytes.Buffer
	cmd := exec.CommandContext(ctx, binaries.cairnctl, args...)
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !(errors.As(err, &exitErr) && ctx.Err() == nil) {
		t.Fatalf("cairnctl %s: %v\n%s", strings.Join(args, " "), err, buf.String())
	}
	return buf.String(), cmd.ProcessState.ExitCode()
}
