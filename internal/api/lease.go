package api

import (
	"context"
	"errors"
	"io"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairnkv/cairn/internal/lease"
	"github.com/cairnkv/cairn/internal/member"
)

// Lease serves etcdserverpb.Lease.
type Lease struct {
	pb.UnimplementedLeaseServer
	m *member.Member
}

// NewLease returns the Lease service of m.
func NewLease(m *member.Member) *Lease { return &Lease{m: m} }

// LeaseGrant grants a lease (the leader-chosen ID when r.ID is 0).
func (s *Lease) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	resp, err := s.m.LeaseGrant(ctx, r)
	if err != nil {
		return nil, togRPC(err)
	}
	resp.Header = s.m.Header(resp.Header.GetRevision())
	return resp, nil
}

// LeaseRevoke revokes a lease and deletes its keys at one revision.
func (s *Lease) LeaseRevoke(ctx context.Context, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	res, err := s.m.Propose(ctx, &pb.InternalRaftRequest{LeaseRevoke: &pb.LeaseRevokeRequest{ID: r.ID}})
	if err != nil {
		return nil, togRPC(err)
	}
	if res.Err != nil {
		return nil, togRPC(res.Err)
	}
	resp := res.Resp.(*pb.LeaseRevokeResponse)
	resp.Header = s.m.Header(resp.Header.GetRevision())
	return resp, nil
}

// LeaseTimeToLive reports a lease's TTLs. Compat: a lease that does not
// exist is not an error: TTL is -1.
func (s *Lease) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	resp, err := s.m.LeaseTimeToLive(ctx, r.ID, r.Keys)
	if errors.Is(err, lease.ErrNotFound) {
		resp, err = &pb.LeaseTimeToLiveResponse{ID: r.ID, TTL: -1}, nil
	}
	if err != nil {
		return nil, togRPC(err)
	}
	resp.Header = s.m.Header(0)
	return resp, nil
}

// LeaseLeases lists every lease (from this member's applied state, as etcd).
func (s *Lease) LeaseLeases(ctx context.Context, r *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	ids := s.m.Lessor().Leases()
	resp := &pb.LeaseLeasesResponse{Header: s.m.Header(0), Leases: make([]*pb.LeaseStatus, len(ids))}
	for i, id := range ids {
		resp.Leases[i] = &pb.LeaseStatus{ID: id}
	}
	return resp, nil
}

// LeaseKeepAlive renews leases as the client asks, one answer per request,
// in order. Compat: a lease that is gone is answered with TTL 0.
func (s *Lease) LeaseKeepAlive(stream pb.Lease_LeaseKeepAliveServer) error {
	ctx := stream.Context()
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		// Compat: the header is taken before the renewal, so its revision
		// is at most the one at which the lease was renewed (a lease
		// revoked at rev 3 is never reported renewed at rev 4).
		resp := &pb.LeaseKeepAliveResponse{ID: req.ID, Header: s.m.Header(0)}
		ttl, err := s.m.LeaseRenew(ctx, req.ID)
		if errors.Is(err, lease.ErrNotFound) {
			ttl, err = 0, nil
		}
		if err != nil {
			return togRPC(err)
		}
		resp.TTL = ttl
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}
