// Package member runs one cluster member: it opens the data directory,
// bootstraps or restarts the raft group, and owns the request lifecycle
// (propose and wait for the applied result; linearizable read barriers).
// It owns the goroutines of the raft node, the applier and the compactor,
// and stops them all in Run's return path.
//
// It never speaks gRPC or HTTP (package api and server do) and never
// interprets requests (package apply does).
package member

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/membershippb"
	"go.etcd.io/raft/v3"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	"github.com/cairnkv/cairn/internal/apply"
	"github.com/cairnkv/cairn/internal/config"
	"github.com/cairnkv/cairn/internal/membership"
	"github.com/cairnkv/cairn/internal/mvcc"
	"github.com/cairnkv/cairn/internal/raftlog"
	"github.com/cairnkv/cairn/internal/raftnode"
	"github.com/cairnkv/cairn/internal/storage"
	"github.com/cairnkv/cairn/internal/storage/schema"
)

// Errors of the request lifecycle.
var (
	ErrTooLarge = errors.New("member: request is too large")
	ErrTimeout  = errors.New("member: request timed out")
	ErrStopped  = raftnode.ErrStopped
)

var localIDKey = []byte{schema.Meta, 's', 'e', 'l', 'f'}

// Member is one running member.
type Member struct {
	lg      *zap.Logger
	cfg     config.Server
	db      *pebble.DB
	id      uint64
	store   *mvcc.Store
	cluster *membership.Cluster
	node    *raftnode.Node
	applier *apply.Applier

	reqSeq   atomic.Uint64
	waitMu   sync.Mutex
	waits    map[uint64]chan apply.Result
	stopping chan struct{}
	ready    chan struct{}
}

// New opens the data directory and prepares the member; Run starts it.
func New(lg *zap.Logger, cfg config.Server) (*Member, error) {
	db, err := storage.Open(lg, cfg.DataDir)
	if err != nil {
		return nil, err
	}
	m, err := newMember(lg, cfg, db)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return m, nil
}

