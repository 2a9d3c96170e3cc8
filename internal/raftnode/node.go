// Package raftnode drives go.etcd.io/raft/v3's RawNode: the one goroutine
// that ticks, steps messages, takes proposals and read-index requests, and
// processes each Ready in the order the library's contract demands:
//
//  1. persist HardState and entries in one synced Pebble batch;
//  2. only then send messages (they may promise what was just persisted);
//  3. hand committed entries, in order, to the applier, never before their
//     entries are durable (the single-member trap of etcd-io/etcd#14370):
//     after 1, or before it when an earlier Ready persisted every one of
//     them and this Ready rewrites none (appliesBeforeSave), so that the
//     applier works while the next entries are written;
//  4. Advance.
//
// The applier runs on its own goroutine and may apply Ready N while this
// loop persists Ready N+1 (pipelining): raft allows Advance any time after
// step 1 as long as committed entries are applied in order.
//
// This package never interprets entry payloads and never touches MVCC state.
package raftnode

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/cairnkv/cairn/internal/failpoint"
	"github.com/cairnkv/cairn/internal/raftlog"
)

// Errors a proposer or reader may see.
var (
	ErrStopped       = errors.New("raftnode: stopped")
	ErrNoLeader      = errors.New("raftnode: no leader")
	ErrLeaderChanged = errors.New("raftnode: leader changed")
	// ErrNotLeader: a ProposeAsLeader proposal reached a node that does
	// not lead.
	ErrNotLeader = errors.New("raftnode: not leader")
)

// Transport sends raft messages to peers. Send must not block.
type Transport interface {
	Send(msgs []*raftpb.Message)
}

// Config configures a Node.
type Config struct {
	ID uint64
	// Peers bootstraps a brand-new log; empty when restarting.
	Peers         []raft.Peer
	Storage       *raftlog.Storage
	Applied       uint64
	TickInterval  time.Duration
	ElectionTick  int
	HeartbeatTick int
	Transport     Transport
	// Ticks, when set, replaces the TickInterval ticker (tests drive the
	// clock by hand).
	Ticks <-chan time.Time
	// ConfChecker, when set, decides whether each committed conf change
	// takes effect.
	ConfChecker ConfChecker
	// ReadTimeout, when set, bounds how long the readers of a read round
	// wait for it even if the raft loop is stuck (a hung disk under Save):
	// they get context.DeadlineExceeded. One timer per round, not per
	// reader.
	ReadTimeout time.Duration
}

// ConfChecker validates committed conf changes on the raft goroutine, in
// log order, as etcd validates membership changes when it applies them:
// checks made before proposing read a membership that may lag behind the
// log (or race with a change proposed elsewhere), so the decision that
// counts is taken here, identically on every member. A rejected change is
// applied to raft with its node IDs zeroed (raft ignores those: its
// documented way for an application to turn a change down), and its error
// reaches the applier in Apply.Rejected.
//
// Every input to the decision must be the same on every member at this log
// position: conf is raft's configuration before the change (restored from
// the log and snapshots on every member alike).
type ConfChecker interface {
	CheckConfChange(conf ConfMembers, cc *raftpb.ConfChangeV2) error
	// ConfRestored is called after a snapshot was installed.
	ConfRestored()
}

// ConfMembers maps the ID of every voter and learner in raft's current
// configuration to whether it is a learner.
type ConfMembers map[uint64]bool

// Apply is one batch of committed entries, in log order, or a snapshot to
// install (then Entries is empty and Done must be sent the outcome).
type Apply struct {
	Snapshot *raftpb.Snapshot
	Done     chan<- error
	Entries  []*raftpb.Entry
	// Commit, when non-zero, is a commit index the applier must record in
	// its batch (raftlog.StageCommit): the Ready's HardState only moved
	// the commit index, and was not persisted by the raft loop.
	Commit uint64
	// ConfStates holds, for each conf-change entry index, the ConfState
	// after raft applied that change; the applier persists it.
	ConfStates map[uint64]*raftpb.ConfState
	// Rejected holds, for each conf-change entry index the ConfChecker
	// turned down, why: the change took no effect in raft, and must take
	// none in the membership either.
	Rejected map[uint64]error
}

type proposal struct {
	data []byte
	errc chan error
	// leaderOnly drops the proposal unless this node leads (see
	// ProposeAsLeader).
	leaderOnly bool
}

type readBatch struct {
	done  chan struct{}
	index uint64
	err   error
	// expired is closed by timer once the batch has waited
	// Config.ReadTimeout (nil without one).
	expired chan struct{}
	timer   *time.Timer
}

// finish ends the batch: its readers see index and err.
func (b *readBatch) finish(index uint64, err error) {
	b.index, b.err = index, err
	if b.timer != nil {
		b.timer.Stop()
	}
	close(b.done)
}

