package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/cairnkv/cairn/internal/member"
	"github.com/cairnkv/cairn/internal/transport"
)

// linkKey names one direction of a link between two members.
type linkKey struct{ from, to uint64 }

// linkFaults are the faults injected on one directed link.
type linkFaults struct {
	// drop is the probability that a message is lost; 1 cuts the link.
	drop float64
	// dup is the probability that a message is delivered twice. MsgProp
	// is never duplicated: raft does not deduplicate proposals (etcd's
	// TCP streams never duplicate either), so a duplicated MsgProp is
	// applied twice by design, which is not what the tests look at.
	dup float64
	// hold keeps messages back until releaseHeld (a long delay).
	hold bool
	// reorder shuffles held messages when they are released.
	reorder bool
}

// netStats counts what the network did.
type netStats struct {
	sent, delivered, dropped, duplicated atomic.Int64
	snapOK, snapFailed                   atomic.Int64
}

// fakeNet is an in-memory network between the members of one test
// cluster. Each member's transport (fakeTransport, a member.PeerTransport)
// queues outgoing messages on per-link queues; one goroutine per directed
// link hands them to the destination's transport.Raft.Process in order,
// so Send never blocks. Faults are set per directed link and checked both
// when a message is queued and when it is delivered, so a partition takes
// effect at once, also for messages already in flight.
//
// MsgSnap travels as the real transport (internal/transport) carries it:
// the sender's SnapshotStore.Open(index), the receiver's
// SnapshotStore.Receive(index, data), the receiver's Raft.Process(MsgSnap),
// then the sender's Raft.ReportSnapshot(to, SnapshotFinish or
// SnapshotFailure), exactly once for every MsgSnap given to Send.
type fakeNet struct {
	mu     sync.Mutex
	rng    *rand.Rand
	eps    map[uint64]*fakeTransport // running transports by member ID
	faults map[linkKey]linkFaults
	links  map[linkKey]*link
	closed bool
	wg     sync.WaitGroup // link goroutines

	pending atomic.Int64 // messages queued (not held) and not yet delivered or dropped
	stats   netStats

	// observe, if set, sees every message a member sends (before faults).
	observe atomic.Pointer[func(from uint64, m *raftpb.Message)]
}

// setObserver makes fn see every message sent from now on (nil: none).
func (n *fakeNet) setObserver(fn func(from uint64, m *raftpb.Message)) {
	if fn == nil {
		n.observe.Store(nil)
		return
	}
	n.observe.Store(&fn)
}

func newFakeNet(seed uint64) *fakeNet {
	return &fakeNet{
		rng:    rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		eps:    map[uint64]*fakeTransport{},
		faults: map[linkKey]linkFaults{},
		links:  map[linkKey]*link{},
	}
}

// transportFor is member.Options.NewTransport.
func (n *fakeNet) transportFor(localID, clusterID uint64, r transport.Raft, s transport.SnapshotStore) member.PeerTransport {
	ctx, cancel := context.WithCancel(context.Background())
	t := &fakeTransport{net: n, id: localID, clusterID: clusterID, raft: r, snaps: s, ctx: ctx, cancel: cancel, peers: map[uint64][]string{}}
	n.mu.Lock()
	n.eps[localID] = t
	n.mu.Unlock()
	return t
}

func (n *fakeNet) endpoint(id uint64) *fakeTransport {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.eps[id]
}

func (n *fakeNet) unregister(t *fakeTransport) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.eps[t.id] == t {
		delete(n.eps, t.id)
	}
}

// setFaults sets the faults of the directed link from -> to.
func (n *fakeNet) setFaults(from, to uint64, f linkFaults) {
	n.mu.Lock()
	n.faults[linkKey{from, to}] = f
	n.mu.Unlock()
	if !f.hold {
		n.releaseLink(linkKey{from, to})
	}
}

// updateFaults changes the faults of every directed link between members
// of ids (both directions).
func (n *fakeNet) updateFaults(ids []uint64, fn func(*linkFaults)) {
	for _, a := range ids {
		for _, b := range ids {
			if a == b {
				continue
			}
			n.mu.Lock()
			f := n.faults[linkKey{a, b}]
			n.mu.Unlock()
			fn(&f)
			n.setFaults(a, b, f)
		}
	}
}

// partition cuts every link between the members of group and everyone
// else (in both directions); links inside group and inside the rest stay
// as they are.
func (n *fakeNet) partition(group []uint64, all []uint64) {
	in := map[uint64]bool{}
	for _, id := range group {
		in[id] = true
	}
	for _, a := range all {
		for _, b := range all {
			if a != b && in[a] != in[b] {
				n.mu.Lock()
				f := n.faults[linkKey{a, b}]
				f.drop = 1
				n.faults[linkKey{a, b}] = f
				n.mu.Unlock()
			}
		}
	}
}

