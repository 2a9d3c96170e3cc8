package member

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/cairnkv/cairn/internal/failpoint"
	"github.com/cairnkv/cairn/internal/membership"
	"github.com/cairnkv/cairn/internal/raftlog"
	"github.com/cairnkv/cairn/internal/snapshot"
	"github.com/cairnkv/cairn/internal/storage/schema"
)

// raftGlue gives the transport what it needs of the raft node.
type raftGlue Member

func (g *raftGlue) Process(ctx context.Context, msg *raftpb.Message) error {
	return g.node.Step(ctx, msg)
}
func (g *raftGlue) ReportUnreachable(id uint64) { g.node.ReportUnreachable(id) }
func (g *raftGlue) ReportSnapshot(id uint64, status raft.SnapshotStatus) {
	g.node.ReportSnapshot(id, status)
}

// snapGlue gives the transport the snapshot data to send and a place to
// keep received snapshots.
type snapGlue Member

func (g *snapGlue) Open(index uint64) (io.ReadCloser, error) {
	snap, release := g.snaps.get(index)
	if snap == nil {
		return nil, fmt.Errorf("member: no snapshot at index %d to send", index)
	}
	pr, pw := io.Pipe()
	go func() {
		defer release()
		pw.CloseWithError(snapshot.Write(pw, snap))
	}()
	return pr, nil
}

func (g *snapGlue) Receive(index uint64, r io.Reader) error {
	return snapshot.Save(g.cfg.DataDir, index, r)
}

// snapshotSource keeps the Pebble snapshots raft has promised to followers
// until the transport has streamed them.
type snapshotSource struct {
	mu    sync.Mutex
	snaps map[uint64]*pinned
}

type pinned struct {
	snap *pebble.Snapshot
	refs int
}

// take returns raft's Storage.Snapshot: the applied state at this moment,
// pinned by a Pebble snapshot. Its index and ConfState are read from the
// snapshot itself, so they match the data exactly.
func (s *snapshotSource) take(db *pebble.DB) func() (*raftpb.Snapshot, error) {
	return func() (*raftpb.Snapshot, error) {
		ps := db.NewSnapshot()
		v, closer, err := ps.Get(schema.AppliedKey)
		if err != nil {
			ps.Close()
			return nil, raft.ErrSnapshotTemporarilyUnavailable
		}
		index, term := binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:])
		closer.Close()
		cs := &raftpb.ConfState{}
		if v, closer, err := ps.Get(schema.ConfStateKey); err == nil {
			err = proto.Unmarshal(v, cs)
			closer.Close()
			if err != nil {
				ps.Close()
				return nil, err
			}
		}
		s.mu.Lock()
		if s.snaps == nil {
			s.snaps = map[uint64]*pinned{}
		}
		if _, ok := s.snaps[index]; ok {
			ps.Close() // the one pinned for this index serves
		} else {
			// Keep only recent snapshots pinned: older ones are released
			// once no transfer uses them.
			for i, p := range s.snaps {
				if i < index && p.refs == 0 {
					p.snap.Close()
					delete(s.snaps, i)
				}
			}
			s.snaps[index] = &pinned{snap: ps}
		}
		s.mu.Unlock()
		return &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{
			Index: proto.Uint64(index), Term: proto.Uint64(term), ConfState: cs,
		}}, nil
	}
}

func (s *snapshotSource) get(index uint64) (*pebble.Snapshot, func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.snaps[index]
	if !ok {
		return nil, nil
	}
	p.refs++
	return p.snap, func() {
		s.mu.Lock()
		p.refs--
		s.mu.Unlock()
	}
}

func (s *snapshotSource) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, p := range s.snaps {
		p.snap.Close()
		delete(s.snaps, i)
	}
}

// installSnapshot replaces the state with the received snapshot file and
// moves the raft storage to it. A synced marker makes it all-or-nothing
// across crashes (see resumeInstall).
func (m *Member) installSnapshot(rs *raftlog.Storage, snap *raftpb.Snapshot) error {
	meta := snap.GetMetadata()
	data, err := proto.Marshal(meta)
	if err != nil {
		return err
	}
	m.lg.Info("installing snapshot", zap.Uint64("index", meta.GetIndex()), zap.Uint64("term", meta.GetTerm()))
	if err := m.db.Set(snapshot.InstallMarkerKey, data, pebble.Sync); err != nil {
		return err
	}
	failpoint.Hit(failpoint.SnapshotAfterMarker)
	// Readers wait while the state is replaced: the data changes under the
	// store's published revision otherwise, and a serializable read could
	// return the new state's keys (or none of them) at the old revision.
	if err := m.store.Replace(func() error { return m.finishInstall(rs, meta) }); err != nil {
		return err
	}
	if err := m.leases.lessor.Reload(); err != nil {
		return err
	}
	return m.cluster.Reload(m.db)
}

