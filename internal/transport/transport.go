// Package transport carries raft messages between cluster members over gRPC.
//
// # Wire protocol
//
// One gRPC service, "cairnpeer.Raft", written by hand (no protoc): every
// frame is a message type that already has generated code.
//
//   - Stream (client streaming): one long-lived stream per peer. Each frame
//     is a google.protobuf.BytesValue whose value is a batch of raft messages
//     in the wire encoding of `message Batch { repeated raftpb.Message msgs
//     = 1; }`. The stream carries messages in the order Send was given them.
//     The server answers google.protobuf.Empty when the client half-closes.
//   - Snapshot (client streaming): one call per MsgSnap. The first frame is
//     the raftpb.Message (the MsgSnap without Snapshot.Data), then zero or
//     more BytesValue chunks (1 MiB) of the state-machine data from
//     SnapshotStore.Open, then one last BytesValue of 4 bytes: the big-endian
//     CRC-32C (Castagnoli) of all the chunk bytes. The server stores the data
//     with SnapshotStore.Receive, then hands the MsgSnap to Raft.Process and
//     answers google.protobuf.Empty; any failure fails the call.
//
// Both calls carry gRPC metadata: the sender's member ID, the cluster ID and
// the member ID the sender means to reach (all hexadecimal). The server
// rejects a cluster ID mismatch with codes.FailedPrecondition ("etcdserver:
// cluster ID mismatch"), a call meant for another member with
// codes.FailedPrecondition, a call from a member that is not a peer with
// codes.NotFound (codes.PermissionDenied if Config.IsRemoved says it was
// removed). Before accepting it sends header
// metadata with its own member and cluster IDs, which the client checks in
// turn, so a URL that now belongs to another member is never written to.
//
// # Threading
//
// Send runs in the raft loop. It marshals every message before returning
// (the raft library forbids touching messages once the loop moves on) and
// queues it on the peer's bounded queue; it never blocks. Raft and
// SnapshotStore methods are always called from the transport's own
// goroutines, never from inside Send, so a Raft implementation may hand its
// work to the raft loop through a channel.
package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"
)

// Raft is the member's raft node as the transport sees it. Its methods are
// called from transport goroutines (never from inside Send) and must return
// promptly once the node has stopped.
type Raft interface {
	// Process hands a message received from a peer to raft.
	Process(ctx context.Context, m *raftpb.Message) error
	// ReportUnreachable tells raft that messages to id may have been lost.
	ReportUnreachable(id uint64)
	// ReportSnapshot tells raft how sending a snapshot to id ended. The
	// transport calls it exactly once for every MsgSnap given to Send.
	ReportSnapshot(id uint64, status raft.SnapshotStatus)
}

// SnapshotStore is the member's snapshot data.
type SnapshotStore interface {
	// Open returns the state-machine data of the snapshot that a MsgSnap
	// refers to, by its metadata index. The transport closes it.
	Open(index uint64) (io.ReadCloser, error)
	// Receive durably stores an incoming snapshot's data before its MsgSnap
	// is handed to raft. It must read r to io.EOF and must not keep the
	// data if any Read fails: r verifies the CRC-32C trailer and returns
	// ErrChecksumMismatch (or another error) from its last Read instead of
	// io.EOF when the data is not exactly what the sender sent. The
	// transport rejects the snapshot if Receive returns before r reported
	// io.EOF.
	Receive(index uint64, r io.Reader) error
}

// Errors a snapshot reader handed to SnapshotStore.Receive may return.
var (
	// ErrChecksumMismatch: the data received does not match the CRC-32C the
	// sender computed. The call fails with codes.DataLoss.
	ErrChecksumMismatch = errors.New("transport: snapshot checksum mismatch")
	// ErrSnapshotMalformed: the stream ended without a valid trailer.
	ErrSnapshotMalformed = errors.New("transport: snapshot stream ended without a checksum trailer")
	// ErrStopped is returned once the transport has been stopped.
	ErrStopped = errors.New("transport: stopped")
)

// Defaults for Config's zero values.
const (
	DefaultQueueSize      = 4096
	DefaultDialTimeout    = 5 * time.Second
	DefaultMaxMessageSize = 256 << 20
)

