package apply

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/cairnkv/cairn/internal/mvcc"
	"github.com/cairnkv/cairn/internal/raftnode"
	"github.com/cairnkv/cairn/internal/storage/schema"
)

// An entry that carries several requests (raftnode merges proposals)
// applies them in order, each at its own revision, delivers each result
// to its own waiter, and is applied once even if handed over again (a
// replay after a restart).
func TestApplyMergedEntry(t *testing.T) {
	la := newLeaseApplier(t)
	reqs := []*pb.InternalRaftRequest{
		{Header: &pb.RequestHeader{ID: 101}, Put: &pb.PutRequest{Key: []byte("a"), Value: []byte("1")}},
		{Header: &pb.RequestHeader{ID: 102}, Put: &pb.PutRequest{Key: []byte("b"), Value: []byte("2")}},
		{Header: &pb.RequestHeader{ID: 103}, Put: &pb.PutRequest{Key: []byte("a"), Value: []byte("3"), PrevKv: true}},
		{Header: &pb.RequestHeader{ID: 104}, Txn: &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: []byte("a"), Target: pb.Compare_VERSION, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Version{Version: 2}}},
			Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("b")}}}},
		}},
	}
	var parts [][]byte
	for _, r := range reqs {
		data, err := proto.Marshal(r)
		require.NoError(t, err)
		parts = append(parts, data)
	}
	ent := &raftpb.Entry{Term: proto.Uint64(1), Index: proto.Uint64(1), Type: raftpb.EntryType_EntryNormal.Enum(), Data: raftnode.MergeProposals(parts, 0)}
	require.NoError(t, la.a.applyBatch([]raftnode.Apply{{Entries: []*raftpb.Entry{ent}}}))
	require.EqualValues(t, 1, la.a.AppliedIndex())

	for i, id := range []uint64{101, 102, 103, 104} {
		r, ok := la.results[id]
		require.True(t, ok, "no result for request %d", id)
		require.NoError(t, r.Err)
		var rev int64
		switch resp := r.Resp.(type) {
		case *pb.PutResponse:
			rev = resp.Header.Revision
			if id == 103 {
				require.Equal(t, "1", string(resp.PrevKv.Value))
				require.EqualValues(t, 2, resp.PrevKv.ModRevision)
			}
		case *pb.TxnResponse:
			require.True(t, resp.Succeeded)
			rev = resp.Header.Revision
		}
		require.EqualValues(t, 2+i, rev, "request %d", id)
	}
	rr, err := la.s.Range([]byte("a"), []byte("c"), mvcc.RangeOptions{})
	require.NoError(t, err)
	require.Len(t, rr.KVs, 1)
	require.Equal(t, "3", string(rr.KVs[0].Value))
	require.EqualValues(t, 2, rr.KVs[0].Version)
	require.EqualValues(t, 5, rr.Rev)

	// Handed over again (a replay): nothing is applied twice.
	la.results = map[uint64]Result{}
	require.NoError(t, la.a.applyBatch([]raftnode.Apply{{Entries: []*raftpb.Entry{ent}}}))
	require.Empty(t, la.results)
	require.EqualValues(t, 5, la.s.Rev())
}

// The commit index an apply batch records never moves back. Before the
// raft loop handed committed entries over early, every recorded index was
// a HardState commit index, which only grows; an early hand-off records
// its last entry's index, which may be below a commit index recorded by
// an earlier batch whose entries raft had cut short. Overwriting that one
// with the lower index could leave applied > commit after a crash, and
// the member refuses such a data dir.
func TestCommitHintNeverMovesBack(t *testing.T) {
	la := newLeaseApplier(t)
	put := func(idx uint64) *raftpb.Entry {
		data, err := proto.Marshal(&pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: idx}, Put: &pb.PutRequest{Key: []byte("k"), Value: []byte("v")}})
		require.NoError(t, err)
		return &raftpb.Entry{Term: proto.Uint64(1), Index: proto.Uint64(idx), Type: raftpb.EntryType_EntryNormal.Enum(), Data: data}
	}
	hint := func() uint64 {
		v, closer, err := la.db.Get(schema.CommitHintKey)
		require.NoError(t, err)
		defer closer.Close()
		return binary.BigEndian.Uint64(v)
	}
	// A deferred commit index of 5 with only entries 1-2 handed over.
	require.NoError(t, la.a.applyBatch([]raftnode.Apply{{Entries: []*raftpb.Entry{put(1), put(2)}, Commit: 5}}))
	require.EqualValues(t, 5, hint())
	// Entries 3-4 handed over early, with their last index as the hint.
	require.NoError(t, la.a.applyBatch([]raftnode.Apply{{Entries: []*raftpb.Entry{put(3), put(4)}, Commit: 4}}))
	require.EqualValues(t, 5, hint(), "the recorded commit index moved back")
	require.EqualValues(t, 4, la.a.AppliedIndex())
}