func (m *Member) finishInstall(rs *raftlog.Storage, meta *raftpb.SnapshotMetadata) error {
	if err := snapshot.Install(m.db.DB, m.cfg.DataDir, meta.GetIndex()); err != nil {
		return err
	}
	failpoint.Hit(failpoint.SnapshotAfterState)
	if err := rs.ApplySnapshot(meta); err != nil {
		return err
	}
	failpoint.Hit(failpoint.SnapshotAfterLog)
	if err := m.db.Delete(snapshot.InstallMarkerKey, pebble.Sync); err != nil {
		return err
	}
	snapshot.Remove(m.cfg.DataDir, meta.GetIndex()+1)
	m.lg.Info("installed snapshot", zap.Uint64("index", meta.GetIndex()))
	return nil
}

// resumeInstall finishes a snapshot installation a crash interrupted.
func (m *Member) resumeInstall(rs *raftlog.Storage) error {
	v, closer, err := m.db.Get(snapshot.InstallMarkerKey)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	meta := &raftpb.SnapshotMetadata{}
	err = proto.Unmarshal(v, meta)
	closer.Close()
	if err != nil {
		return fmt.Errorf("member: snapshot install marker is corrupt: %w", err)
	}
	m.lg.Warn("resuming interrupted snapshot installation", zap.Uint64("index", meta.GetIndex()))
	return m.finishInstall(rs, meta)
}

// syncPeers points the transport at the current members.
func (m *Member) syncPeers() {
	applied := m.cluster.Members()
	members := applied
	if len(members) == 0 {
		members = m.initialPeers
	}
	m.peersMu.Lock()
	defer m.peersMu.Unlock()
	// Removal is judged by the removed-ID record that applying
	// ConfChangeRemoveNode writes, not by absence from the list: while the
	// bootstrap conf changes (or a joiner's replay of the log) apply one by
	// one, the list briefly lacks this member before it is added.
	if _, ok := m.cluster.Member(m.id); !ok && membership.IsRemoved(m.db, m.id) {
		m.removeOnce.Do(func() { close(m.removed) })
	}
	if m.peers == nil {
		m.peers = map[uint64][]string{}
	}
	seen := map[uint64]bool{}
	for _, mem := range members {
		if mem.ID == m.id {
			continue
		}
		seen[mem.ID] = true
		old, ok := m.peers[mem.ID]
		var err error
		switch {
		case !ok:
			err = m.transport.AddPeer(mem.ID, mem.PeerURLs)
		case !sameURLs(old, mem.PeerURLs):
			err = m.transport.UpdatePeer(mem.ID, mem.PeerURLs)
		}
		if err != nil {
			m.lg.Warn("cannot reach peer", zap.String("peer-id", fmt.Sprintf("%x", mem.ID)), zap.Strings("peer-urls", mem.PeerURLs), zap.Error(err))
			continue
		}
		m.peers[mem.ID] = mem.PeerURLs
	}
	for id := range m.peers {
		if !seen[id] {
			m.transport.RemovePeer(id)
			delete(m.peers, id)
		}
	}
}

// RegisterPeer registers the peer gRPC service.
func (m *Member) RegisterPeer(gs *grpc.Server) { m.transport.Register(gs) }

// RegisterMetrics registers the peer transport's metrics.
func (m *Member) RegisterMetrics(reg prometheus.Registerer) {
	m.registerLeaseMetrics(reg)
	if t, ok := m.transport.(interface {
		RegisterMetrics(prometheus.Registerer) error
	}); ok {
		if err := t.RegisterMetrics(reg); err != nil {
			m.lg.Warn("cannot register transport metrics", zap.Error(err))
		}
	}
}

// PeerServerOptions are the options the peer gRPC server needs.
func (m *Member) PeerServerOptions() []grpc.ServerOption { return m.transport.ServerOptions() }

// clusterInfo is what the peer endpoint /members returns.
type clusterInfo struct {
	ClusterID uint64              `json:"clusterID,string"`
	Members   []membership.Member `json:"members"`
}

// PeerHTTP serves the peer port's HTTP endpoints: /members (used by a
// member joining with --initial-cluster-state=existing) and /version.
func (m *Member) PeerHTTP() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/members/promote/", m.servePromote)
	m.registerLeaseHTTP(mux)
	mux.HandleFunc("/members", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(clusterInfo{ClusterID: m.cluster.ClusterID(), Members: m.cluster.Members()})
	})
	return mux
}

// fetchCluster asks the other members of --initial-cluster for the running
// cluster's ID and members.
func fetchCluster(lg *zap.Logger, members []membership.Member, self string) (*clusterInfo, error) {
	client := &http.Client{Timeout: 3 * time.Second}
	var errs []string
	for attempt := 0; attempt < 5; attempt++ {
		for _, mem := range members {
			if mem.Name == self {
				continue
			}
			for _, u := range mem.PeerURLs {
				resp, err := client.Get(strings.TrimRight(u, "/") + "/members")
				if err != nil {
					errs = append(errs, err.Error())
					continue
				}
				var ci clusterInfo
				err = json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&ci)
				resp.Body.Close()
				if err != nil || ci.ClusterID == 0 {
					errs = append(errs, fmt.Sprintf("%s: bad /members answer: %v", u, err))
					continue
				}
				return &ci, nil
			}
		}
		lg.Warn("cannot reach the running cluster yet; retrying", zap.Strings("errors", errs))
		time.Sleep(time.Second)
	}
	return nil, fmt.Errorf("member: --initial-cluster-state=existing but no member of --initial-cluster answered: %s", strings.Join(errs, "; "))
}
