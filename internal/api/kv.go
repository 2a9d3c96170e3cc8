package api

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairnkv/cairn/internal/apply"
	"github.com/cairnkv/cairn/internal/member"
	"github.com/cairnkv/cairn/internal/mvcc"
)

// KV serves etcdserverpb.KV.
type KV struct {
	pb.UnimplementedKVServer
	m         *member.Member
	maxTxnOps int

	ranges, proposalsFailed prometheus.Counter
}

// NewKV returns the KV service of m.
func NewKV(m *member.Member, maxTxnOps int) *KV {
	return &KV{
		m: m, maxTxnOps: maxTxnOps,
		ranges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "etcd_mvcc_range_total", Help: "Total number of ranges seen by this member.",
		}),
		proposalsFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "etcd_server_proposals_failed_total", Help: "The total number of failed proposals seen.",
		}),
	}
}

// Collectors returns the service's metrics (etcd's names), for registration.
func (s *KV) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.ranges, s.proposalsFailed}
}

func (s *KV) header(h *pb.ResponseHeader) *pb.ResponseHeader {
	out := s.m.Header(h.GetRevision())
	return out
}

// Range serves a read; linearizable unless r.Serializable.
func (s *KV) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	if err := checkRange(r); err != nil {
		return nil, err
	}
	s.ranges.Inc()
	if !r.Serializable {
		if err := s.m.LinearizableBarrier(ctx); err != nil {
			return nil, togRPC(err)
		}
	}
	resp, err := apply.Range(s.m.Store(), r)
	if err != nil {
		return nil, togRPC(err)
	}
	resp.Header = s.header(resp.Header)
	return resp, nil
}

// Put replicates a put.
func (s *KV) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	if err := checkPut(r); err != nil {
		return nil, err
	}
	res, err := s.propose(ctx, &pb.InternalRaftRequest{Put: r})
	if err != nil {
		return nil, err
	}
	resp := res.Resp.(*pb.PutResponse)
	resp.Header = s.header(resp.Header)
	return resp, nil
}

// DeleteRange replicates a delete.
func (s *KV) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	if err := checkDelete(r); err != nil {
		return nil, err
	}
	res, err := s.propose(ctx, &pb.InternalRaftRequest{DeleteRange: r})
	if err != nil {
		return nil, err
	}
	resp := res.Resp.(*pb.DeleteRangeResponse)
	resp.Header = s.header(resp.Header)
	return resp, nil
}

// Txn serves a transaction: read-only ones through the read path (no log
// entry), the rest through raft.
func (s *KV) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	if err := checkTxn(r, s.maxTxnOps); err != nil {
		return nil, err
	}
	if apply.IsTxnReadOnly(r) {
		if !txnSerializable(r) {
			if err := s.m.LinearizableBarrier(ctx); err != nil {
				return nil, togRPC(err)
			}
		}
		v, err := s.m.Store().View()
		if err != nil {
			return nil, togRPC(err)
		}
		defer v.Close()
		resp, err := apply.Txn(v, nil, r)
		if err != nil {
			return nil, togRPC(err)
		}
		resp.Header.Revision = v.Rev()
		resp.Header = s.header(resp.Header)
		return resp, nil
	}
	res, err := s.propose(ctx, &pb.InternalRaftRequest{Txn: r})
	if err != nil {
		return nil, err
	}
	resp := res.Resp.(*pb.TxnResponse)
	resp.Header = s.header(resp.Header)
	return resp, nil
}

// txnSerializable reports whether every range in r asks for a serializable
// read (etcd serves such a txn locally).
func txnSerializable(r *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			if rr := op.GetRequestRange(); rr != nil && !rr.Serializable {
				return false
			}
			if t := op.GetRequestTxn(); t != nil && !txnSerializable(t) {
				return false
			}
		}
	}
	return true
}

// Compact replicates a compaction; with Physical it waits until the old
// versions are gone from storage.
func (s *KV) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	res, err := s.propose(ctx, &pb.InternalRaftRequest{Compaction: r})
	if err != nil {
		return nil, err
	}
	if r.Physical && res.Physical != nil {
		select {
		case <-res.Physical:
		case <-ctx.Done():
			return nil, togRPC(ctx.Err())
		}
	}
	resp := res.Resp.(*pb.CompactionResponse)
	resp.Header = s.header(resp.Header)
	return resp, nil
}

func (s *KV) propose(ctx context.Context, req *pb.InternalRaftRequest) (apply.Result, error) {
	res, err := s.m.Propose(ctx, req)
	if err != nil {
		s.proposalsFailed.Inc()
		return res, togRPC(err)
	}
	if res.Err != nil {
		return res, togRPC(res.Err)
	}
	if res.Resp == nil {
		return res, togRPC(fmt.Errorf("api: empty result"))
	}
	return res, nil
}

var _ apply.View = (*mvcc.Store)(nil)
