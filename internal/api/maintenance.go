package api

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairnkv/cairn/internal/config"
	"github.com/cairnkv/cairn/internal/member"
)

// Maintenance serves etcdserverpb.Maintenance. RPCs not listed here answer
// Unimplemented until they are built (Downgrade).
type Maintenance struct {
	pb.UnimplementedMaintenanceServer
	m *member.Member
}

// NewMaintenance returns the Maintenance service of m.
func NewMaintenance(m *member.Member) *Maintenance { return &Maintenance{m: m} }

// Status reports the member's version, storage and raft state.
func (s *Maintenance) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	st := s.m.Status()
	return &pb.StatusResponse{
		Header:           s.m.Header(0),
		Version:          config.EtcdVersion,
		DbSize:           st.DBSize,
		DbSizeInUse:      st.DBSizeInUse,
		Leader:           st.Leader,
		RaftIndex:        st.Committed,
		RaftTerm:         st.Term,
		RaftAppliedIndex: st.Applied,
		StorageVersion:   "3.7.0",
		IsLearner:        s.m.IsLearner(),
	}, nil
}

// Alarm lists alarms; Cairn raises none yet, so the list is empty and
// activate/deactivate change nothing.
func (s *Maintenance) Alarm(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	return &pb.AlarmResponse{Header: s.m.Header(0)}, nil
}

// Defragment compacts storage online; it does not block reads or writes.
func (s *Maintenance) Defragment(ctx context.Context, _ *pb.DefragmentRequest) (*pb.DefragmentResponse, error) {
	if err := s.m.Defragment(ctx); err != nil {
		return nil, togRPC(err)
	}
	return &pb.DefragmentResponse{Header: s.m.Header(0)}, nil
}

// MoveLeader transfers leadership; it must be sent to the leader.
func (s *Maintenance) MoveLeader(ctx context.Context, r *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error) {
	if err := s.m.MoveLeader(ctx, r.TargetID); err != nil {
		return nil, togRPC(err)
	}
	return &pb.MoveLeaderResponse{Header: s.m.Header(0)}, nil
}

// HashKV hashes the key-value history up to a revision; members that
// applied the same log agree on it (used by corruption checks).
func (s *Maintenance) HashKV(ctx context.Context, r *pb.HashKVRequest) (*pb.HashKVResponse, error) {
	h, rev, compact, err := s.m.Store().HashKV(r.Revision)
	if err != nil {
		return nil, togRPC(err)
	}
	return &pb.HashKVResponse{Header: s.m.Header(0), Hash: h, CompactRevision: compact, HashRevision: rev}, nil
}

// Hash hashes the key-value state at the current revision. (etcd hashes its
// whole bbolt file; it is documented as a testing aid only.)
func (s *Maintenance) Hash(ctx context.Context, _ *pb.HashRequest) (*pb.HashResponse, error) {
	h, _, _, err := s.m.Store().HashKV(0)
	if err != nil {
		return nil, togRPC(err)
	}
	return &pb.HashResponse{Header: s.m.Header(0), Hash: h}, nil
}

// snapshotChunk is the size of one Snapshot response's blob (etcd's).
const snapshotChunk = 32 << 10

// Snapshot streams a backup of the member's applied state: a Cairn backup
// file (package backup), which `etcdctl snapshot save` stores and
// `cairnctl snapshot restore` turns into the data dirs of a new cluster.
func (s *Maintenance) Snapshot(_ *pb.SnapshotRequest, stream pb.Maintenance_SnapshotServer) error {
	body, err := s.m.Backup()
	if err != nil {
		return togRPC(err)
	}
	defer body.Close()
	// The header's revision is the backup's point in time, as etcd's.
	hdr := s.m.Header(body.Revision)
	return body.Stream(snapshotChunk, func(p []byte, remaining int64) error {
		return stream.Send(&pb.SnapshotResponse{Header: hdr, RemainingBytes: uint64(remaining), Blob: p, Version: "3.7.0"})
	})
}