func newMember(lg *zap.Logger, cfg config.Server, db *pebble.DB) (*Member, error) {
	m := &Member{lg: lg, cfg: cfg, db: db, waits: map[uint64]chan apply.Result{}, stopping: make(chan struct{}), ready: make(chan struct{})}
	rs, err := raftlog.Open(db)
	if err != nil {
		return nil, err
	}
	var peers []raft.Peer
	idRec, closer, err := db.Get(localIDKey)
	switch {
	case err == nil:
		if len(idRec) != 8 {
			closer.Close()
			return nil, fmt.Errorf("member: local member ID record in %s is corrupt", cfg.DataDir)
		}
		m.id = binary.BigEndian.Uint64(idRec)
		closer.Close()
	case errors.Is(err, pebble.ErrNotFound):
		if peers, err = m.bootstrap(); err != nil {
			return nil, err
		}
	default:
		return nil, err
	}
	if m.cluster, err = membership.Load(db); err != nil {
		return nil, err
	}
	if m.store, err = mvcc.NewStore(lg.Named("mvcc"), db); err != nil {
		return nil, err
	}
	m.applier, err = apply.New(lg.Named("apply"), apply.Config{
		DB: db, Store: m.store, RaftStorage: rs, Cluster: m.cluster,
		Deliver:        m.deliver,
		CompactLog:     func(i uint64) { m.node.CompactLog(i) },
		SnapshotCount:  cfg.SnapshotCount,
		CatchUpEntries: 5000,
	})
	if err != nil {
		return nil, err
	}
	tick := cfg.HeartbeatInterval
	m.node, err = raftnode.New(lg.Named("raft"), raftnode.Config{
		ID: m.id, Peers: peers, Storage: rs, Applied: m.applier.AppliedIndex(),
		TickInterval: tick, HeartbeatTick: 1, ElectionTick: int(cfg.ElectionTimeout / tick),
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// bootstrap records the identity of a brand-new member and returns the
// raft peers to bootstrap the log with.
func (m *Member) bootstrap() ([]raft.Peer, error) {
	cfg := m.cfg
	if cfg.InitialClusterState != "new" {
		return nil, fmt.Errorf("member: --initial-cluster-state=existing needs a data dir of a member that joined; %s is empty (joining a running cluster arrives with multi-member support)", cfg.DataDir)
	}
	members, err := membership.ParseInitialCluster(cfg.InitialCluster, cfg.InitialClusterToken)
	if err != nil {
		return nil, err
	}
	var self *membership.Member
	ids := make([]uint64, 0, len(members))
	for i := range members {
		ids = append(ids, members[i].ID)
		if members[i].Name == cfg.Name {
			self = &members[i]
		}
	}
	if self == nil {
		return nil, fmt.Errorf("member: --initial-cluster %q has no member named %q (--name)", cfg.InitialCluster, cfg.Name)
	}
	a, b := slices.Clone(self.PeerURLs), slices.Clone(cfg.InitialAdvertisePeerURLs)
	slices.Sort(a)
	slices.Sort(b)
	if !slices.Equal(a, b) {
		return nil, fmt.Errorf("member: --initial-cluster has %s=%v but --initial-advertise-peer-urls is %v; they must match", cfg.Name, self.PeerURLs, cfg.InitialAdvertisePeerURLs)
	}
	if len(members) > 1 {
		return nil, fmt.Errorf("member: --initial-cluster names %d members; this build runs single-member clusters only (multi-member support is in progress)", len(members))
	}
	m.id = self.ID
	batch := m.db.NewBatch()
	defer batch.Close()
	if err := membership.StageClusterID(batch, membership.ComputeClusterID(ids)); err != nil {
		return nil, err
	}
	if err := batch.Set(localIDKey, binary.BigEndian.AppendUint64(nil, m.id), nil); err != nil {
		return nil, err
	}
	if err := batch.Commit(pebble.Sync); err != nil {
		return nil, err
	}
	peers := make([]raft.Peer, 0, len(members))
	for _, mem := range members {
		ctx, err := json.Marshal(mem)
		if err != nil {
			return nil, err
		}
		peers = append(peers, raft.Peer{ID: mem.ID, Context: ctx})
	}
	m.lg.Info("bootstrapping a new cluster", zap.String("member-id", fmt.Sprintf("%x", m.id)),
		zap.String("cluster-id", fmt.Sprintf("%x", membership.ComputeClusterID(ids))))
	return peers, nil
}

// Run runs the member until ctx is done, then stops everything it owns.
func (m *Member) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	nodeCtx, stopNode := context.WithCancel(context.Background())
	defer stopNode()
	g.Go(func() error {
		<-gctx.Done()
		close(m.stopping)
		stopNode()
		return nil
	})
	g.Go(func() error { return m.node.Run(nodeCtx) })
	g.Go(func() error {
		// Keep applying until the node closes the apply channel, so that
		// nothing handed over is dropped mid-batch.
		return m.applier.Run(context.Background(), m.node.ApplyC())
	})
	g.Go(func() error { m.store.RunCompactor(gctx); return nil })
	g.Go(func() error { m.publish(gctx); return nil })
	err := g.Wait()
	if cerr := m.db.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("member: close db: %w", cerr)
	}
	return err
}

// publish waits until the member has a leader and has applied its log,
// records its name and client URLs through raft, and marks it ready.
func (m *Member) publish(ctx context.Context) {
	for {
		if ctx.Err() != nil {
			return
		}
		attempt, cancel := context.WithTimeout(ctx, m.requestTimeout())
		err := m.LinearizableBarrier(attempt)
		if err == nil {
			self, _ := m.cluster.Member(m.id)
			if self.Name != m.cfg.Name || !slices.Equal(self.ClientURLs, m.cfg.AdvertiseClientURLs) {
				_, err = m.Propose(attempt, &pb.InternalRaftRequest{ClusterMemberAttrSet: &membershippb.ClusterMemberAttrSetRequest{
					Member_ID:        m.id,
					MemberAttributes: &membershippb.Attributes{Name: m.cfg.Name, ClientUrls: m.cfg.AdvertiseClientURLs},
				}})
			}
		}
		cancel()
		if err == nil {
			close(m.ready)
			return
		}
		m.lg.Warn("failed to publish member attributes; retrying", zap.Error(err))
	}
}

// Ready is closed once the member serves requests.
func (m *Member) Ready() <-chan struct{} { return m.ready }

func (m *Member) requestTimeout() time.Duration {
	return 5*time.Second + 2*m.cfg.ElectionTimeout
}

// Propose replicates req and returns its applied result.
func (m *Member) Propose(ctx context.Context, req *pb.InternalRaftRequest) (apply.Result, error) {
	id := m.nextID()
	req.Header = &pb.RequestHeader{ID: id}
	data, err := proto.Marshal(req)
	if err != nil {
		return apply.Result{}, err
	}
	if uint(len(data)) > m.cfg.MaxRequestBytes {
		return apply.Result{}, ErrTooLarge
	}
	ch := make(chan apply.Result, 1)
	m.waitMu.Lock()
	m.waits[id] = ch
	m.waitMu.Unlock()
	defer func() {
		m.waitMu.Lock()
		delete(m.waits, id)
		m.waitMu.Unlock()
	}()
	tctx, cancel := context.WithTimeout(ctx, m.requestTimeout())
	defer cancel()
	if err := m.node.Propose(tctx, data); err != nil {
		return apply.Result{}, m.ctxErr(ctx, err)
	}
	select {
	case r := <-ch:
		return r, nil
	case <-tctx.Done():
		return apply.Result{}, m.ctxErr(ctx, tctx.Err())
	case <-m.stopping:
		return apply.Result{}, ErrStopped
	}
}

// ctxErr tells the caller's own cancellation apart from our timeout.
func (m *Member) ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return ErrTimeout
	}
	return err
}

