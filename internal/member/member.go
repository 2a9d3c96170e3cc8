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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/membershippb"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/cairnkv/cairn/internal/apply"
	"github.com/cairnkv/cairn/internal/clock"
	"github.com/cairnkv/cairn/internal/config"
	"github.com/cairnkv/cairn/internal/membership"
	"github.com/cairnkv/cairn/internal/mvcc"
	"github.com/cairnkv/cairn/internal/raftlog"
	"github.com/cairnkv/cairn/internal/raftnode"
	"github.com/cairnkv/cairn/internal/storage"
	"github.com/cairnkv/cairn/internal/storage/schema"
	"github.com/cairnkv/cairn/internal/transport"
	"github.com/cairnkv/cairn/internal/watch"
)

// Errors of the request lifecycle.
var (
	ErrTooLarge = errors.New("member: request is too large")
	ErrTimeout  = errors.New("member: request timed out")
	ErrStopped  = raftnode.ErrStopped
	// ErrRemoved stops a member that was removed from its cluster.
	ErrRemoved = errors.New("member: the member has been permanently removed from the cluster")
)

// ErrNoLeaderTimeout: the request timed out waiting for a leader before it
// could be proposed (etcd answers gRPC DeadlineExceeded "context deadline
// exceeded" then, not "request timed out").
var ErrNoLeaderTimeout = fmt.Errorf("member: no leader before the request timed out: %w", context.DeadlineExceeded)

var localIDKey = []byte{schema.Meta, 's', 'e', 'l', 'f'}

// Member is one running member.
type Member struct {
	lg      *zap.Logger
	cfg     config.Server
	db      *storage.DB
	id      uint64
	store   *mvcc.Store
	cluster *membership.Cluster
	node    *raftnode.Node
	applier *apply.Applier
	watch   *watch.Hub

	reqSeq   atomic.Uint64
	waitMu   sync.Mutex
	waits    map[uint64]chan apply.Result
	stopping chan struct{}
	ready    chan struct{}

	transport    PeerTransport
	initialPeers []membership.Member // peers to dial before the log says who they are
	snaps        snapshotSource
	confPending  atomic.Bool
	peersMu      sync.Mutex
	peers        map[uint64][]string // peer ID -> URLs the transport has
	removed      chan struct{}       // closed when this member is removed
	removeOnce   sync.Once
	leases       *leases
	leaseOpts    LeaseOptions
}

// PeerTransport carries raft messages and snapshots between members
// (*transport.Transport, or an in-memory network in tests).
type PeerTransport interface {
	Send(msgs []*raftpb.Message)
	AddPeer(id uint64, urls []string) error
	UpdatePeer(id uint64, urls []string) error
	RemovePeer(id uint64)
	IsActive(id uint64) bool
	Register(gs *grpc.Server)
	ServerOptions() []grpc.ServerOption
	Stop()
}

// Options are test seams; the zero value is production.
type Options struct {
	// NewTransport replaces the gRPC peer transport.
	NewTransport func(localID, clusterID uint64, r transport.Raft, s transport.SnapshotStore) PeerTransport
	// Ticks replaces the raft ticker (one tick per heartbeat interval).
	Ticks <-chan time.Time
	// Clock replaces the lessor's clock.
	Clock clock.Clock
	// Lease overrides lease defaults.
	Lease LeaseOptions
}

// New opens the data directory and prepares the member; Run starts it.
func New(lg *zap.Logger, cfg config.Server) (*Member, error) {
	return NewWithOptions(lg, cfg, Options{})
}

// NewWithOptions is New with test seams.
func NewWithOptions(lg *zap.Logger, cfg config.Server, opts Options) (*Member, error) {
	db, err := storage.Open(lg, cfg.DataDir)
	if err != nil {
		return nil, err
	}
	m, err := newMember(lg, cfg, db, opts)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return m, nil
}

