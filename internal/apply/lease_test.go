package apply

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"

	"github.com/cairnkv/cairn/internal/lease"
	"github.com/cairnkv/cairn/internal/mvcc"
	"github.com/cairnkv/cairn/internal/raftnode"
)

// leaseApplier is an Applier with a real lessor; run applies requests as
// one apply batch (one Pebble batch), as when they commit in one Ready.
type leaseApplier struct {
	*env
	a       *Applier
	l       *lease.Lessor
	index   uint64
	results map[uint64]Result
}

func newLeaseApplier(t *testing.T) *leaseApplier {
	e := newEnv(t)
	l, err := lease.New(zaptest.NewLogger(t), e.db, lease.Config{})
	require.NoError(t, err)
	la := &leaseApplier{env: e, l: l, results: map[uint64]Result{}}
	la.a, err = New(zaptest.NewLogger(t), Config{DB: e.db, Store: e.s, Leases: l,
		Deliver: func(id uint64, r Result) { la.results[id] = r }})
	require.NoError(t, err)
	return la
}

func (la *leaseApplier) run(reqs ...*pb.InternalRaftRequest) []Result {
	la.t.Helper()
	var ents []*raftpb.Entry
	var ids []uint64
	for _, r := range reqs {
		la.index++
		r.Header = &pb.RequestHeader{ID: la.index}
		ids = append(ids, la.index)
		data, err := proto.Marshal(r)
		require.NoError(la.t, err)
		ents = append(ents, &raftpb.Entry{Term: proto.Uint64(1), Index: proto.Uint64(la.index), Type: raftpb.EntryType_EntryNormal.Enum(), Data: data})
	}
	require.NoError(la.t, la.a.applyBatch([]raftnode.Apply{{Entries: ents}}))
	out := make([]Result, len(ids))
	for i, id := range ids {
		out[i] = la.results[id]
	}
	return out
}

func (la *leaseApplier) keys(prefix string) []string {
	rr, err := la.s.Range([]byte(prefix), []byte(prefix+"\xff"), mvcc.RangeOptions{})
	require.NoError(la.t, err)
	var out []string
	for _, kv := range rr.KVs {
		out = append(out, fmt.Sprintf("%s@%d/l%d", kv.Key, kv.ModRevision, kv.Lease))
	}
	return out
}

func grantReq(id, ttl int64) *pb.InternalRaftRequest {
	return &pb.InternalRaftRequest{LeaseGrant: &pb.LeaseGrantRequest{ID: id, TTL: ttl}}
}

func putReq(key string, id int64) *pb.InternalRaftRequest {
	return &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte(key), Value: []byte("v"), Lease: id}}
}

func revokeReq(id int64) *pb.InternalRaftRequest {
	return &pb.InternalRaftRequest{LeaseRevoke: &pb.LeaseRevokeRequest{ID: id}}
}

// A revocation deletes exactly the keys attached to the lease, at one
// revision, whether they were attached in earlier batches or earlier in
// the same batch, and not keys moved to another lease or to none in the
// same batch (the revocation reads no key through the batch).
func TestRevokeInOneBatch(t *testing.T) {
	la := newLeaseApplier(t)
	res := la.run(grantReq(1, 60), grantReq(2, 60), putReq("a", 1), putReq("b", 1), putReq("c", 1))
	for _, r := range res {
		require.NoError(t, r.Err)
	}
	res = la.run(
		putReq("d", 1), // attached in this batch
		putReq("b", 2), // moved to lease 2 in this batch
		putReq("c", 0), // detached in this batch
		putReq("e", 1), // attached, then
		&pb.InternalRaftRequest{DeleteRange: &pb.DeleteRangeRequest{Key: []byte("e")}}, // deleted
		revokeReq(1),
		revokeReq(1),
		putReq("f", 1),
	)
	require.NoError(t, res[5].Err)
	rev := res[5].Resp.(*pb.LeaseRevokeResponse).Header.Revision
	require.ErrorIs(t, res[6].Err, lease.ErrNotFound)
	require.ErrorIs(t, res[7].Err, ErrLeaseNotFound) // Compat: a put with a revoked lease
	require.Equal(t, []string{"b@6/l2", "c@7/l0"}, la.keys(""))
	require.Equal(t, int64(10), rev)
	rr, err := la.s.Range([]byte("a"), []byte("z"), mvcc.RangeOptions{Rev: rev - 1})
	require.NoError(t, err)
	require.Len(t, rr.KVs, 4, "a, b, c, d one revision before the revoke")
	// The index is clean: lease 2 has exactly b; nothing is left for 1.
	for id, want := range map[int64][]string{1: nil, 2: {"b"}} {
		ks, err := lease.Keys(la.db, id)
		require.NoError(t, err)
		var got []string
		for _, k := range ks {
			got = append(got, string(k))
		}
		require.Equal(t, want, got, "keys of lease %d", id)
	}
	require.False(t, la.l.Exists(1))
	require.True(t, la.l.Exists(2))
}