// heal removes every fault and releases held messages.
func (n *fakeNet) heal() {
	n.mu.Lock()
	keys := make([]linkKey, 0, len(n.faults))
	for k := range n.faults {
		keys = append(keys, k)
	}
	n.faults = map[linkKey]linkFaults{}
	n.mu.Unlock()
	for _, k := range keys {
		n.releaseLink(k)
	}
}

// releaseHeld delivers every held message (shuffled on links that
// reorder) and keeps holding later ones.
func (n *fakeNet) releaseHeld() {
	n.mu.Lock()
	keys := make([]linkKey, 0, len(n.links))
	for k := range n.links {
		keys = append(keys, k)
	}
	n.mu.Unlock()
	for _, k := range keys {
		n.releaseLink(k)
	}
}

func (n *fakeNet) releaseLink(k linkKey) {
	n.mu.Lock()
	l := n.links[k]
	reorder := n.faults[k].reorder
	var perm []int
	if l != nil {
		l.mu.Lock()
		if reorder {
			perm = n.rng.Perm(len(l.held))
		}
		l.mu.Unlock()
	}
	n.mu.Unlock()
	if l == nil {
		return
	}
	l.mu.Lock()
	held := l.held
	l.held = nil
	if perm != nil && len(perm) == len(held) {
		shuffled := make([]*raftpb.Message, len(held))
		for i, j := range perm {
			shuffled[i] = held[j]
		}
		held = shuffled
	}
	n.pending.Add(int64(len(held)))
	l.queue = append(l.queue, held...)
	l.mu.Unlock()
	l.cond.Signal()
}

// idle reports whether no message is waiting in a queue or being
// delivered (held messages do not count).
func (n *fakeNet) idle() bool { return n.pending.Load() == 0 }

// linkUp reports whether from can currently reach to.
func (n *fakeNet) linkUp(from, to uint64) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := n.eps[to]
	return ok && n.faults[linkKey{from, to}].drop < 1
}

// enqueue puts a copy of m on the link from -> to, applying its faults.
func (n *fakeNet) enqueue(from uint64, m *raftpb.Message) {
	k := linkKey{from, m.GetTo()}
	n.stats.sent.Add(1)
	if fn := n.observe.Load(); fn != nil {
		(*fn)(from, m)
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	f := n.faults[k]
	if f.drop > 0 && (f.drop >= 1 || n.rng.Float64() < f.drop) {
		n.mu.Unlock()
		n.stats.dropped.Add(1)
		return
	}
	copies := 1
	if f.dup > 0 && m.GetType() != raftpb.MessageType_MsgProp && n.rng.Float64() < f.dup {
		copies = 2
		n.stats.duplicated.Add(1)
	}
	l := n.links[k]
	if l == nil {
		l = &link{net: n, key: k}
		l.cond = sync.NewCond(&l.mu)
		n.links[k] = l
		n.wg.Add(1)
		go l.run()
	}
	n.mu.Unlock()
	l.mu.Lock()
	for i := 0; i < copies; i++ {
		c := m
		if i > 0 {
			c = proto.Clone(m).(*raftpb.Message)
		}
		if f.hold {
			l.held = append(l.held, c)
		} else {
			n.pending.Add(1)
			l.queue = append(l.queue, c)
		}
	}
	l.mu.Unlock()
	l.cond.Signal()
}

// close stops every link goroutine; queued messages are dropped.
func (n *fakeNet) close() {
	n.mu.Lock()
	n.closed = true
	links := n.links
	n.mu.Unlock()
	for _, l := range links {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		l.cond.Broadcast()
	}
	n.wg.Wait()
}

// link is one directed link: a FIFO queue and the goroutine delivering it.
type link struct {
	net    *fakeNet
	key    linkKey
	mu     sync.Mutex
	cond   *sync.Cond
	queue  []*raftpb.Message
	held   []*raftpb.Message
	closed bool
}

func (l *link) run() {
	defer l.net.wg.Done()
	for {
		l.mu.Lock()
		for len(l.queue) == 0 && !l.closed {
			l.cond.Wait()
		}
		if l.closed {
			l.net.pending.Add(-int64(len(l.queue)))
			l.queue = nil
			l.mu.Unlock()
			return
		}
		m := l.queue[0]
		l.queue[0] = nil
		l.queue = l.queue[1:]
		l.mu.Unlock()
		l.deliver(m)
		l.net.pending.Add(-1)
	}
}

func (l *link) deliver(m *raftpb.Message) {
	n := l.net
	n.mu.Lock()
	down := n.faults[l.key].drop >= 1
	dst := n.eps[l.key.to]
	n.mu.Unlock()
	if down || dst == nil {
		n.stats.dropped.Add(1)
		return
	}
	if dst.process(dst.ctx, m) {
		n.stats.delivered.Add(1)
	} else {
		n.stats.dropped.Add(1)
	}
}

// fakeTransport is one member's end of the fake network; it implements
// member.PeerTransport with the threading rules of internal/transport:
// Send never blocks and never calls into raft; Stop waits for every call
// into the member's Raft and SnapshotStore that it started or serves.
type fakeTransport struct {
	net       *fakeNet
	id        uint64
	clusterID uint64
	raft      transport.Raft
	snaps     transport.SnapshotStore
	ctx       context.Context // cancelled by Stop
	cancel    context.CancelFunc

	mu      sync.Mutex
	stopped bool
	peers   map[uint64][]string
	wg      sync.WaitGroup // calls into raft/snaps of this member, and snapshot sends from it
}

var _ member.PeerTransport = (*fakeTransport)(nil)

// track registers a call into this member; false once stopped.
func (t *fakeTransport) track() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	t.wg.Add(1)
	return true
}