func newMember(lg *zap.Logger, cfg config.Server, sdb *storage.DB, opts Options) (*Member, error) {
	db := sdb.DB
	m := &Member{lg: lg, cfg: cfg, db: sdb, waits: map[uint64]chan apply.Result{}, stopping: make(chan struct{}), ready: make(chan struct{}), removed: make(chan struct{})}
	rs, err := raftlog.Open(db)
	if err != nil {
		return nil, err
	}
	if err := m.resumeInstall(rs); err != nil {
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
	if membership.IsRemoved(db, m.id) {
		return nil, fmt.Errorf("%w: member %x (data dir %s); start a new member with a fresh data dir instead", ErrRemoved, m.id, cfg.DataDir)
	}
	if m.store, err = mvcc.NewStore(lg.Named("mvcc"), sdb); err != nil {
		return nil, err
	}
	m.watch = watch.New(lg.Named("watch"), m.store, m.store.Rev(), watch.Config{
		ProgressInterval: cfg.WatchProgressNotifyInterval,
		FragmentBytes:    int(cfg.MaxRequestBytes),
		IsCompacted:      func(err error) bool { return errors.Is(err, mvcc.ErrCompacted) },
	})
	m.leaseOpts = opts.Lease
	if m.leases, err = newLeases(lg, m, opts.Clock, opts.Lease); err != nil {
		return nil, err
	}
	m.applier, err = apply.New(lg.Named("apply"), apply.Config{
		DB: db, Store: m.store, RaftStorage: rs, Cluster: m.cluster, Watch: m.watch, Leases: m.leases.lessor,
		Deliver:         m.deliver,
		CompactLog:      func(i uint64) { m.node.CompactLog(i) },
		SnapshotCount:   cfg.SnapshotCount,
		CatchUpEntries:  cfg.SnapshotCatchUpEntries,
		InstallSnapshot: func(snap *raftpb.Snapshot) error { return m.installSnapshot(rs, snap) },
	})
	if err != nil {
		return nil, err
	}
	rs.SetSnapshotFunc(m.snaps.take(db))
	if opts.NewTransport != nil {
		m.transport = opts.NewTransport(m.id, m.cluster.ClusterID(), (*raftGlue)(m), (*snapGlue)(m))
	} else {
		m.transport = transport.New(lg.Named("transport"), transport.Config{
			LocalID: m.id, ClusterID: m.cluster.ClusterID(), Raft: (*raftGlue)(m), Snapshots: (*snapGlue)(m),
			LocalAddr: cfg.PeerLocalAddr(),
			IsRemoved: func(id uint64) bool { return membership.IsRemoved(db, id) },
			OnRemoved: func() { m.removeOnce.Do(func() { close(m.removed) }) },
		})
	}
	tick := cfg.HeartbeatInterval
	m.node, err = raftnode.New(lg.Named("raft"), raftnode.Config{
		ID: m.id, Peers: peers, Storage: rs, Applied: m.applier.AppliedIndex(),
		TickInterval: tick, HeartbeatTick: 1, ElectionTick: int(cfg.ElectionTimeout / tick),
		Transport: m.transport, Ticks: opts.Ticks, ConfChecker: newConfChecker(m.cluster),
		ReadTimeout: m.requestTimeout(),
	})
	if err != nil {
		return nil, err
	}
	m.cluster.OnChange(m.syncPeers)
	m.syncPeers()
	return m, nil
}

// bootstrap records the identity of a brand-new member and returns the
// raft peers to bootstrap the log with (none when joining a running
// cluster: the leader then sends the log or a snapshot).
func (m *Member) bootstrap() ([]raft.Peer, error) {
	cfg := m.cfg
	members, self, err := initialMembers(cfg)
	if err != nil {
		return nil, err
	}
	var clusterID uint64
	var peers []raft.Peer
	if cfg.InitialClusterState == "existing" {
		remote, err := fetchCluster(m.lg, members, cfg.Name)
		if err != nil {
			return nil, err
		}
		clusterID = remote.ClusterID
		found := false
		for _, rm := range remote.Members {
			if sameURLs(rm.PeerURLs, cfg.InitialAdvertisePeerURLs) {
				m.id, found = rm.ID, true
			}
		}
		if !found {
			return nil, fmt.Errorf("member: the running cluster %x has no member with peer URLs %v; add it first (etcdctl member add %s --peer-urls=%s)",
				clusterID, cfg.InitialAdvertisePeerURLs, cfg.Name, strings.Join(cfg.InitialAdvertisePeerURLs, ","))
		}
		m.initialPeers = remote.Members
	} else {
		ids := make([]uint64, 0, len(members))
		for _, mem := range members {
			ids = append(ids, mem.ID)
			mem := mem
			ctx, err := json.Marshal(apply.ConfContext{Member: &mem})
			if err != nil {
				return nil, err
			}
			peers = append(peers, raft.Peer{ID: mem.ID, Context: ctx})
		}
		clusterID = membership.ComputeClusterID(ids)
		m.id = self.ID
		m.initialPeers = members
	}
	batch := m.db.NewBatch()
	defer batch.Close()
	if err := membership.StageClusterID(batch, clusterID); err != nil {
		return nil, err
	}
	if err := batch.Set(localIDKey, binary.BigEndian.AppendUint64(nil, m.id), nil); err != nil {
		return nil, err
	}
	if err := batch.Commit(pebble.Sync); err != nil {
		return nil, err
	}
	m.lg.Info("bootstrapping member", zap.String("member-id", fmt.Sprintf("%x", m.id)),
		zap.String("cluster-id", fmt.Sprintf("%x", clusterID)), zap.String("initial-cluster-state", cfg.InitialClusterState))
	return peers, nil
}

// initialMembers parses --initial-cluster and finds this member (--name)
// in it, with the peer URLs it advertises.
func initialMembers(cfg config.Server) ([]membership.Member, *membership.Member, error) {
	members, err := membership.ParseInitialCluster(cfg.InitialCluster, cfg.InitialClusterToken)
	if err != nil {
		return nil, nil, err
	}
	var self *membership.Member
	for i := range members {
		if members[i].Name == cfg.Name {
			self = &members[i]
		}
	}
	if self == nil {
		return nil, nil, fmt.Errorf("member: --initial-cluster %q has no member named %q (--name)", cfg.InitialCluster, cfg.Name)
	}
	if !sameURLs(self.PeerURLs, cfg.InitialAdvertisePeerURLs) {
		return nil, nil, fmt.Errorf("member: --initial-cluster has %s=%v but --initial-advertise-peer-urls is %v; they must match", cfg.Name, self.PeerURLs, cfg.InitialAdvertisePeerURLs)
	}
	return members, self, nil
}

func sameURLs(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// Run runs the member until ctx is done, then stops everything it owns.
//
// A member removed from the cluster stops raft and everything else at
// once and closes Removed(), but keeps its database open until ctx is
// done, and only then returns ErrRemoved: the caller may still be serving
// requests that read it (closing it under them panics in Pebble), so the
// caller must watch Removed(), stop serving, then cancel ctx.
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
	g.Go(func() error {
		defer m.transport.Stop()
		return m.node.Run(nodeCtx)
	})
	g.Go(func() error {
		// Keep applying until the node closes the apply channel, so that
		// nothing handed over is dropped mid-batch.
		return m.applier.Run(context.Background(), m.node.ApplyC())
	})
	g.Go(func() error { m.store.RunCompactor(gctx); return nil })
	g.Go(func() error { m.watch.Run(gctx); return nil })
	g.Go(func() error { m.publish(gctx); return nil })
	g.Go(func() error { m.runLeases(gctx); return nil })
	g.Go(func() error {
		select {
		case <-m.removed:
			m.lg.Warn("the member has been permanently removed from the cluster; stopping")
			return ErrRemoved
		case <-gctx.Done():
			return nil
		}
	})
	err := g.Wait()
	if errors.Is(err, ErrRemoved) {
		<-ctx.Done() // see the doc comment: the caller closes the DB
	}
	// The transport has stopped: no transfer holds a pinned snapshot.
	m.snaps.close()
	m.store.Close()
	if cerr := m.db.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("member: close db: %w", cerr)
	}
	return err
}

