package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/status"

	"github.com/cairnkv/cairn/internal/api/v3electionpb"
	"github.com/cairnkv/cairn/internal/api/v3lockpb"
)

func errText(err error) string {
	if err == nil {
		return "<nil>"
	}
	st, _ := status.FromError(err)
	return fmt.Sprintf("%s: %s", st.Code(), st.Message())
}

// TestLockService: the v3lockpb.Lock gRPC service. The key is
// name/<lease ID in hex>; a second locker waits until Unlock.
func TestLockService(t *testing.T) {
	s := startServer(t)
	cli := s.client()
	ctx := testCtx(t)
	lc := v3lockpb.NewLockClient(cli.ActiveConnection())
	l1, err := cli.Grant(ctx, 60)
	require.NoError(t, err)
	l2, err := cli.Grant(ctx, 60)
	require.NoError(t, err)

	r1, err := lc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("l"), Lease: int64(l1.ID)})
	require.NoError(t, err)
	require.Equal(t, fmt.Sprintf("l/%x", int64(l1.ID)), string(r1.Key))
	require.Equal(t, int64(2), r1.Header.Revision)

	got := make(chan *v3lockpb.LockResponse, 1)
	go func() {
		r, err := lc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("l"), Lease: int64(l2.ID)})
		if err != nil {
			t.Errorf("second lock: %v", err)
		}
		got <- r
	}()
	waitKeyCount(t, cli, "l/", 2)
	select {
	case <-got:
		t.Fatal("second locker got the lock while it was held")
	default:
	}
	u, err := lc.Unlock(ctx, &v3lockpb.UnlockRequest{Key: r1.Key})
	require.NoError(t, err)
	require.Equal(t, int64(4), u.Header.Revision)
	select {
	case r2 := <-got:
		require.Equal(t, fmt.Sprintf("l/%x", int64(l2.ID)), string(r2.Key))
	case <-time.After(opTimeout):
		t.Fatal("second locker did not get the lock")
	}

	_, err = lc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("l"), Lease: 12345})
	require.Equal(t, "Unknown: etcdserver: requested lease not found", errText(err))
}

// waitKeyCount polls until prefix holds n keys.
func waitKeyCount(t *testing.T, cli *clientv3.Client, prefix string, n int) {
	t.Helper()
	deadline := time.Now().Add(opTimeout)
	for {
		r, err := cli.Get(testCtx(t), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		require.NoError(t, err)
		if r.Count == int64(n) {
			return
		}
		require.True(t, time.Now().Before(deadline), "%s has %d keys, want %d", prefix, r.Count, n)
		time.Sleep(20 * time.Millisecond)
	}
}

// TestElectionService: the v3electionpb.Election gRPC service.
func TestElectionService(t *testing.T) {
	s := startServer(t)
	cli := s.client()
	ctx := testCtx(t)
	ec := v3electionpb.NewElectionClient(cli.ActiveConnection())
	l1, err := cli.Grant(ctx, 60)
	require.NoError(t, err)

	leader := func() string {
		r, err := ec.Leader(ctx, &v3electionpb.LeaderRequest{Name: []byte("e")})
		if err != nil {
			return errText(err)
		}
		return fmt.Sprintf("rev %d %s=%s c%d m%d v%d", r.Header.Revision, r.Kv.Key, r.Kv.Value, r.Kv.CreateRevision, r.Kv.ModRevision, r.Kv.Version)
	}
	key := fmt.Sprintf("e/%x", int64(l1.ID))
	require.Equal(t, "Unknown: election: no leader", leader())
	c, err := ec.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte("e"), Lease: int64(l1.ID), Value: []byte("v1")})
	require.NoError(t, err)
	require.Equal(t, int64(2), c.Header.Revision)
	require.Equal(t, "e", string(c.Leader.Name))
	require.Equal(t, key, string(c.Leader.Key))
	require.Equal(t, int64(2), c.Leader.Rev)
	require.Equal(t, int64(l1.ID), c.Leader.Lease)

	obs, err := ec.Observe(ctx, &v3electionpb.LeaderRequest{Name: []byte("e")})
	require.NoError(t, err)
	o, err := obs.Recv()
	require.NoError(t, err)
	require.Equal(t, "v1", string(o.Kv.Value))
	require.Equal(t, int64(2), o.Header.Revision)
	p, err := ec.Proclaim(ctx, &v3electionpb.ProclaimRequest{Leader: c.Leader, Value: []byte("v2")})
	require.NoError(t, err)
	require.Equal(t, int64(3), p.Header.Revision)
	o, err = obs.Recv()
	require.NoError(t, err)
	require.Equal(t, "v2", string(o.Kv.Value))
	require.Equal(t, int64(3), o.Kv.ModRevision)
	require.Equal(t, "rev 3 "+key+"=v2 c2 m3 v2", leader())

	_, err = ec.Proclaim(ctx, &v3electionpb.ProclaimRequest{Value: []byte("v2")})
	require.Equal(t, `Unknown: "leader" field must be provided`, errText(err))
	_, err = ec.Proclaim(ctx, &v3electionpb.ProclaimRequest{Leader: &v3electionpb.LeaderKey{Name: []byte("e"), Key: []byte("e/1"), Rev: 2, Lease: int64(l1.ID)}, Value: []byte("v2")})
	require.Equal(t, "Unknown: election: not leader", errText(err))
	rs, err := ec.Resign(ctx, &v3electionpb.ResignRequest{Leader: c.Leader})
	require.NoError(t, err)
	require.Equal(t, int64(4), rs.Header.Revision)
	require.Equal(t, "Unknown: election: no leader", leader())

	// A second candidate waits for the first to resign or lose its lease.
	l2, err := cli.Grant(ctx, 60)
	require.NoError(t, err)
	c1, err := ec.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte("e"), Lease: int64(l1.ID), Value: []byte("a")})
	require.NoError(t, err)
	won := make(chan *v3electionpb.CampaignResponse, 1)
	go func() {
		c2, err := ec.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte("e"), Lease: int64(l2.ID), Value: []byte("b")})
		if err != nil {
			t.Errorf("second campaign: %v", err)
		}
		won <- c2
	}()
	waitKeyCount(t, cli, "e/", 2)
	select {
	case <-won:
		t.Fatal("second candidate won while the first leads")
	default:
	}
	_, err = cli.Revoke(ctx, clientv3.LeaseID(c1.Leader.Lease))
	require.NoError(t, err)
	select {
	case c2 := <-won:
		require.Equal(t, fmt.Sprintf("e/%x", int64(l2.ID)), string(c2.Leader.Key))
	case <-time.After(opTimeout):
		t.Fatal("second candidate did not win after the first's lease was revoked")
	}
	o, err = obs.Recv()
	require.NoError(t, err)
	for string(o.Kv.Value) != "b" {
		o, err = obs.Recv()
		require.NoError(t, err)
	}
}
