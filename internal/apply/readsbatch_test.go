package apply

import (
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// The applier uses an unindexed batch (which cannot be read) only when no
// request in it reads through the batch; a wrong "false" here would make a
// delete or compare fail mid-batch.
func TestReadsBatch(t *testing.T) {
	put := &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("k")}}}
	keep := &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("k"), IgnoreValue: true}}}
	rng := &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("k")}}}
	del := &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("k")}}}
	nested := func(t *pb.TxnRequest) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: t}}
	}
	cmp := []*pb.Compare{{Key: []byte("k")}}
	for _, tc := range []struct {
		name string
		req  *pb.InternalRaftRequest
		want bool
	}{
		{"put", &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte("k")}}, false},
		{"put ignore_value", &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte("k"), IgnoreValue: true}}, true},
		{"put ignore_lease", &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte("k"), IgnoreLease: true}}, true},
		{"delete", &pb.InternalRaftRequest{DeleteRange: &pb.DeleteRangeRequest{Key: []byte("k")}}, true},
		{"compaction", &pb.InternalRaftRequest{Compaction: &pb.CompactionRequest{Revision: 1}}, false},
		{"txn of puts", &pb.InternalRaftRequest{Txn: &pb.TxnRequest{Success: []*pb.RequestOp{put}}}, false},
		{"txn with compare", &pb.InternalRaftRequest{Txn: &pb.TxnRequest{Compare: cmp, Success: []*pb.RequestOp{put}}}, true},
		{"txn with range", &pb.InternalRaftRequest{Txn: &pb.TxnRequest{Success: []*pb.RequestOp{put, rng}}}, true},
		{"txn with delete in failure", &pb.InternalRaftRequest{Txn: &pb.TxnRequest{Success: []*pb.RequestOp{put}, Failure: []*pb.RequestOp{del}}}, true},
		{"txn with keeping put", &pb.InternalRaftRequest{Txn: &pb.TxnRequest{Success: []*pb.RequestOp{keep}}}, true},
		{"nested txn of puts", &pb.InternalRaftRequest{Txn: &pb.TxnRequest{Success: []*pb.RequestOp{nested(&pb.TxnRequest{Success: []*pb.RequestOp{put}})}}}, false},
		{"nested txn with compare", &pb.InternalRaftRequest{Txn: &pb.TxnRequest{Success: []*pb.RequestOp{nested(&pb.TxnRequest{Compare: cmp})}}}, true},
	} {
		if got := readsBatch(tc.req); got != tc.want {
			t.Errorf("%s: readsBatch = %v, want %v", tc.name, got, tc.want)
		}
	}
}