const (
	maxBatchBytes = 2 << 20 // soft limit of one Stream frame
	snapshotChunk = 1 << 20
	minBackoff    = 50 * time.Millisecond
	maxBackoff    = time.Second
	// Fixed flow-control windows on both ends of a peer connection: gRPC's
	// BDP estimator would ping about once per round trip of small raft
	// messages (heartbeats, read-index rounds) and never settle. 4 MiB
	// per stream keeps a MsgApp batch or snapshot chunk in flight without
	// waiting for a window update.
	peerStreamWindow = 4 << 20
	peerConnWindow   = 16 << 20
	keepaliveTime    = 10 * time.Second // the shortest client ping interval gRPC allows
	keepaliveWait    = 5 * time.Second
	frameOverheadB   = 64 // slack for the BytesValue and batch framing
)

// Config configures a Transport.
type Config struct {
	// LocalID is this member's ID; ClusterID the cluster's. Both non-zero.
	LocalID, ClusterID uint64
	Raft               Raft
	// Snapshots may be nil if snapshots are never sent or received; a
	// MsgSnap then fails (reported as SnapshotFailure).
	Snapshots SnapshotStore
	// DialTimeout bounds connecting to a peer and the stream handshake.
	// Default DefaultDialTimeout.
	DialTimeout time.Duration
	// QueueSize is how many messages may wait for one peer; Send drops
	// beyond it. Default DefaultQueueSize.
	QueueSize int
	// MaxMessageSize is the largest gRPC message sent or accepted (a batch
	// of raft messages; a single raft message larger than it is dropped).
	// Default DefaultMaxMessageSize.
	MaxMessageSize int
	// LocalAddr, if set, is the IP address peer connections are dialed
	// from (etcd's SetMemberLocalAddr feature gate); "" lets the OS choose.
	LocalAddr string
	// DialOptions are appended to the transport's own options for every
	// peer connection, so they override them. This is the TLS seam: the
	// default is plaintext (http:// peer URLs); pass
	// grpc.WithTransportCredentials(credentials.NewTLS(cfg)) for https://.
	// The host of each peer URL is used as the TLS server name.
	DialOptions []grpc.DialOption
	// ServerOptions are appended to ServerOptions()'s result. This is the
	// server side of the TLS seam: pass grpc.Creds(credentials.NewTLS(cfg)).
	ServerOptions []grpc.ServerOption
	// IsRemoved, if set, tells whether a member was removed from the
	// cluster (membership's removed-ID set). A call from a member that is
	// not a peer and IsRemoved fails with codes.PermissionDenied and etcd's
	// "the member has been permanently removed from the cluster", instead
	// of codes.NotFound.
	IsRemoved func(id uint64) bool
	// OnRemoved, if set, is called (possibly more than once) when a peer
	// answers that this member was removed from the cluster.
	OnRemoved func()
}

// Transport is the peer transport of one member. Create it with New;
// it is safe for concurrent use.
type Transport struct {
	lg        *zap.Logger
	cfg       Config
	localAddr *net.TCPAddr // from cfg.LocalAddr; nil: the OS chooses
	met       *metrics
	batch     int             // soft size limit of one Stream frame
	ctx       context.Context // cancelled by Stop
	cancel    context.CancelFunc
	wg        sync.WaitGroup

	mu      sync.RWMutex
	stopped bool
	peers   map[uint64]*peer

	unreachMu sync.Mutex
	unreach   map[uint64]struct{}
	unreachc  chan struct{}
}