// remoteRead is a read-index request a follower (or learner) sent to this
// leader: the leader answers it from its own next round instead of letting
// raft broadcast a heartbeat round for it alone.
type remoteRead struct {
	from uint64
	ctx  []byte
}

// readRound is one read-index round in flight: this member's own readers
// (local, nil if none) and the remote requests that joined it.
type readRound struct {
	local   *readBatch
	remotes []remoteRead
	// term is the leader's term when the round was issued; remotes are
	// answered only if the round completes in it.
	term uint64
}

// maxRemoteReads bounds the remote read-index requests waiting for the
// next round. Each follower has at most one round in flight (plus retries
// of lost ones), so this is never reached by well-behaved peers.
const maxRemoteReads = 1024

// Node is a running raft member.
type Node struct {
	lg  *zap.Logger
	cfg Config
	rn  *raft.RawNode

	propc   chan proposal
	recvc   chan *raftpb.Message
	readc   chan struct{}
	compc   chan uint64
	doc     chan func(*raft.RawNode)
	applyc  chan Apply
	stopped chan struct{}

	lead atomic.Uint64
	term atomic.Uint64
	// sole is true while this node is the leader and the only voter.
	sole atomic.Bool
	// committed is the commit index as of the last Ready.
	committed atomic.Uint64

	// leaderWait, when not nil, is closed once a leader is known (see
	// WaitLeader).
	leaderMu   sync.Mutex
	leaderWait chan struct{}

	// pending holds the proposals taken by drain, proposed together by
	// flushProposals (raft goroutine only).
	pending []proposal

	readMu      sync.Mutex
	pendingRead *readBatch
	// readsStopped: Run has returned; no batch will be issued again.
	readsStopped bool
	// At most one read round is in flight (raft goroutine only): reads
	// that arrive meanwhile wait in pendingRead and share the next round,
	// as etcd's linearizableReadLoop does. One round per arrival would
	// cost a leader round trip and a heartbeat broadcast per few reads.
	inflight map[string]*readRound
	// remoteReads wait for this leader's next round (raft goroutine only).
	// raft itself broadcasts a heartbeat round for every MsgReadIndex it
	// steps; with every member reading, the leader then ran one round per
	// member per round trip. Answering followers from the leader's own
	// rounds makes it one broadcast for the whole cluster.
	remoteReads []remoteRead
	// readAge counts the ticks the round in flight has waited; a round
	// unanswered for two election timeouts is presumed lost.
	readAge int
	// readSeq numbers read rounds. It starts from the clock so that an
	// answer to a round sent before a restart never matches a new round.
	readSeq uint64

	// durableTerm and durableVote are the persisted HardState's (raft
	// goroutine only).
	durableTerm, durableVote uint64

	met *metrics
}

// New creates the node; Run starts it.
func New(lg *zap.Logger, cfg Config) (*Node, error) {
	if lg == nil {
		lg = zap.NewNop()
	}
	rc := &raft.Config{
		ID:                        cfg.ID,
		ElectionTick:              cfg.ElectionTick,
		HeartbeatTick:             cfg.HeartbeatTick,
		Storage:                   cfg.Storage,
		Applied:                   cfg.Applied,
		MaxSizePerMsg:             1 << 20,
		MaxCommittedSizePerReady:  64 << 20,
		MaxUncommittedEntriesSize: 1 << 30,
		MaxInflightMsgs:           512,
		CheckQuorum:               true,
		PreVote:                   true,
		ReadOnlyOption:            raft.ReadOnlySafe,
		StepDownOnRemoval:         true,
		Logger:                    &raftLogger{lg.Sugar().With("component", "raft")},
	}
	// Raft panics on an applied index it cannot have; a damaged data dir
	// is refused with an error instead.
	if hs, _, err := cfg.Storage.InitialState(); err != nil {
		return nil, fmt.Errorf("raftnode: %w", err)
	} else if first, _ := cfg.Storage.FirstIndex(); cfg.Applied > hs.GetCommit() || cfg.Applied+1 < first {
		return nil, fmt.Errorf("raftnode: applied index %d is outside the log (first index %d, commit %d): the data dir is inconsistent", cfg.Applied, first, hs.GetCommit())
	}
	rn, err := raft.NewRawNode(rc)
	if err != nil {
		return nil, fmt.Errorf("raftnode: %w", err)
	}
	if len(cfg.Peers) > 0 {
		if err := rn.Bootstrap(cfg.Peers); err != nil {
			return nil, fmt.Errorf("raftnode: bootstrap: %w", err)
		}
	}
	n := &Node{
		lg:       lg,
		cfg:      cfg,
		rn:       rn,
		propc:    make(chan proposal, 4096),
		recvc:    make(chan *raftpb.Message, 4096),
		readc:    make(chan struct{}, 1),
		compc:    make(chan uint64, 1),
		doc:      make(chan func(*raft.RawNode), 64),
		applyc:   make(chan Apply, 64),
		stopped:  make(chan struct{}),
		inflight: make(map[string]*readRound),
		readSeq:  uint64(time.Now().UnixNano()),
		met:      newMetrics(),
	}
	if hs, _, err := cfg.Storage.InitialState(); err == nil {
		n.durableTerm, n.durableVote = hs.GetTerm(), hs.GetVote()
	}
	if st := rn.BasicStatus(); st.Lead != raft.None {
		n.lead.Store(st.Lead)
	}
	return n, nil
}