// process hands m to this member's raft, unless the transport stopped.
func (t *fakeTransport) process(ctx context.Context, m *raftpb.Message) bool {
	if !t.track() {
		return false
	}
	defer t.wg.Done()
	return t.raft.Process(ctx, m) == nil
}

func (t *fakeTransport) Send(msgs []*raftpb.Message) {
	for _, m := range msgs {
		to := m.GetTo()
		if to == t.id {
			continue
		}
		t.mu.Lock()
		_, known := t.peers[to]
		stopped := t.stopped
		t.mu.Unlock()
		if m.GetType() == raftpb.MessageType_MsgSnap {
			t.startSnapshot(known && !stopped, proto.Clone(m).(*raftpb.Message))
			continue
		}
		if stopped || !known {
			continue
		}
		// The raft library forbids keeping its messages after the Ready
		// is processed: copy before returning (as the real transport
		// marshals them).
		t.net.enqueue(t.id, proto.Clone(m).(*raftpb.Message))
	}
}

// startSnapshot sends a MsgSnap on its own goroutine. ReportSnapshot is
// called exactly once, never from inside Send.
func (t *fakeTransport) startSnapshot(ok bool, m *raftpb.Message) {
	to := m.GetTo()
	if !ok || !t.track() {
		go t.raft.ReportSnapshot(to, raft.SnapshotFailure)
		return
	}
	go func() {
		defer t.wg.Done()
		status := raft.SnapshotFailure
		defer func() {
			if status == raft.SnapshotFinish {
				t.net.stats.snapOK.Add(1)
			} else {
				t.net.stats.snapFailed.Add(1)
			}
			t.raft.ReportSnapshot(to, status)
		}()
		if err := t.sendSnapshot(m); err != nil {
			return
		}
		status = raft.SnapshotFinish
	}()
}

func (t *fakeTransport) sendSnapshot(m *raftpb.Message) error {
	to, index := m.GetTo(), m.GetSnapshot().GetMetadata().GetIndex()
	if !t.net.linkUp(t.id, to) {
		return fmt.Errorf("link %x -> %x is down", t.id, to)
	}
	dst := t.net.endpoint(to)
	if dst == nil || !dst.track() {
		return fmt.Errorf("member %x is not running", to)
	}
	defer dst.wg.Done()
	rc, err := t.snaps.Open(index)
	if err != nil {
		return err
	}
	defer rc.Close()
	// Either side stopping aborts the transfer.
	ctx, cancel := context.WithCancel(dst.ctx)
	defer cancel()
	stop := context.AfterFunc(t.ctx, cancel)
	defer stop()
	if err := dst.snaps.Receive(index, rc); err != nil {
		return err
	}
	if !t.net.linkUp(t.id, to) {
		return fmt.Errorf("link %x -> %x went down", t.id, to)
	}
	return dst.raft.Process(ctx, m)
}

func (t *fakeTransport) AddPeer(id uint64, urls []string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if id == 0 || id == t.id {
		return fmt.Errorf("fakenet: cannot add peer %x", id)
	}
	if _, ok := t.peers[id]; ok {
		return fmt.Errorf("fakenet: peer %x already added", id)
	}
	if len(urls) == 0 {
		return fmt.Errorf("fakenet: peer %x has no URLs", id)
	}
	t.peers[id] = append([]string(nil), urls...)
	return nil
}

func (t *fakeTransport) UpdatePeer(id uint64, urls []string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.peers[id]; !ok {
		return fmt.Errorf("fakenet: unknown peer %x", id)
	}
	t.peers[id] = append([]string(nil), urls...)
	return nil
}

func (t *fakeTransport) RemovePeer(id uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.peers, id)
}

// IsActive reports link health: the peer is known, running and reachable.
func (t *fakeTransport) IsActive(id uint64) bool {
	t.mu.Lock()
	_, known := t.peers[id]
	t.mu.Unlock()
	return known && t.net.linkUp(t.id, id)
}

func (t *fakeTransport) Register(*grpc.Server)              {}
func (t *fakeTransport) ServerOptions() []grpc.ServerOption { return nil }

func (t *fakeTransport) Stop() {
	t.mu.Lock()
	t.stopped = true
	t.mu.Unlock()
	t.cancel()
	t.wg.Wait()
	t.net.unregister(t)
}
