package e2e

import (
	"bytes"
	"context"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// grantID grants a lease with a client-chosen ID (etcdctl cannot), so
// that etcdctl's output is the same against etcd and cairn.
func grantID(t *testing.T, s *server, id, ttl int64) {
	t.Helper()
	cli := s.client()
	resp, err := pb.NewLeaseClient(cli.ActiveConnection()).LeaseGrant(testCtx(t), &pb.LeaseGrantRequest{ID: id, TTL: ttl})
	require.NoError(t, err)
	require.Equal(t, id, resp.ID)
}

// TestEtcdctlLease: etcdctl lease grant/timetolive/list/keep-alive/revoke
// and put --lease. Expected outputs are etcd v3.7.3's (lease IDs are
// chosen by the test so they print the same).
func TestEtcdctlLease(t *testing.T) {
	s := startServer(t)

	// Server-chosen IDs: only the shape can be compared. Compat: a TTL
	// below the minimum (ceil(1.5 election timeouts) = 2 s by default) is
	// raised silently.
	r := s.etcdctl(t, "", "lease", "grant", "1")
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, regexp.MustCompile(`^lease [0-9a-f]{16} granted with TTL\(2s\)\n$`), r.stdout)
	r = s.etcdctl(t, "", "lease", "grant", "5000000000", "-w", "json")
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, regexp.MustCompile(`"TTL":5000000000,"Error":""}`), r.stdout)
	revoked := s.etcdctl(t, "", "lease", "list")
	for _, line := range strings.Split(strings.TrimSpace(revoked.stdout), "\n")[1:] {
		require.Equal(t, 0, s.etcdctl(t, "", "lease", "revoke", line).code)
	}

	// Compat: granting and revoking a lease without keys writes no
	// revision; a fresh store is at revision 1.
	grantID(t, s, 0x100, 600)
	runCtlSteps(t, s, []ctlStep{
		{name: "too large", args: []string{"lease", "grant", "9000000001"}, err: "Error: failed to grant lease (etcdserver: too large lease TTL)"},
		{name: "list", args: []string{"lease", "list"}, stdout: "found 1 leases\n0000000000000100\n"},
		{name: "put a", args: []string{"put", "--lease=100", "a", "1"}, stdout: "OK\n"},
		{name: "put b", args: []string{"put", "--lease=100", "b", "2"}, stdout: "OK\n"},
		{name: "get", args: []string{"get", "a", "-w", "fields"},
			fields: "\"Revision\" : 3\n\"Key\" : \"a\"\n\"CreateRevision\" : 2\n\"ModRevision\" : 2\n\"Version\" : 1\n\"Value\" : \"1\"\n\"Lease\" : 256\n\"More\" : false\n\"Count\" : 1\n"},
		{name: "keep-alive once", args: []string{"lease", "keep-alive", "--once", "100"}, stdout: "lease 0000000000000100 keepalived with TTL(600)\n"},
		{name: "missing timetolive", args: []string{"lease", "timetolive", "1234"}, stdout: "lease 0000000000001234 already expired\n"},
		{name: "missing timetolive json", args: []string{"lease", "timetolive", "1234", "-w", "json"},
			json: `{"revision":3,"id":4660,"ttl":-1,"granted-ttl":0,"keys":null}`},
		{name: "missing keep-alive", args: []string{"lease", "keep-alive", "--once", "1234"}, err: "Error: etcdserver: requested lease not found", code: 2},
		{name: "missing keep-alive stream", args: []string{"lease", "keep-alive", "1234"}, stdout: "lease 0000000000001234 expired or revoked.\n"},
		{name: "revoke", args: []string{"lease", "revoke", "100"}, stdout: "lease 0000000000000100 revoked\n"}, // rev 4
		{name: "keys gone", args: []string{"get", "", "--prefix", "-w", "json"}, json: `{"header":{"revision":4}}`},
		{name: "revoked timetolive", args: []string{"lease", "timetolive", "100"}, stdout: "lease 0000000000000100 already expired\n"},
		{name: "revoke again", args: []string{"lease", "revoke", "100"}, err: "Error: failed to revoke lease (etcdserver: requested lease not found)"},
		{name: "put on revoked", args: []string{"put", "--lease=100", "a", "1"}, err: "Error: etcdserver: requested lease not found"},
		{name: "list empty", args: []string{"lease", "list"}, stdout: "found 0 leases\n"},
	})

	// timetolive with keys: the remaining TTL depends on timing.
	grantID(t, s, 0x200, 600)
	require.Equal(t, 0, s.etcdctl(t, "", "put", "--lease=200", "k2", "v").code)
	require.Equal(t, 0, s.etcdctl(t, "", "put", "--lease=200", "k1", "v").code)
	r = s.etcdctl(t, "", "lease", "timetolive", "200", "--keys")
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, regexp.MustCompile(`^lease 0000000000000200 granted with TTL\(600s\), remaining\(5\d\ds\), attached keys\(\[(k1 k2|k2 k1)\]\)\n$`), r.stdout)

	// keep-alive (streaming) keeps renewing until the lease is revoked,
	// then says so and exits.
	grantID(t, s, 0x300, 2)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binaries.etcdctl, "--endpoints="+s.endpoint, "lease", "keep-alive", "300")
	out := &lockedBuffer{}
	cmd.Stdout = out
	require.NoError(t, cmd.Start())
	// clientv3 renews every TTL/3: five renewals outlive the 2 s TTL.
	deadline := time.Now().Add(opTimeout)
	for strings.Count(out.String(), "\n") < 5 {
		require.True(t, time.Now().Before(deadline), "keep-alive printed only %q", out.String())
		time.Sleep(50 * time.Millisecond)
	}
	ttl := s.etcdctl(t, "", "lease", "timetolive", "300")
	require.Regexp(t, regexp.MustCompile(`^lease 0000000000000300 granted with TTL\(2s\), remaining\([012]s\)\n$`), ttl.stdout)
	require.Equal(t, 0, s.etcdctl(t, "", "lease", "revoke", "300").code)
	require.NoError(t, cmd.Wait())
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.GreaterOrEqual(t, len(lines), 3, out.String())
	for _, l := range lines[:len(lines)-1] {
		require.Equal(t, "lease 0000000000000300 keepalived with TTL(2)", l)
	}
	require.Equal(t, "lease 0000000000000300 expired or revoked.", lines[len(lines)-1])
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestLeaseRevokeWatch: revoking a lease deletes all its keys at one
// revision, so a watcher gets them in one response, as DELETE events with
// that revision, in key order. Compat: etcd revokes in one txn and sorts
// the keys.
func TestLeaseRevokeWatch(t *testing.T) {
	s := startServer(t)
	cli := s.client()
	ctx := testCtx(t)
	l, err := cli.Grant(ctx, 600)
	require.NoError(t, err)
	for _, k := range []string{"w/c", "w/a", "w/b"} {
		_, err := cli.Put(ctx, k, "v", clientv3.WithLease(l.ID))
		require.NoError(t, err)
	}
	_, err = cli.Put(ctx, "w/free", "v")
	require.NoError(t, err)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := cli.Watch(wctx, "w/", clientv3.WithPrefix(), clientv3.WithRev(6))
	rev, err := cli.Revoke(ctx, l.ID)
	require.NoError(t, err)
	require.Equal(t, int64(6), rev.Header.Revision)
	resp := <-wch
	require.NoError(t, resp.Err())
	var got []string
	for _, ev := range resp.Events {
		require.Equal(t, mvccpb.DELETE, ev.Type)
		require.Equal(t, int64(6), ev.Kv.ModRevision)
		got = append(got, string(ev.Kv.Key))
	}
	require.Equal(t, []string{"w/a", "w/b", "w/c"}, got)
	gr, err := cli.Get(ctx, "w/", clientv3.WithPrefix())
	require.NoError(t, err)
	require.Equal(t, []string{"w/free"}, keysOf(gr.Kvs))
}