// ApplyC delivers committed entries in order. The applier must drain it.
func (n *Node) ApplyC() <-chan Apply { return n.applyc }

// Leader returns the current leader's ID, or 0.
func (n *Node) Leader() uint64 { return n.lead.Load() }

// Term returns the current raft term.
func (n *Node) Term() uint64 { return n.term.Load() }

// CommittedIndex returns the commit index as of the last Ready.
func (n *Node) CommittedIndex() uint64 { return n.committed.Load() }

// Propose submits data to the log and returns once the raft loop has it.
// The returned channel receives an error if raft drops the proposal; it
// receives nothing when raft accepts it (the proposer waits for the
// applied result instead, so acceptance costs no extra wake-up).
func (n *Node) Propose(ctx context.Context, data []byte) (<-chan error, error) {
	p := proposal{data: data, errc: make(chan error, 1)}
	select {
	case n.propc <- p:
		return p.errc, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-n.stopped:
		return nil, ErrStopped
	}
}

// WaitLeader returns once this node knows a leader (at once if it does),
// or with ctx's error, or ErrStopped.
func (n *Node) WaitLeader(ctx context.Context) error {
	for {
		n.leaderMu.Lock()
		if n.lead.Load() != raft.None {
			n.leaderMu.Unlock()
			return nil
		}
		if n.leaderWait == nil {
			n.leaderWait = make(chan struct{})
		}
		ch := n.leaderWait
		n.leaderMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-n.stopped:
			return ErrStopped
		}
	}
}

// ProposeAsLeader is Propose for proposals only a leader may make (lease
// revocations on expiry): raft never forwards them, so an entry of a
// deposed leader can only commit in the term it led, never be carried into
// a newer term by forwarding (etcd-io/etcd#15247: a stuck old leader
// revoked leases the new leader had renewed).
func (n *Node) ProposeAsLeader(ctx context.Context, data []byte) (<-chan error, error) {
	p := proposal{data: data, errc: make(chan error, 1), leaderOnly: true}
	select {
	case n.propc <- p:
		return p.errc, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-n.stopped:
		return nil, ErrStopped
	}
}

// Step delivers a message from a peer.
func (n *Node) Step(ctx context.Context, m *raftpb.Message) error {
	select {
	case n.recvc <- m:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-n.stopped:
		return ErrStopped
	}
}

// CompactLog asks the loop to discard log entries up to index (applied).
func (n *Node) CompactLog(index uint64) {
	select {
	case n.compc <- index:
	default: // one is pending; the next applied batch asks again
	}
}

// SoleVoterLeader reports whether this node leads a configuration in which
// it is the only voter. Then every write that completed has already been
// applied here, so a local read is linearizable without a read-index round.
func (n *Node) SoleVoterLeader() bool { return n.sole.Load() }

// ReadIndex returns a commit index that is at least every index committed
// before the call: once the applied index reaches it, a local read is
// linearizable. Concurrent callers share one raft round. A round that is
// lost (the raft loop gives up on it after two election timeouts) or
// crosses a leader change is retried in a new round with a fresh request
// context (never reusing a context: etcd-io/etcd#20418).
func (n *Node) ReadIndex(ctx context.Context) (uint64, error) {
	for {
		idx, err := n.readRound(ctx)
		if errors.Is(err, ErrLeaderChanged) {
			continue
		}
		if errors.Is(err, ErrNoLeader) {
			// Compat: etcd's read loop waits out an election, so a short
			// one is invisible to readers.
			if err := n.WaitLeader(ctx); err != nil {
				return 0, err
			}
			continue
		}
		return idx, err
	}
}

// TryReadIndex is ReadIndex with a single round: it returns
// ErrLeaderChanged or ErrNoLeader where ReadIndex would try again. Its
// wait is bounded even under a context without a deadline: the raft loop
// gives a round up after two election timeouts, and Config.ReadTimeout
// ends it if the loop itself is stuck.
func (n *Node) TryReadIndex(ctx context.Context) (uint64, error) {
	return n.readRound(ctx)
}

