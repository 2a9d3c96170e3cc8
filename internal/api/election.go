package api

import (
	"context"
	"errors"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/cairnkv/cairn/internal/api/v3electionpb"
	"github.com/cairnkv/cairn/internal/api/v3lockpb"
)

// The Election and Lock services are recipes over KV, Lease and Watch, as
// in etcd: they run the clientv3 concurrency package on an in-process
// client connected to this member's own gRPC server, so their semantics
// are exactly those of a clientv3 user's election or mutex (keys
// name/<lease ID>, the lowest create revision wins, waiters watch the key
// just before theirs).

// errMissingLeaderKey is etcd's answer to a Proclaim or Resign without a
// leader key.
var errMissingLeaderKey = errors.New(`"leader" field must be provided`)

// Election serves v3electionpb.Election.
type Election struct{ c *clientv3.Client }

// NewElection returns the Election service running on client c.
func NewElection(c *clientv3.Client) *Election { return &Election{c: c} }

// session wraps lease (which the caller keeps alive) in a concurrency
// session without a keepalive of its own. Compat: lease 0 grants a new
// lease with the default TTL (60 s) that nobody keeps alive, as etcd does.
func session(ctx context.Context, c *clientv3.Client, lease int64) (*concurrency.Session, error) {
	s, err := concurrency.NewSession(c, concurrency.WithLease(clientv3.LeaseID(lease)), concurrency.WithContext(ctx))
	if err != nil {
		return nil, err
	}
	s.Orphan()
	return s, nil
}

// Campaign waits until the caller leads the election name.
func (e *Election) Campaign(ctx context.Context, r *v3electionpb.CampaignRequest) (*v3electionpb.CampaignResponse, error) {
	s, err := session(ctx, e.c, r.Lease)
	if err != nil {
		return nil, err
	}
	el := concurrency.NewElection(s, string(r.Name))
	if err := el.Campaign(ctx, string(r.Value)); err != nil {
		return nil, err
	}
	return &v3electionpb.CampaignResponse{
		Header: electionHeader(el.Header()),
		Leader: &v3electionpb.LeaderKey{Name: r.Name, Key: []byte(el.Key()), Rev: el.Rev(), Lease: int64(s.Lease())},
	}, nil
}

// Proclaim sets the leader's value, if the key still leads.
func (e *Election) Proclaim(ctx context.Context, r *v3electionpb.ProclaimRequest) (*v3electionpb.ProclaimResponse, error) {
	if r.Leader == nil {
		return nil, errMissingLeaderKey
	}
	el, err := e.resume(ctx, r.Leader)
	if err != nil {
		return nil, err
	}
	if err := el.Proclaim(ctx, string(r.Value)); err != nil {
		return nil, err
	}
	return &v3electionpb.ProclaimResponse{Header: electionHeader(el.Header())}, nil
}

// Resign gives up leadership (deletes the leader key).
func (e *Election) Resign(ctx context.Context, r *v3electionpb.ResignRequest) (*v3electionpb.ResignResponse, error) {
	if r.Leader == nil {
		return nil, errMissingLeaderKey
	}
	el, err := e.resume(ctx, r.Leader)
	if err != nil {
		return nil, err
	}
	if err := el.Resign(ctx); err != nil {
		return nil, err
	}
	return &v3electionpb.ResignResponse{Header: electionHeader(el.Header())}, nil
}

func (e *Election) resume(ctx context.Context, l *v3electionpb.LeaderKey) (*concurrency.Election, error) {
	s, err := session(ctx, e.c, l.Lease)
	if err != nil {
		return nil, err
	}
	return concurrency.ResumeElection(s, string(l.Name), string(l.Key), l.Rev), nil
}

// Leader returns the current leader's key and value.
func (e *Election) Leader(ctx context.Context, r *v3electionpb.LeaderRequest) (*v3electionpb.LeaderResponse, error) {
	s, err := session(ctx, e.c, -1) // Compat: etcd reads through a lease-less session
	if err != nil {
		return nil, err
	}
	resp, err := concurrency.NewElection(s, string(r.Name)).Leader(ctx)
	if err != nil {
		return nil, err
	}
	return &v3electionpb.LeaderResponse{Header: electionHeader(resp.Header), Kv: electionKV(resp.Kvs[0])}, nil
}

// Observe streams the leader's key and value at each change of leader or
// value.
func (e *Election) Observe(r *v3electionpb.LeaderRequest, stream v3electionpb.Election_ObserveServer) error {
	return e.ObserveTo(stream.Context(), r, stream.Send)
}

// ObserveTo is Observe with a send function (the JSON gateway uses it).
func (e *Election) ObserveTo(ctx context.Context, r *v3electionpb.LeaderRequest, send func(*v3electionpb.LeaderResponse) error) error {
	s, err := session(ctx, e.c, -1)
	if err != nil {
		return err
	}
	ch := concurrency.NewElection(s, string(r.Name)).Observe(ctx)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case resp, ok := <-ch:
			if !ok {
				return ctx.Err()
			}
			if err := send(&v3electionpb.LeaderResponse{Header: electionHeader(resp.Header), Kv: electionKV(resp.Kvs[0])}); err != nil {
				return err
			}
		}
	}
}

func electionHeader(h *pb.ResponseHeader) *v3electionpb.ResponseHeader {
	if h == nil {
		return nil
	}
	return &v3electionpb.ResponseHeader{ClusterId: h.ClusterId, MemberId: h.MemberId, Revision: h.Revision, RaftTerm: h.RaftTerm}
}

func electionKV(kv *mvccpb.KeyValue) *v3electionpb.KeyValue {
	return &v3electionpb.KeyValue{Key: kv.Key, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Version: kv.Version, Value: kv.Value, Lease: kv.Lease}
}

// Lock serves v3lockpb.Lock.
type Lock struct{ c *clientv3.Client }

// NewLock returns the Lock service running on client c.
func NewLock(c *clientv3.Client) *Lock { return &Lock{c: c} }

// Lock waits until the caller holds the lock name; the returned key's
// create revision is the fencing token. The lock is held as long as the
// lease lives (docs/locks.md).
func (l *Lock) Lock(ctx context.Context, r *v3lockpb.LockRequest) (*v3lockpb.LockResponse, error) {
	s, err := session(ctx, l.c, r.Lease)
	if err != nil {
		return nil, err
	}
	m := concurrency.NewMutex(s, string(r.Name))
	if err := m.Lock(ctx); err != nil {
		return nil, err
	}
	return &v3lockpb.LockResponse{Header: lockHeader(m.Header()), Key: []byte(m.Key())}, nil
}

// Unlock releases the lock by deleting its key.
func (l *Lock) Unlock(ctx context.Context, r *v3lockpb.UnlockRequest) (*v3lockpb.UnlockResponse, error) {
	resp, err := l.c.Delete(ctx, string(r.Key))
	if err != nil {
		return nil, err
	}
	return &v3lockpb.UnlockResponse{Header: lockHeader(resp.Header)}, nil
}

func lockHeader(h *pb.ResponseHeader) *v3lockpb.ResponseHeader {
	if h == nil {
		return nil
	}
	return &v3lockpb.ResponseHeader{ClusterId: h.ClusterId, MemberId: h.MemberId, Revision: h.Revision, RaftTerm: h.RaftTerm}
}
