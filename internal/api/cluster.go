package api

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairnkv/cairn/internal/member"
)

// Cluster serves etcdserverpb.Cluster. Membership changes answer
// Unimplemented until multi-member clusters are built.
type Cluster struct {
	pb.UnimplementedClusterServer
	m *member.Member
}

// NewCluster returns the Cluster service of m.
func NewCluster(m *member.Member) *Cluster { return &Cluster{m: m} }

// MemberList lists the members; linearizable on request.
func (s *Cluster) MemberList(ctx context.Context, r *pb.MemberListRequest) (*pb.MemberListResponse, error) {
	if r.Linearizable {
		if err := s.m.LinearizableBarrier(ctx); err != nil {
			return nil, togRPC(err)
		}
	}
	resp := &pb.MemberListResponse{Header: s.m.Header(0)}
	for _, mem := range s.m.Cluster().Members() {
		resp.Members = append(resp.Members, &pb.Member{
			ID: mem.ID, Name: mem.Name, PeerURLs: mem.PeerURLs, ClientURLs: mem.ClientURLs, IsLearner: mem.IsLearner,
		})
	}
	return resp, nil
}