// Removed is closed when this member learns that it was removed from the
// cluster; Run then waits for its ctx to be done (see Run).
func (m *Member) Removed() <-chan struct{} { return m.removed }

// publish waits until the member has a leader and has applied its log,
// records its name and client URLs through raft, and marks it ready.
func (m *Member) publish(ctx context.Context) {
	retry := time.NewTicker(m.cfg.HeartbeatInterval)
	defer retry.Stop()
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return
			case <-retry.C:
			}
		}
		if ctx.Err() != nil {
			return
		}
		if m.node.Leader() == 0 {
			continue // an election is in progress
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
		if ctx.Err() == nil {
			m.lg.Warn("failed to publish member attributes; retrying", zap.Error(err))
		}
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
	ch, done := m.register(id)
	defer done()
	tctx, cancel := context.WithTimeout(ctx, m.requestTimeout())
	defer cancel()
	for {
		errc, err := m.node.Propose(tctx, data)
		if err != nil {
			return apply.Result{}, m.ctxErr(ctx, err)
		}
		select {
		case r := <-ch:
			return r, nil
		case err := <-errc:
			if !errors.Is(err, raftnode.ErrNoLeader) {
				return apply.Result{}, err
			}
		case <-tctx.Done():
			return apply.Result{}, m.ctxErr(ctx, tctx.Err())
		case <-m.stopping:
			return apply.Result{}, ErrStopped
		}
		// Raft dropped it for want of a leader. Compat: etcd's raft node
		// holds a proposal while there is no leader and proposes it once
		// one is known, so a short election is invisible to clients; if
		// the request times out first, the client gets gRPC's
		// DeadlineExceeded (ErrNoLeaderTimeout). A dropped proposal is in
		// no log, so proposing it again cannot apply it twice.
		if err := m.node.WaitLeader(tctx); err != nil {
			if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
				return apply.Result{}, ErrNoLeaderTimeout
			}
			return apply.Result{}, m.ctxErr(ctx, err)
		}
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

// register makes the applier's result for request id arrive on the
// returned channel until done is called.
func (m *Member) register(id uint64) (<-chan apply.Result, func()) {
	ch := make(chan apply.Result, 1)
	m.waitMu.Lock()
	m.waits[id] = ch
	m.waitMu.Unlock()
	return ch, func() {
		m.waitMu.Lock()
		delete(m.waits, id)
		m.waitMu.Unlock()
	}
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
	if m.node.SoleVoterLeader() {
		// No read-index round is needed, but committed entries may still
		// be on their way through the applier (a learner may already have
		// acknowledged them): wait for them.
		return m.ctxErr(ctx, m.applier.WaitApplied(ctx, m.node.CommittedIndex()))
	}
	// The common case, one round and the applier already there, makes no
	// timer of its own (a context with a deadline per read was ~2 % of a
	// read's CPU at 100 clients; the round's shared timer bounds the
	// wait); a retried round or a wait for the applier runs under the
	// request timeout.
	idx, err := m.node.TryReadIndex(ctx)
	retry := errors.Is(err, raftnode.ErrLeaderChanged) || errors.Is(err, raftnode.ErrNoLeader)
	if err != nil && !retry {
		return m.ctxErr(ctx, err)
	}
	if err == nil && m.applier.AppliedIndex() >= idx {
		return nil
	}
	tctx, cancel := context.WithTimeout(ctx, m.requestTimeout())
	defer cancel()
	if retry {
		if idx, err = m.node.ReadIndex(tctx); err != nil {
			return m.ctxErr(ctx, err)
		}
	}
	return m.ctxErr(ctx, m.applier.WaitApplied(tctx, idx))
}

// Leader returns the current leader's ID, or 0 while there is none.
func (m *Member) Leader() uint64 { return m.node.Leader() }

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

// Watch is the member's watcher registry.
func (m *Member) Watch() *watch.Hub { return m.watch }

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
	return m.db.CompactUnpaced(ctx, []byte{0}, []byte{0xff})
}
