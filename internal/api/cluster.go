package api

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairnkv/cairn/internal/member"
	"github.com/cairnkv/cairn/internal/membership"
)

// Cluster serves etcdserverpb.Cluster.
type Cluster struct {
	pb.UnimplementedClusterServer
	m *member.Member
}

// NewCluster returns the Cluster service of m.
func NewCluster(m *member.Member) *Cluster { return &Cluster{m: m} }

func toPB(mem membership.Member) *pb.Member {
	return &pb.Member{ID: mem.ID, Name: mem.Name, PeerURLs: mem.PeerURLs, ClientURLs: mem.ClientURLs, IsLearner: mem.IsLearner}
}

func (s *Cluster) members() []*pb.Member {
	var out []*pb.Member
	for _, mem := range s.m.Cluster().Members() {
		out = append(out, toPB(mem))
	}
	return out
}

// MemberList lists the members; linearizable on request.
func (s *Cluster) MemberList(ctx context.Context, r *pb.MemberListRequest) (*pb.MemberListResponse, error) {
	if r.Linearizable {
		if err := s.m.LinearizableBarrier(ctx); err != nil {
			return nil, togRPC(err)
		}
	}
	return &pb.MemberListResponse{Header: s.m.Header(0), Members: s.members()}, nil
}

// MemberAdd adds a voter or learner; the new member then starts with
// --initial-cluster-state=existing.
func (s *Cluster) MemberAdd(ctx context.Context, r *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
	mem, err := s.m.AddMember(ctx, r.PeerURLs, r.IsLearner)
	if err != nil {
		return nil, togRPC(err)
	}
	return &pb.MemberAddResponse{Header: s.m.Header(0), Member: toPB(mem), Members: s.members()}, nil
}

// MemberRemove removes a member.
func (s *Cluster) MemberRemove(ctx context.Context, r *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
	if err := s.m.RemoveMember(ctx, r.ID); err != nil {
		return nil, togRPC(err)
	}
	return &pb.MemberRemoveResponse{Header: s.m.Header(0), Members: s.members()}, nil
}

// MemberUpdate changes a member's peer URLs.
func (s *Cluster) MemberUpdate(ctx context.Context, r *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error) {
	if err := s.m.UpdateMember(ctx, r.ID, r.PeerURLs); err != nil {
		return nil, togRPC(err)
	}
	return &pb.MemberUpdateResponse{Header: s.m.Header(0), Members: s.members()}, nil
}

// MemberPromote promotes a caught-up learner.
func (s *Cluster) MemberPromote(ctx context.Context, r *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	if err := s.m.PromoteMember(ctx, r.ID); err != nil {
		return nil, togRPC(err)
	}
	return &pb.MemberPromoteResponse{Header: s.m.Header(0), Members: s.members()}, nil
}