// New returns a running transport with no peers.
func New(lg *zap.Logger, cfg Config) *Transport {
	if lg == nil {
		lg = zap.NewNop()
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.MaxMessageSize <= 0 {
		cfg.MaxMessageSize = DefaultMaxMessageSize
	}
	var local *net.TCPAddr
	if cfg.LocalAddr != "" {
		// Port 0: any free port of that address. An unparsable address
		// dials from the OS's choice rather than failing every dial.
		if ip := net.ParseIP(cfg.LocalAddr); ip != nil {
			local = &net.TCPAddr{IP: ip}
		} else {
			lg.Warn("ignoring invalid peer local address", zap.String("local-addr", cfg.LocalAddr))
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := &Transport{
		localAddr: local,
		lg:        lg.With(zap.String("local-member-id", idString(cfg.LocalID))),
		cfg:       cfg,
		met:       newMetrics(),
		batch:     min(maxBatchBytes, cfg.MaxMessageSize-frameOverheadB),
		ctx:       ctx,
		cancel:    cancel,
		peers:     make(map[uint64]*peer),
		unreach:   make(map[uint64]struct{}),
		unreachc:  make(chan struct{}, 1),
	}
	t.wg.Add(1)
	go t.reportLoop()
	return t
}

// ServerOptions returns the options the peer gRPC server must be created
// with: the message size limit, keepalive settings that accept this
// transport's pings, and Config.ServerOptions.
func (t *Transport) ServerOptions() []grpc.ServerOption {
	return append([]grpc.ServerOption{
		grpc.MaxRecvMsgSize(t.cfg.MaxMessageSize),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: keepaliveWait, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: keepaliveTime, Timeout: keepaliveWait}),
		grpc.StaticStreamWindowSize(peerStreamWindow),
		grpc.StaticConnWindowSize(peerConnWindow),
	}, t.cfg.ServerOptions...)
}

// Register registers the peer service on s, which the caller serves on the
// peer listener. Create s with ServerOptions().
func (t *Transport) Register(s *grpc.Server) {
	s.RegisterService(&serviceDesc, t)
}

// AddPeer starts sending to member id at urls (http://host:port; the
// scheme only documents whether TLS is expected, see Config.DialOptions).
func (t *Transport) AddPeer(id uint64, urls []string) error {
	if id == 0 || id == t.cfg.LocalID {
		return fmt.Errorf("transport: cannot add peer %s", idString(id))
	}
	addrs, err := parseURLs(urls)
	if err != nil {
		return err
	}
	p, err := t.newPeer(id, addrs)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.peers[id]; ok || t.stopped {
		p.close()
		if t.stopped {
			return ErrStopped
		}
		return fmt.Errorf("transport: peer %s already added", idString(id))
	}
	t.peers[id] = p
	t.wg.Add(1)
	go p.run()
	t.lg.Info("added peer", zap.String("remote-peer-id", p.label), zap.Strings("urls", urls))
	return nil
}

// UpdatePeer points the connection to member id at new URLs.
func (t *Transport) UpdatePeer(id uint64, urls []string) error {
	addrs, err := parseURLs(urls)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.peers[id]
	if !ok {
		return fmt.Errorf("transport: unknown peer %s", idString(id))
	}
	if !slices.Equal(p.addrs, addrs) {
		p.addrs = addrs
		p.res.UpdateState(resolver.State{Addresses: addrs})
		t.lg.Info("updated peer", zap.String("remote-peer-id", p.label), zap.Strings("urls", urls))
	}
	return nil
}

// RemovePeer stops sending to member id; from then on its calls are
// rejected. Snapshots in flight to it fail.
func (t *Transport) RemovePeer(id uint64) {
	t.mu.Lock()
	p := t.peers[id]
	delete(t.peers, id)
	t.mu.Unlock()
	if p != nil {
		p.close()
		t.lg.Info("removed peer", zap.String("remote-peer-id", p.label))
	}
}

// SetPeers makes the peer set exactly peers (member ID to peer URLs),
// adding, updating and removing as needed. The local ID is ignored.
func (t *Transport) SetPeers(peers map[uint64][]string) error {
	t.mu.RLock()
	current := slices.Collect(maps.Keys(t.peers))
	t.mu.RUnlock()
	var errs []error
	for _, id := range current {
		if _, ok := peers[id]; !ok {
			t.RemovePeer(id)
		}
	}
	for id, urls := range peers {
		if id == t.cfg.LocalID {
			continue
		}
		t.mu.RLock()
		_, ok := t.peers[id]
		t.mu.RUnlock()
		if ok {
			errs = append(errs, t.UpdatePeer(id, urls))
		} else {
			errs = append(errs, t.AddPeer(id, urls))
		}
	}
	return errors.Join(errs...)
}

// ActivePeers returns how many peers have an established message stream.
func (t *Transport) ActivePeers() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	n := 0
	for _, p := range t.peers {
		if p.active.Load() {
			n++
		}
	}
	return n
}

// IsActive tells whether a message stream to member id is established.
func (t *Transport) IsActive(id uint64) bool {
	p := t.peer(id)
	return p != nil && p.active.Load()
}