func (m *Member) deliver(id uint64, r apply.Result) {
	m.waitMu.Lock()
	ch := m.waits[id]
	m.waitMu.Unlock()
	if ch != nil {
		ch <- r
	}
}

// nextID returns a request ID unique to this member: the low 16 bits of the
// member ID, then a counter seeded from the clock so IDs differ across
// restarts (only this member's waiters ever match them).
func (m *Member) nextID() uint64 {
	if m.reqSeq.Load() == 0 {
		m.reqSeq.CompareAndSwap(0, uint64(time.Now().UnixMilli())<<8)
	}
	return (m.id&0xffff)<<48 | (m.reqSeq.Add(1) & (1<<48 - 1))
}

// LinearizableBarrier returns once this member has applied everything
// committed before the call.
func (m *Member) LinearizableBarrier(ctx context.Context) error {
	tctx, cancel := context.WithTimeout(ctx, m.requestTimeout())
	defer cancel()
	idx, err := m.node.ReadIndex(tctx)
	if err != nil {
		return m.ctxErr(ctx, err)
	}
	return m.ctxErr(ctx, m.applier.WaitApplied(tctx, idx))
}

// Store returns the MVCC store for local reads.
func (m *Member) Store() *mvcc.Store { return m.store }

// Cluster returns the member list.
func (m *Member) Cluster() *membership.Cluster { return m.cluster }

// ID returns this member's ID.
func (m *Member) ID() uint64 { return m.id }

// Header returns a response header with the current revision.
func (m *Member) Header(rev int64) *pb.ResponseHeader {
	if rev == 0 {
		rev = m.store.Rev()
	}
	return &pb.ResponseHeader{ClusterId: m.cluster.ClusterID(), MemberId: m.id, Revision: rev, RaftTerm: m.node.Term()}
}

// Status is what Maintenance.Status reports.
type Status struct {
	Leader, Term, Committed, Applied uint64
	DBSize, DBSizeInUse              int64
}

// Status returns the member's raft and storage status.
func (m *Member) Status() Status {
	met := m.db.Metrics()
	size := int64(met.DiskSpaceUsage())
	return Status{
		Leader: m.node.Leader(), Term: m.node.Term(),
		Committed: m.node.CommittedIndex(), Applied: m.applier.AppliedIndex(),
		DBSize: size, DBSizeInUse: size,
	}
}

// Defragment compacts the whole key space online: readers and writers are
// not blocked (unlike etcd's bbolt defragmentation).
func (m *Member) Defragment(ctx context.Context) error {
	return m.db.Compact(ctx, []byte{0}, []byte{0xff}, true)
}