// readRound joins the next read round and waits for its outcome.
func (n *Node) readRound(ctx context.Context) (uint64, error) {
	n.readMu.Lock()
	if n.readsStopped {
		n.readMu.Unlock()
		return 0, ErrStopped
	}
	b := n.pendingRead
	if b == nil {
		b = &readBatch{done: make(chan struct{})}
		if t := n.cfg.ReadTimeout; t > 0 {
			expired := make(chan struct{})
			b.expired, b.timer = expired, time.AfterFunc(t, func() { close(expired) })
		}
		n.pendingRead = b
		select {
		case n.readc <- struct{}{}:
		default:
		}
	}
	n.readMu.Unlock()
	// Not n.stopped: every reader would queue on that one channel's lock
	// (this select was up to 8% of a member's CPU in 2-s profiles under
	// 100 readers). Run closes every batch when it returns (stopReads).
	select {
	case <-b.done:
		return b.index, b.err
	case <-b.expired:
		return 0, context.DeadlineExceeded
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// stopReads fails every read batch, in flight or pending, and refuses new
// ones. Raft goroutine, when Run returns.
func (n *Node) stopReads() {
	n.failReads(ErrStopped)
	n.readMu.Lock()
	n.readsStopped = true
	b := n.pendingRead
	n.pendingRead = nil
	n.readMu.Unlock()
	if b != nil {
		b.finish(0, ErrStopped)
	}
}

// Run drives raft until ctx is done or a storage error occurs. It closes
// ApplyC on return.
func (n *Node) Run(ctx context.Context) error {
	defer close(n.stopped)
	defer close(n.applyc)
	defer n.stopReads()
	ticks := n.cfg.Ticks
	if ticks == nil {
		ticker := time.NewTicker(n.cfg.TickInterval)
		defer ticker.Stop()
		ticks = ticker.C
	}
	// A one-member cluster need not wait an election timeout. A brand-new
	// one must first apply its bootstrap conf change (raft refuses to
	// campaign with conf changes pending), so it campaigns after that.
	campaignAfterBootstrap := len(n.cfg.Peers) == 1
	if !campaignAfterBootstrap && n.singleVoter() {
		_ = n.rn.Campaign()
	}
	for {
		// A round answered (or failed) by the last event lets the reads
		// that gathered meanwhile go, and a remote request stepped by it
		// starts a round: before the Readies, so that the round's
		// heartbeats go out now rather than at the next event.
		n.issueRead()
		// Ready first: the bootstrap entries are ready before any event,
		// and every event below may make more ready.
		for n.rn.HasReady() {
			if err := n.handleReady(ctx); err != nil {
				n.failReads(ErrStopped)
				return err
			}
			if ctx.Err() != nil {
				// handleReady may have returned without Advance (its
				// hand-off to the applier gave up); raft must not be
				// asked for another Ready then.
				n.failReads(ErrStopped)
				return nil
			}
			if campaignAfterBootstrap && n.rn.BasicStatus().Applied >= uint64(len(n.cfg.Peers)) {
				campaignAfterBootstrap = false
				_ = n.rn.Campaign()
			}
		}
		select {
		case <-ctx.Done():
			n.failReads(ErrStopped)
			return nil
		case <-ticks:
			n.rn.Tick()
			if len(n.inflight) > 0 {
				if n.readAge++; n.readAge > 2*n.cfg.ElectionTick {
					// Dropped by raft or lost on the network: the
					// readers try again in the next round.
					n.lg.Debug("read index round unanswered; retrying")
					n.met.slowReadIndex.Inc()
					n.failReads(ErrLeaderChanged)
				}
			}
		case p := <-n.propc:
			n.pending = append(n.pending, p)
			n.drain()
		case m := <-n.recvc:
			n.step(m)
			n.drain()
		case <-n.readc:
			// issueRead at the top of the loop.
		case fn := <-n.doc:
			fn(n.rn)
		case idx := <-n.compc:
			if err := n.cfg.Storage.Compact(idx); err != nil {
				n.lg.Warn("raft log compaction failed", zap.Uint64("index", idx), zap.Error(err))
			}
		}
	}
}

// termVoteDurable reports whether hs (a Ready's HardState, nil if
// unchanged) changes nothing durable but the commit index.
func (n *Node) termVoteDurable(hs *raftpb.HardState) bool {
	return hs == nil || (hs.GetTerm() == n.durableTerm && hs.GetVote() == n.durableVote)
}

// drain takes every proposal and peer message already queued, so that they
// all land in one Ready: one fsync and one round of messages for all of
// them (on a follower, one fsync per leader append would cap throughput).
func (n *Node) drain() {
	defer n.flushProposals()
	for i := 0; i < 4096; i++ {
		select {
		case p := <-n.propc:
			n.pending = append(n.pending, p)
		case m := <-n.recvc:
			n.step(m)
		default:
			return
		}
	}
}

// maxMergedBytes bounds the payload of an entry that carries several
// proposals; a bigger proposal gets an entry of its own.
const maxMergedBytes = 256 << 10

// flushProposals proposes the pending proposals, several per log entry
// where possible (see MergeProposals): raft, the log write, the peer
// messages and the applier then pay their per-entry costs once per group
// instead of once per request.
func (n *Node) flushProposals() {
	ps := n.pending
	for len(ps) > 0 {
		k, size := 1, len(ps[0].data)
		if !ps[0].leaderOnly {
			for k < len(ps) && !ps[k].leaderOnly && size+len(ps[k].data) <= maxMergedBytes {
				size += len(ps[k].data)
				k++
			}
		}
		if k == 1 {
			n.propose(ps[0])
		} else {
			n.proposeMerged(ps[:k], size)
		}
		ps = ps[k:]
	}
	clear(n.pending)
	n.pending = n.pending[:0]
}

func (n *Node) proposeMerged(ps []proposal, size int) {
	parts := make([][]byte, len(ps))
	for i, p := range ps {
		parts[i] = p.data
	}
	err := n.rn.Propose(MergeProposals(parts, size))
	if errors.Is(err, raft.ErrProposalDropped) && n.lead.Load() == raft.None {
		err = ErrNoLeader
	}
	if err != nil {
		for _, p := range ps {
			p.errc <- err
		}
	}
}

// MergeProposals encodes several proposals (of size bytes in all, a
// capacity hint) as the data of one entry; Proposals decodes it.
func MergeProposals(parts [][]byte, size int) []byte {
	data := make([]byte, 0, len(mergedMagic)+size+len(parts)*binary.MaxVarintLen32)
	data = append(data, mergedMagic...)
	for _, p := range parts {
		data = binary.AppendUvarint(data, uint64(len(p)))
		data = append(data, p...)
	}
	return data
}

// mergedMagic starts the data of an entry that carries several
// proposals. No protobuf message starts with a 0x00 byte (field number 0
// is invalid), so it cannot be mistaken for a single proposal.
var mergedMagic = []byte{0x00, 0x01}

// errBadMerged reports merged entry data that does not decode.
var errBadMerged = errors.New("raftnode: malformed merged entry")

// Proposals returns the proposals a normal entry's data carries, in the
// order they were proposed: the data itself, or the parts of a merged
// entry. The parts alias data.
func Proposals(data []byte) ([][]byte, error) {
	if len(data) < len(mergedMagic) || data[0] != mergedMagic[0] {
		return [][]byte{data}, nil
	}
	if data[1] != mergedMagic[1] {
		return nil, errBadMerged
	}
	var out [][]byte
	rest := data[len(mergedMagic):]
	for len(rest) > 0 {
		l, k := binary.Uvarint(rest)
		if k <= 0 || l > uint64(len(rest)-k) {
			return nil, errBadMerged
		}
		out = append(out, rest[k:k+int(l)])
		rest = rest[k+int(l):]
	}
	return out, nil
}

func (n *Node) step(m *raftpb.Message) {
	if m.GetType() == raftpb.MessageType_MsgReadIndex && m.GetFrom() != n.cfg.ID && len(m.GetEntries()) == 1 &&
		n.rn.BasicStatus().RaftState == raft.StateLeader {
		// Answered by this leader's next round (issueRead), which starts
		// after this request arrived: its index is at least the commit
		// index now, as raft's own answer would be.
		if len(n.remoteReads) < maxRemoteReads {
			n.remoteReads = append(n.remoteReads, remoteRead{from: m.GetFrom(), ctx: m.GetEntries()[0].GetData()})
		}
		return
	}
	if err := n.rn.Step(m); err != nil {
		n.lg.Debug("step failed", zap.Error(err))
	}
}

func (n *Node) singleVoter() bool {
	_, cs, err := n.cfg.Storage.InitialState()
	return err == nil && len(cs.Voters) == 1 && cs.Voters[0] == n.cfg.ID
}

func (n *Node) propose(p proposal) {
	if p.leaderOnly && n.rn.BasicStatus().RaftState != raft.StateLeader {
		p.errc <- ErrNotLeader
		return
	}
	err := n.rn.Propose(p.data)
	if errors.Is(err, raft.ErrProposalDropped) && n.lead.Load() == raft.None {
		err = ErrNoLeader
	}
	if err != nil {
		p.errc <- err
	}
}

// issueRead starts a read round for the pending reads, local and remote,
// unless one is in flight.
func (n *Node) issueRead() {
	if len(n.inflight) > 0 {
		return
	}
	n.readMu.Lock()
	b := n.pendingRead
	n.pendingRead = nil
	n.readMu.Unlock()
	remotes := n.remoteReads
	n.remoteReads = nil
	if b == nil && len(remotes) == 0 {
		return
	}
	if n.lead.Load() == raft.None {
		// Remote requests are dropped: their senders retry on their own
		// leader change, or when their round ages out.
		if b != nil {
			b.finish(0, ErrNoLeader)
		}
		return
	}
	st := n.rn.BasicStatus()
	if len(remotes) > 0 && st.RaftState != raft.StateLeader {
		// Deposed since they arrived; their senders retry.
		remotes = nil
		if b == nil {
			return
		}
	}
	n.readSeq++
	n.readAge = 0
	rctx := binary.BigEndian.AppendUint64(nil, n.readSeq)
	n.inflight[string(rctx)] = &readRound{local: b, remotes: remotes, term: st.HardState.GetTerm()}
	n.met.readRounds.Inc()
	n.met.remoteReads.Add(float64(len(remotes)))
	n.rn.ReadIndex(rctx)
}

// failReads fails this member's readers of the round in flight. Remote
// requests in it are dropped; their senders retry.
func (n *Node) failReads(err error) {
	if len(n.inflight) > 0 && !errors.Is(err, ErrStopped) {
		n.met.readIndexFailed.Inc()
	}
	for k, r := range n.inflight {
		if r.local != nil {
			r.local.finish(0, err)
		}
		delete(n.inflight, k)
	}
}

// finishReads completes the rounds raft confirmed. It returns the answers
// to the remote requests that joined them.
func (n *Node) finishReads(states []raft.ReadState) []*raftpb.Message {
	var resps []*raftpb.Message
	for _, rs := range states {
		r, ok := n.inflight[string(rs.RequestCtx)]
		if !ok {
			continue
		}
		delete(n.inflight, string(rs.RequestCtx))
		if r.local != nil {
			r.local.finish(rs.Index, nil)
		}
		if len(r.remotes) == 0 {
			continue
		}
		// raft confirms a round only while it leads in the term the round
		// was issued in (it forgets unconfirmed reads when its term
		// changes); the check keeps that assumption explicit.
		if st := n.rn.BasicStatus(); st.RaftState != raft.StateLeader || st.HardState.GetTerm() != r.term {
			continue
		}
		for _, rr := range r.remotes {
			resps = append(resps, &raftpb.Message{
				Type:    raftpb.MessageType_MsgReadIndexResp.Enum(),
				To:      new(rr.from),
				From:    new(n.cfg.ID),
				Term:    new(r.term),
				Index:   new(rs.Index),
				Entries: []*raftpb.Entry{{Data: rr.ctx}},
			})
		}
	}
	return resps
}

func (n *Node) handleReady(ctx context.Context) error {
	rd := n.rn.Ready()
	if rd.SoftState != nil {
		if old := n.lead.Swap(rd.SoftState.Lead); old != rd.SoftState.Lead {
			n.lg.Info("leader changed", zap.Uint64("from", old), zap.Uint64("to", rd.SoftState.Lead))
			if rd.SoftState.Lead != raft.None {
				n.met.leaderChanges.Inc()
			}
			// A read round in flight under the old leader may never be
			// answered, or be answered by a deposed leader: retry it.
			n.failReads(ErrLeaderChanged)
			if rd.SoftState.Lead != raft.None {
				n.leaderMu.Lock()
				if n.leaderWait != nil {
					close(n.leaderWait)
					n.leaderWait = nil
				}
				n.leaderMu.Unlock()
			}
		}
	}
	if rd.HardState != nil {
		n.term.Store(rd.HardState.GetTerm())
		n.committed.Store(rd.HardState.GetCommit())
	}
	if !raft.IsEmptySnap(rd.Snapshot) {
		// The applier installs the snapshot after everything handed to it
		// before (so no older entry is applied on top of it) and moves the
		// raft storage to it; only then may the Ready's entries follow.
		done := make(chan error, 1)
		select {
		case n.applyc <- Apply{Snapshot: rd.Snapshot, Done: done}:
		case <-ctx.Done():
			return nil
		}
		select {
		case err := <-done:
			if err != nil {
				return fmt.Errorf("raftnode: install snapshot %d: %w", rd.Snapshot.GetMetadata().GetIndex(), err)
			}
		case <-ctx.Done():
			return nil
		}
		if n.cfg.ConfChecker != nil {
			n.cfg.ConfChecker.ConfRestored()
		}
	}
	// 1. Persist before anything depends on it. A HardState that only
	// moved the commit index (MustSync false, nothing else to write) rides
	// in the applier's batch with the entries it commits.
	hs, deferredCommit := rd.HardState, uint64(0)
	if hs != nil && !rd.MustSync && len(rd.Entries) == 0 && len(rd.CommittedEntries) > 0 {
		hs, deferredCommit = nil, rd.HardState.GetCommit()
	}
	// A leader whose term and vote are already durable sends its appends
	// before its own fsync, so it writes its disk in parallel with the
	// followers writing theirs (raft thesis 10.2.1; raft doc.go: messages
	// may be sent while entries of the same batch are persisted). Responses
	// that promise durability (append and vote responses) always wait.
	msgs := rd.Messages
	if n.cfg.Transport != nil && len(msgs) > 0 && n.lead.Load() == n.cfg.ID && n.termVoteDurable(rd.HardState) {
		var late []*raftpb.Message
		var early []*raftpb.Message
		for _, m := range msgs {
			switch m.GetType() {
			case raftpb.MessageType_MsgAppResp, raftpb.MessageType_MsgVoteResp, raftpb.MessageType_MsgPreVoteResp:
				late = append(late, m)
			default:
				early = append(early, m)
			}
		}
		n.cfg.Transport.Send(early)
		msgs = late
	}
	// 3, early. Committed entries that earlier Readies persisted (none of
	// them is among this Ready's entries, which may overwrite a conflicting
	// tail) are durable here and on a quorum: the applier may take them
	// while this Ready's entries are written, as etcd's leader applies in
	// parallel with its WAL write. Otherwise every committed batch under
	// load waited for the fsync of the next batch's entries. The commit
	// index the applier records with them is their last index, which the
	// log holds durably whatever happens to this Ready's write; the
	// HardState's commit index may point past the durable log until Save
	// returns.
	early := appliesBeforeSave(&rd)
	if early {
		ce := rd.CommittedEntries
		if err := n.handOff(ctx, ce, ce[len(ce)-1].GetIndex()); err != nil || ctx.Err() != nil {
			return err
		}
	}
	failpoint.Hit(failpoint.RaftBeforeSync)
	start := time.Now()
	if err := n.cfg.Storage.Save(hs, rd.Entries, rd.MustSync); err != nil {
		return fmt.Errorf("raftnode: persist ready: %w", err)
	}
	if rd.MustSync {
		n.met.walFsync.Observe(time.Since(start).Seconds())
	}
	if len(rd.Entries) > 0 {
		size := 0
		for _, e := range rd.Entries {
			size += len(e.GetData())
		}
		n.met.walWriteBytes.Add(float64(size))
	}
	failpoint.Hit(failpoint.RaftAfterSync)
	if hs != nil {
		n.durableTerm, n.durableVote = hs.GetTerm(), hs.GetVote()
	}
	// Answers to remote read-index requests promise nothing of this
	// Ready's entries (their index is committed on a quorum): they travel
	// with its messages.
	msgs = append(msgs, n.finishReads(rd.ReadStates)...)
	// 2. Messages may now promise what is durable.
	if len(msgs) > 0 && n.cfg.Transport != nil {
		n.cfg.Transport.Send(msgs)
	}
	// 3. Committed entries go to the applier, in order (unless they went
	// before the Save above).
	if len(rd.CommittedEntries) > 0 && !early {
		if err := n.handOff(ctx, rd.CommittedEntries, deferredCommit); err != nil || ctx.Err() != nil {
			return err
		}
	}
	// 4.
	n.rn.Advance(rd)
	if len(rd.ReadStates) > 0 || rd.SoftState != nil {
		// The reads that queued behind a finished (or failed) round.
		n.issueRead()
	}
	if rd.SoftState != nil || len(rd.CommittedEntries) > 0 && hasConfChange(rd.CommittedEntries) {
		st := n.rn.Status()
		voters := st.Config.Voters
		_, self := voters[0][n.cfg.ID]
		n.sole.Store(st.RaftState == raft.StateLeader && self && len(voters[0]) == 1 && len(voters[1]) == 0)
	}
	return nil
}

// appliesBeforeSave reports whether rd's committed entries may go to the
// applier before rd is persisted: there is no snapshot to install first,
// and every committed entry precedes rd's entries, so it was persisted by
// an earlier Ready and this one cannot overwrite it. (A committed entry is
// never overwritten by raft, but one of rd's entries at the same index
// would be the copy that is not durable yet.) A Ready without entries
// persists at most a HardState and keeps the ordinary order.
func appliesBeforeSave(rd *raft.Ready) bool {
	ce := rd.CommittedEntries
	return len(ce) > 0 && len(rd.Entries) > 0 && raft.IsEmptySnap(rd.Snapshot) &&
		ce[len(ce)-1].GetIndex() < rd.Entries[0].GetIndex()
}

// handOff applies the conf changes among ents to raft and hands ents to
// the applier, with commit as the commit index to record (0: none).
func (n *Node) handOff(ctx context.Context, ents []*raftpb.Entry, commit uint64) error {
	a := Apply{Entries: ents, Commit: commit}
	for _, e := range ents {
		cs, rejected, err := n.applyConfChange(e)
		if err != nil {
			return err
		}
		if cs != nil {
			if a.ConfStates == nil {
				a.ConfStates = make(map[uint64]*raftpb.ConfState)
			}
			a.ConfStates[e.GetIndex()] = cs
		}
		if rejected != nil {
			if a.Rejected == nil {
				a.Rejected = make(map[uint64]error)
			}
			a.Rejected[e.GetIndex()] = rejected
		}
	}
	select {
	case n.applyc <- a:
	case <-ctx.Done():
	}
	return nil
}

func hasConfChange(ents []*raftpb.Entry) bool {
	for _, e := range ents {
		if t := e.GetType(); t == raftpb.EntryType_EntryConfChange || t == raftpb.EntryType_EntryConfChangeV2 {
			return true
		}
	}
	return false
}

// applyConfChange applies e to raft if it is a conf change, returning the
// resulting ConfState and, if the ConfChecker turned it down, why.
func (n *Node) applyConfChange(e *raftpb.Entry) (*raftpb.ConfState, error, error) {
	var cc *raftpb.ConfChangeV2
	switch e.GetType() {
	case raftpb.EntryType_EntryConfChange:
		c := &raftpb.ConfChange{}
		if err := proto.Unmarshal(e.GetData(), c); err != nil {
			return nil, nil, fmt.Errorf("raftnode: conf change at %d is corrupt: %w", e.GetIndex(), err)
		}
		cc = c.AsV2()
	case raftpb.EntryType_EntryConfChangeV2:
		cc = &raftpb.ConfChangeV2{}
		if err := proto.Unmarshal(e.GetData(), cc); err != nil {
			return nil, nil, fmt.Errorf("raftnode: conf change at %d is corrupt: %w", e.GetIndex(), err)
		}
	default:
		return nil, nil, nil
	}
	var rejected error
	if n.cfg.ConfChecker != nil && !cc.LeaveJoint() {
		if rejected = n.cfg.ConfChecker.CheckConfChange(n.confMembers(), cc); rejected != nil {
			n.lg.Warn("membership change rejected", zap.Uint64("index", e.GetIndex()), zap.Error(rejected))
			for _, ch := range cc.GetChanges() {
				ch.NodeId = proto.Uint64(raft.None)
			}
		}
	}
	return n.rn.ApplyConfChange(cc), rejected, nil
}

// confMembers returns raft's current voters and learners.
func (n *Node) confMembers() ConfMembers {
	cfg := n.rn.Status().Config
	out := ConfMembers{}
	for id := range cfg.Voters.IDs() {
		out[id] = false
	}
	for id := range cfg.Learners {
		out[id] = true
	}
	for id := range cfg.LearnersNext {
		out[id] = true
	}
	return out
}

// do runs fn on the raft goroutine (RawNode is not safe for concurrent use).
func (n *Node) do(ctx context.Context, fn func(*raft.RawNode)) error {
	done := make(chan struct{})
	select {
	case n.doc <- func(rn *raft.RawNode) { fn(rn); close(done) }:
	case <-ctx.Done():
		return ctx.Err()
	case <-n.stopped:
		return ErrStopped
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-n.stopped:
		return ErrStopped
	}
}

// ReportUnreachable tells raft that a peer could not be reached.
func (n *Node) ReportUnreachable(id uint64) {
	select {
	case n.doc <- func(rn *raft.RawNode) { rn.ReportUnreachable(id) }:
	case <-n.stopped:
	}
}

// ReportSnapshot tells raft how sending a snapshot to id ended.
func (n *Node) ReportSnapshot(id uint64, status raft.SnapshotStatus) {
	select {
	case n.doc <- func(rn *raft.RawNode) { rn.ReportSnapshot(id, status) }:
	case <-n.stopped:
	}
}

// ProposeConfChange proposes a membership change.
func (n *Node) ProposeConfChange(ctx context.Context, cc raftpb.ConfChangeI) error {
	var err error
	if derr := n.do(ctx, func(rn *raft.RawNode) { err = rn.ProposeConfChange(cc) }); derr != nil {
		return derr
	}
	if errors.Is(err, raft.ErrProposalDropped) && n.lead.Load() == raft.None {
		return ErrNoLeader
	}
	return err
}

// TransferLeadership asks raft to hand leadership to transferee.
func (n *Node) TransferLeadership(ctx context.Context, transferee uint64) error {
	return n.do(ctx, func(rn *raft.RawNode) { rn.TransferLeader(transferee) })
}

// Status returns raft's full status (with progress when leader).
func (n *Node) Status(ctx context.Context) (raft.Status, error) {
	var st raft.Status
	err := n.do(ctx, func(rn *raft.RawNode) { st = rn.Status() })
	return st, err
}

// raftLogger adapts zap to raft.Logger.
type raftLogger struct{ *zap.SugaredLogger }

func (l *raftLogger) Warning(v ...interface{})                 { l.Warn(v...) }
func (l *raftLogger) Warningf(format string, v ...interface{}) { l.Warnf(format, v...) }