// ActiveSince returns when the current message stream to member id was
// established, or the zero time if there is none (as etcd's rafthttp, for
// reconfiguration checks that want a peer connected for a while).
func (t *Transport) ActiveSince(id uint64) time.Time {
	p := t.peer(id)
	if p == nil {
		return time.Time{}
	}
	if ns := p.since.Load(); ns != 0 && p.active.Load() {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// Send queues messages for their peers and returns at once. A message for
// an unknown peer is dropped; when a peer's queue is full the message is
// dropped, counted in etcd_network_peer_sent_failures_total and raft is told
// the peer is unreachable (asynchronously). A MsgSnap starts a snapshot
// transfer of its own.
func (t *Transport) Send(msgs []*raftpb.Message) {
	for _, m := range msgs {
		to := m.GetTo()
		if to == t.cfg.LocalID {
			continue
		}
		t.mu.RLock()
		p, stopped := t.peers[to], t.stopped
		t.mu.RUnlock()
		if m.GetType() == raftpb.MessageType_MsgSnap {
			t.startSnapshot(p, m)
			continue
		}
		if stopped {
			continue
		}
		if p == nil {
			t.lg.Debug("dropped message to unknown peer", zap.String("remote-peer-id", idString(to)),
				zap.Stringer("type", m.GetType()))
			continue
		}
		frame, err := appendFrame(nil, m)
		if err != nil {
			t.lg.Error("cannot marshal raft message", zap.Error(err))
			continue
		}
		if len(frame) > t.cfg.MaxMessageSize-frameOverheadB {
			t.lg.Error("dropped raft message larger than the maximum message size",
				zap.String("remote-peer-id", p.label), zap.Stringer("type", m.GetType()),
				zap.Int("size", len(frame)), zap.Int("max", t.cfg.MaxMessageSize))
			t.met.sentFailures.WithLabelValues(p.label).Inc()
			continue
		}
		select {
		case p.queue <- frame:
		default:
			t.met.sentFailures.WithLabelValues(p.label).Inc()
			if p.dropping.CompareAndSwap(false, true) {
				t.lg.Warn("dropped raft messages: peer queue is full",
					zap.String("remote-peer-id", p.label), zap.Int("queue-size", t.cfg.QueueSize))
			}
			t.reportUnreachable(to)
		}
	}
}

// Stop closes every peer connection, ends the calls this transport serves,
// fails snapshots in flight (reporting SnapshotFailure) and waits for all
// its goroutines, including calls into Raft and SnapshotStore in progress.
// It does not stop the gRPC server passed to Register, but that server's
// GracefulStop only returns once Stop has ended the long-lived streams
// (or the peers closed them). Stop is idempotent.
func (t *Transport) Stop() {
	t.mu.Lock()
	peers := t.peers
	t.peers = make(map[uint64]*peer)
	t.stopped = true
	t.mu.Unlock()
	t.cancel()
	for _, p := range peers {
		p.close()
	}
	t.wg.Wait()
}

// goTracked runs f on a goroutine that Stop waits for, unless stopped.
func (t *Transport) goTracked(f func()) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.stopped {
		return false
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		f()
	}()
	return true
}

// reportUnreachable queues a ReportUnreachable for the report loop, so
// that Send (running in the raft loop) never calls into raft.
func (t *Transport) reportUnreachable(id uint64) {
	t.unreachMu.Lock()
	t.unreach[id] = struct{}{}
	t.unreachMu.Unlock()
	select {
	case t.unreachc <- struct{}{}:
	default:
	}
}

func (t *Transport) reportLoop() {
	defer t.wg.Done()
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-t.unreachc:
		}
		t.unreachMu.Lock()
		ids := t.unreach
		t.unreach = make(map[uint64]struct{})
		t.unreachMu.Unlock()
		for id := range ids {
			t.cfg.Raft.ReportUnreachable(id)
		}
	}
}

func (t *Transport) peer(id uint64) *peer {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.peers[id]
}

// parseURLs turns peer URLs into resolver addresses.
func parseURLs(urls []string) ([]resolver.Address, error) {
	if len(urls) == 0 {
		return nil, errors.New("transport: a peer needs at least one URL")
	}
	addrs := make([]resolver.Address, 0, len(urls))
	for _, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("transport: peer URL %q: %w", raw, err)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return nil, fmt.Errorf("transport: peer URL %q: scheme must be http or https", raw)
		}
		host, port, err := net.SplitHostPort(u.Host)
		if err != nil || host == "" || port == "" {
			return nil, fmt.Errorf("transport: peer URL %q: want scheme://host:port", raw)
		}
		addrs = append(addrs, resolver.Address{Addr: u.Host, ServerName: host})
	}
	return addrs, nil
}

// idString formats a member ID as etcd does (types.ID): hexadecimal.
func idString(id uint64) string { return strconv.FormatUint(id, 16) }

// Compile-time check: Transport satisfies raftnode's Transport interface
// shape.
var _ interface{ Send([]*raftpb.Message) } = (*Transport)(nil)
