package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestClusterLeaseLeaderKill: a client connected only to a follower keeps
// a lease alive (the follower forwards renewals to the leader) while the
// leader is killed with SIGKILL. The lease outlives several TTLs: renewals
// continue through the new leader, which gives every lease an election
// timeout of grace. A lease nobody renews still expires, and its key is
// gone on every member.
func TestClusterLeaseLeaderKill(t *testing.T) {
	const ttl = 3
	c := startCluster(t, 3)
	all := clusterClient(t, c.members)
	leader, _ := waitLeader(t, all, c.members)
	follower := c.others(leader)[0]
	cli := follower.client()
	ctx := testCtx(t)

	kept, err := cli.Grant(ctx, ttl)
	require.NoError(t, err)
	passive, err := cli.Grant(ctx, ttl)
	require.NoError(t, err)
	_, err = cli.Put(ctx, "kept", "v", clientv3.WithLease(kept.ID))
	require.NoError(t, err)
	_, err = cli.Put(ctx, "passive", "v", clientv3.WithLease(passive.ID))
	require.NoError(t, err)

	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	ka, err := cli.KeepAlive(kctx, kept.ID)
	require.NoError(t, err)
	first := <-ka
	require.NotNil(t, first)
	require.Equal(t, int64(ttl), first.TTL)

	leader.kill()
	killed := time.Now()
	renewedAfterKill := 0
	// Three TTLs after the kill, the kept lease is still alive.
	for time.Since(killed) < 3*ttl*time.Second {
		select {
		case r, ok := <-ka:
			require.True(t, ok, "keepalive channel closed: the lease was lost")
			require.Equal(t, int64(ttl), r.TTL)
			renewedAfterKill++
		case <-time.After(100 * time.Millisecond):
		}
	}
	require.Greater(t, renewedAfterKill, 3, "renewals did not continue through the new leader")
	gr, err := cli.Get(ctx, "kept")
	require.NoError(t, err)
	require.Len(t, gr.Kvs, 1, "the kept-alive lease's key is gone")
	ttlResp, err := cli.TimeToLive(ctx, kept.ID)
	require.NoError(t, err)
	require.Equal(t, int64(ttl), ttlResp.GrantedTTL)
	require.Greater(t, ttlResp.TTL, int64(0))

	// The passive lease expired (at most its TTL plus an election timeout
	// after the new leader took over), on every surviving member.
	for _, s := range c.members {
		if s == leader {
			continue
		}
		n, _ := waitGone(t, s, "passive")
		require.Zero(t, n)
	}
	kcancel()
}

// waitGone polls s (serializable reads) until key is gone.
func waitGone(t *testing.T, s *server, key string) (int, error) {
	t.Helper()
	cli := s.client()
	deadline := time.Now().Add(clusterWait)
	for {
		gr, err := cli.Get(testCtx(t), key, clientv3.WithSerializable())
		if err == nil && len(gr.Kvs) == 0 {
			return 0, nil
		}
		require.True(t, time.Now().Before(deadline), "%s still has %s: %v", s.name, key, err)
		time.Sleep(50 * time.Millisecond)
	}
}

// TestClusterProposalDuringElection: with two of three members killed,
// the survivor knows no leader. A Put and a LeaseGrant sent to it then do
// not fail with "no leader": like etcd, the server holds them until a
// leader is elected (here, once a killed member is back) and then
// proposes them, so an election is invisible to clients.
func TestClusterProposalDuringElection(t *testing.T) {
	c := startCluster(t, 3)
	all := clusterClient(t, c.members)
	leader, _ := waitLeader(t, all, c.members)
	rest := c.others(leader)
	survivor, down := rest[0], rest[1]
	leader.kill()
	down.kill()
	cli := survivor.client()
	deadline := time.Now().Add(clusterWait)
	for {
		st := statusOf(cli, survivor)
		if st.err == nil && st.leader == 0 {
			break
		}
		require.True(t, waitPoll(deadline), "the survivor still names a leader: %+v", st)
	}

	ctx := testCtx(t)
	type result struct {
		what string
		err  error
	}
	done := make(chan result, 2)
	go func() {
		_, err := cli.Put(ctx, "during-election", "v")
		done <- result{"put", err}
	}()
	var granted clientv3.LeaseID
	go func() {
		resp, err := cli.Grant(ctx, 30)
		if err == nil {
			granted = resp.ID
		}
		done <- result{"lease grant", err}
	}()
	require.NoError(t, down.launch())
	for range 2 {
		r := <-done
		require.NoError(t, r.err, "%s sent while there was no leader", r.what)
	}
	gr, err := cli.Get(ctx, "during-election")
	require.NoError(t, err)
	require.Len(t, gr.Kvs, 1)
	ttl, err := cli.TimeToLive(ctx, granted)
	require.NoError(t, err)
	require.Equal(t, int64(30), ttl.GrantedTTL)
}
