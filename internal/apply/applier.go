package apply

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/cairnkv/cairn/internal/failpoint"
	"github.com/cairnkv/cairn/internal/membership"
	"github.com/cairnkv/cairn/internal/mvcc"
	"github.com/cairnkv/cairn/internal/raftlog"
	"github.com/cairnkv/cairn/internal/raftnode"
	"github.com/cairnkv/cairn/internal/storage/schema"
)

// Result is the outcome of one applied request, handed to its proposer.
type Result struct {
	Resp proto.Message
	Err  error
	// Physical is closed when a compaction has physically finished.
	Physical <-chan struct{}
}

// ErrUnsupported is returned for a request kind this build cannot apply.
var ErrUnsupported = errors.New("apply: request type not supported")

// Config wires an Applier.
type Config struct {
	DB          *pebble.DB
	Store       *mvcc.Store
	RaftStorage *raftlog.Storage
	Cluster     *membership.Cluster
	Leases      Leases
	// Watch receives every batch's changes after they are published.
	Watch Watcher
	// Deliver hands a result to the waiter registered for id, if any.
	Deliver func(id uint64, r Result)
	// CompactLog is called with an applied index up to which the raft log
	// may be discarded.
	CompactLog func(index uint64)
	// SnapshotCount is the number of applied requests between raft log
	// compactions (see logTrim: requests, not merged entries).
	SnapshotCount uint64
	// CatchUpEntries is the number of requests that stay in the log after
	// a compaction, for slow followers.
	CatchUpEntries uint64
	// InstallSnapshot replaces the state with a received snapshot and moves
	// the raft storage to it (see package snapshot). Called on the applier
	// goroutine, after every earlier entry has been applied.
	InstallSnapshot func(snap *raftpb.Snapshot) error
}

// Watcher is the consumer of applied changes (watch.Hub).
type Watcher interface {
	// Wants reports whether anyone watches (changes are gathered as
	// events only then) and whether anyone wants previous versions.
	Wants() (events, prevKV bool)
	// Notify hands over the changes up to rev; collected is false when
	// evs was not gathered and watchers must replay the revision log,
	// withPrev false when PUT events lack their previous versions.
	Notify(rev int64, evs []*mvccpb.Event, collected, withPrev bool)
}

// Applier applies committed entries.
type Applier struct {
	lg  *zap.Logger
	cfg Config

	applied     atomic.Uint64
	appliedTerm atomic.Uint64
	trim        *logTrim // applier goroutine only
	// commitHint is the commit index this applier last recorded (applier
	// goroutine only).
	commitHint uint64

	waitMu  sync.Mutex
	waiters []indexWaiter

	met *metrics
}

type indexWaiter struct {
	index uint64
	ch    chan struct{}
}

type delivery struct {
	id uint64
	r  Result
}

// New loads the applied index from the DB.
func New(lg *zap.Logger, cfg Config) (*Applier, error) {
	if lg == nil {
		lg = zap.NewNop()
	}
	a := &Applier{lg: lg, cfg: cfg, met: newMetrics()}
	index, term, err := readApplied(cfg.DB)
	if err != nil {
		return nil, err
	}
	a.applied.Store(index)
	a.appliedTerm.Store(term)
	a.trim = newLogTrim(cfg.SnapshotCount, cfg.CatchUpEntries, index)
	return a, nil
}

// AppliedIndex returns the last applied (and published) index.
func (a *Applier) AppliedIndex() uint64 { return a.applied.Load() }

// WaitApplied blocks until the applied index reaches index.
func (a *Applier) WaitApplied(ctx context.Context, index uint64) error {
	if a.applied.Load() >= index {
		return nil
	}
	ch := make(chan struct{})
	a.waitMu.Lock()
	if a.applied.Load() >= index {
		a.waitMu.Unlock()
		return nil
	}
	a.waiters = append(a.waiters, indexWaiter{index, ch})
	a.waitMu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (a *Applier) publishApplied(index, term uint64) {
	a.appliedTerm.Store(term)
	a.applied.Store(index)
	a.waitMu.Lock()
	kept := a.waiters[:0]
	for _, w := range a.waiters {
		if w.index <= index {
			close(w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	a.waiters = kept
	a.waitMu.Unlock()
}

// Run applies batches from applyc until it is closed or ctx is done.
func (a *Applier) Run(ctx context.Context, applyc <-chan raftnode.Apply) error {
	for {
		var batch []raftnode.Apply
		select {
		case <-ctx.Done():
			return nil
		case ap, ok := <-applyc:
			if !ok {
				return nil
			}
			batch = append(batch, ap)
		}
		// Everything already queued goes into the same Pebble batch, up to
		// a snapshot, which must come after the entries before it.
		for more := batch[0].Snapshot == nil; more && len(batch) < 64; {
			select {
			case ap, ok := <-applyc:
				if !ok {
					more = false
					break
				}
				batch = append(batch, ap)
				more = ap.Snapshot == nil
			default:
				more = false
			}
		}
		var snap *raftnode.Apply
		if last := batch[len(batch)-1]; last.Snapshot != nil {
			snap = &last
			batch = batch[:len(batch)-1]
		}
		if err := a.applyBatch(batch); err != nil {
			return err
		}
		if snap != nil {
			err := a.installSnapshot(snap.Snapshot)
			snap.Done <- err
			if err != nil {
				return err
			}
		}
	}
}

func (a *Applier) installSnapshot(snap *raftpb.Snapshot) error {
	if a.cfg.InstallSnapshot == nil {
		return errors.New("apply: snapshot installation is not configured")
	}
	if err := a.cfg.InstallSnapshot(snap); err != nil {
		return err
	}
	index, term, err := readApplied(a.cfg.DB)
	if err != nil {
		return err
	}
	if index != snap.GetMetadata().GetIndex() {
		return fmt.Errorf("apply: installed snapshot %d holds applied index %d", snap.GetMetadata().GetIndex(), index)
	}
	a.trim.reset(index)
	if a.cfg.Watch != nil {
		// The state jumped: watchers replay what they missed from the
		// snapshot's revision log, or learn it was compacted.
		a.cfg.Watch.Notify(a.cfg.Store.Rev(), nil, false, false)
	}
	a.publishApplied(index, term)
	return nil
}

func readApplied(r pebble.Reader) (index, term uint64, err error) {
	v, closer, err := r.Get(schema.AppliedKey)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("apply: read applied index: %w", err)
	}
	defer closer.Close()
	if len(v) != 16 {
		return 0, 0, fmt.Errorf("apply: applied index record has %d bytes, want 16", len(v))
	}
	return binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:]), nil
}

func (a *Applier) applyBatch(batch []raftnode.Apply) error {
	start := time.Now()
	reqs, indexed, err := a.decode(batch)
	if err != nil {
		return err
	}
	// Only requests that read through the batch (txns, deletes, puts that
	// keep the old value or lease) need an indexed batch; plain puts find
	// the latest version through the store's overlay, and an unindexed
	// batch spares a second skiplist insert per write.
	var b *pebble.Batch
	if indexed {
		b = a.cfg.DB.NewIndexedBatch()
	} else {
		b = a.cfg.DB.NewBatch()
	}
	defer b.Close()
	var collect, withPrev bool
	if a.cfg.Watch != nil {
		collect, withPrev = a.cfg.Watch.Wants()
	}
	if err := a.cfg.Store.BeginApply(collect, withPrev); err != nil {
		return err
	}
	defer a.cfg.Store.EndApply()
	defer a.endLeaseBatch()
	var (
		deliveries []delivery
		after      []func()
		last, term uint64
		commit     uint64
		requests   uint64 // as etcd counts them for --snapshot-count
	)
	applied := a.applied.Load()
	for _, ap := range batch {
		commit = max(commit, ap.Commit)
		for _, e := range ap.Entries {
			idx := e.GetIndex()
			if idx <= applied {
				continue // already applied before a restart
			}
			if idx != applied+1 && applied != 0 {
				return fmt.Errorf("apply: entry %d follows applied index %d: gap in committed entries", idx, applied)
			}
			switch e.GetType() {
			case raftpb.EntryType_EntryNormal:
				// An entry may carry several requests (raftnode merges
				// proposals); each is its own revision, in order, and
				// the whole entry commits in this batch.
				for _, req := range reqs[idx] {
					deliveries = append(deliveries, a.applyNormal(b, req))
					a.met.count(req)
				}
				requests += uint64(max(1, len(reqs[idx])))
			case raftpb.EntryType_EntryConfChange, raftpb.EntryType_EntryConfChangeV2:
				fns, err := a.applyConfChange(b, e, ap.ConfStates[idx], ap.Rejected[idx])
				if err != nil {
					return err
				}
				after = append(after, fns...)
				requests++
			}
			applied, last, term = idx, idx, e.GetTerm()
		}
	}
	if last == 0 {
		return nil
	}
	if commit > 0 {
		// The hint never moves back: a hint staged earlier stays true
		// (entries up to a commit index are never truncated), and a lower
		// one (an early hand-off's last index after a deferred commit
		// index) must not undo it.
		commit = max(commit, a.commitHint)
		if err := raftlog.StageCommit(b, commit); err != nil {
			return err
		}
		a.commitHint = commit
	}
	a.cfg.Store.StageRev(b)
	rec := binary.BigEndian.AppendUint64(nil, last)
	rec = binary.BigEndian.AppendUint64(rec, term)
	if err := b.Set(schema.AppliedKey, rec, nil); err != nil {
		return err
	}
	// No fsync: the raft log is durable and replays anything lost here.
	failpoint.Hit(failpoint.ApplyBeforeCommit)
	commitStart := time.Now()
	if err := b.Commit(pebble.NoSync); err != nil {
		a.cfg.Store.Abandon()
		return fmt.Errorf("apply: commit batch ending at %d: %w", last, err)
	}
	a.met.backendCommit.Observe(time.Since(commitStart).Seconds())
	if time.Since(start) > slowApply {
		a.met.slowApply.Inc()
	}
	failpoint.Hit(failpoint.ApplyAfterCommit)
	a.cfg.Store.Publish()
	if a.cfg.Watch != nil {
		// Before any result is delivered: a client that saw its write
		// acknowledged and then starts a watch must not get that write.
		evs, collected, withPrev := a.cfg.Store.TakeEvents()
		a.cfg.Watch.Notify(a.cfg.Store.Rev(), evs, collected, withPrev)
	}
	for _, fn := range after {
		fn()
	}
	a.publishApplied(last, term)
	for _, d := range deliveries {
		if a.cfg.Deliver != nil {
			a.cfg.Deliver(d.id, d.r)
		}
	}
	if to, ok := a.trim.applied(last, requests); ok && a.cfg.CompactLog != nil {
		a.cfg.CompactLog(to)
	}
	return nil
}

// decode decodes the normal entries of batch that are not applied yet and
// reports whether any of them needs an indexed batch.
func (a *Applier) decode(batch []raftnode.Apply) (map[uint64][]*pb.InternalRaftRequest, bool, error) {
	applied := a.applied.Load()
	reqs := make(map[uint64][]*pb.InternalRaftRequest)
	indexed := false
	for _, ap := range batch {
		for _, e := range ap.Entries {
			if e.GetIndex() <= applied || e.GetType() != raftpb.EntryType_EntryNormal || len(e.GetData()) == 0 {
				continue
			}
			parts, err := raftnode.Proposals(e.GetData())
			if err != nil {
				return nil, false, fmt.Errorf("apply: entry %d does not decode (corrupt log?): %w", e.GetIndex(), err)
			}
			rs := make([]*pb.InternalRaftRequest, len(parts))
			for i, data := range parts {
				req := &pb.InternalRaftRequest{}
				if err := proto.Unmarshal(data, req); err != nil {
					return nil, false, fmt.Errorf("apply: entry %d does not decode (corrupt log?): %w", e.GetIndex(), err)
				}
				rs[i] = req
				indexed = indexed || readsBatch(req)
			}
			reqs[e.GetIndex()] = rs
		}
	}
	return reqs, indexed, nil
}

// readsBatch reports whether applying req reads keys through the batch:
// deletes and compares do, as do puts that keep the old value or lease;
// plain puts (alone or in a txn without compares) do not.
func readsBatch(req *pb.InternalRaftRequest) bool {
	switch {
	case req.DeleteRange != nil:
		return true
	case req.Put != nil:
		return req.Put.IgnoreValue || req.Put.IgnoreLease
	case req.Txn != nil:
		return txnReadsBatch(req.Txn)
	}
	return false
}

func txnReadsBatch(t *pb.TxnRequest) bool {
	if len(t.Compare) > 0 {
		return true
	}
	for _, ops := range [][]*pb.RequestOp{t.Success, t.Failure} {
		for _, op := range ops {
			switch {
			case op.GetRequestPut() != nil:
				if p := op.GetRequestPut(); p.IgnoreValue || p.IgnoreLease {
					return true
				}
			case op.GetRequestTxn() != nil:
				if txnReadsBatch(op.GetRequestTxn()) {
					return true
				}
			default:
				return true
			}
		}
	}
	return false
}

func (a *Applier) applyNormal(b *pebble.Batch, req *pb.InternalRaftRequest) delivery {
	id := req.ID
	if req.Header != nil && req.Header.ID != 0 {
		id = req.Header.ID
	}
	return delivery{id: id, r: a.applyRequest(b, req)}
}

func (a *Applier) applyRequest(b *pebble.Batch, req *pb.InternalRaftRequest) Result {
	s := a.cfg.Store
	if res, ok := a.applyLease(b, req); ok {
		return res
	}
	switch {
	case req.Put != nil:
		t := s.Write(b)
		resp, err := Put(a.leaseWriter(b, t), a.cfg.Leases, req.Put)
		rev := t.End()
		if err != nil {
			return Result{Err: err}
		}
		resp.Header.Revision = rev
		return Result{Resp: resp}
	case req.DeleteRange != nil:
		t := s.Write(b)
		resp, err := DeleteRange(a.leaseWriter(b, t), req.DeleteRange)
		rev := t.End()
		if err != nil {
			return Result{Err: err}
		}
		resp.Header.Revision = rev
		return Result{Resp: resp}
	case req.Txn != nil:
		t := s.Write(b)
		resp, err := Txn(a.leaseWriter(b, t), a.cfg.Leases, req.Txn)
		if err != nil && t.Changed() {
			// Every client-caused error is caught before the first write;
			// one after it means a broken invariant, and committing half a
			// txn would diverge from the other members. etcd panics here.
			panic(fmt.Sprintf("apply: txn failed after staging writes at revision %d: %v", t.Rev(), err))
		}
		rev := t.End()
		if err != nil {
			return Result{Err: err}
		}
		SetTxnRevision(resp, rev)
		return Result{Resp: resp}
	case req.Compaction != nil:
		ch, err := s.Compact(b, req.Compaction.Revision)
		if err != nil {
			return Result{Err: err}
		}
		return Result{Resp: &pb.CompactionResponse{Header: &pb.ResponseHeader{Revision: s.Write(b).Rev()}}, Physical: ch}
	case req.ClusterMemberAttrSet != nil:
		set := req.ClusterMemberAttrSet
		m, ok := a.cfg.Cluster.Member(set.Member_ID)
		if !ok || set.MemberAttributes == nil {
			return Result{Err: fmt.Errorf("apply: member %x not found", set.Member_ID)}
		}
		m.Name, m.ClientURLs = set.MemberAttributes.Name, set.MemberAttributes.ClientUrls
		if err := membership.StageMember(b, m); err != nil {
			return Result{Err: err}
		}
		// The in-memory view changes with the batch; a later entry in
		// the same batch reading it would see the old value, which only
		// affects this informational record.
		a.cfg.Cluster.SetMember(m)
		return Result{Resp: &pb.MemberUpdateResponse{}}
	}
	return Result{Err: ErrUnsupported}
}

// ConfContext is the JSON context of every conf change Cairn proposes: the
// member record (for adds and updates) and the proposer's request ID, so the
// proposer learns when the change is applied.
type ConfContext struct {
	Member    *membership.Member `json:"member,omitempty"`
	RequestID uint64             `json:"requestID,omitempty"`
}

// applyConfChange records the membership effect of a conf change; one that
// raft's ConfChecker rejected has none, and its proposer gets the reason.
func (a *Applier) applyConfChange(b *pebble.Batch, e *raftpb.Entry, cs *raftpb.ConfState, rejected error) ([]func(), error) {
	var fns []func()
	if cs != nil {
		fn, err := a.cfg.RaftStorage.SetConfState(b, cs)
		if err != nil {
			return nil, err
		}
		fns = append(fns, fn)
	}
	var changes []*raftpb.ConfChangeSingle
	var ctx []byte
	switch e.GetType() {
	case raftpb.EntryType_EntryConfChange:
		cc := &raftpb.ConfChange{}
		if err := proto.Unmarshal(e.GetData(), cc); err != nil {
			return nil, fmt.Errorf("apply: conf change %d: %w", e.GetIndex(), err)
		}
		changes = append(changes, &raftpb.ConfChangeSingle{Type: cc.Type, NodeId: cc.NodeId})
		ctx = cc.GetContext()
	default:
		cc := &raftpb.ConfChangeV2{}
		if err := proto.Unmarshal(e.GetData(), cc); err != nil {
			return nil, fmt.Errorf("apply: conf change %d: %w", e.GetIndex(), err)
		}
		changes, ctx = cc.GetChanges(), cc.GetContext()
	}
	var cctx ConfContext
	if len(ctx) > 0 {
		if err := json.Unmarshal(ctx, &cctx); err != nil {
			return nil, fmt.Errorf("apply: conf change %d context: %w", e.GetIndex(), err)
		}
	}
	if rejected != nil {
		changes = nil
	}
	for _, ch := range changes {
		id := ch.GetNodeId()
		switch ch.GetType() {
		case raftpb.ConfChangeType_ConfChangeAddNode, raftpb.ConfChangeType_ConfChangeAddLearnerNode:
			learner := ch.GetType() == raftpb.ConfChangeType_ConfChangeAddLearnerNode
			m, ok := a.cfg.Cluster.Member(id)
			if ok {
				m.IsLearner = learner // promotion (or a repeated add)
			} else {
				if cctx.Member == nil || cctx.Member.ID != id {
					return nil, fmt.Errorf("apply: conf change %d adds member %x without its record", e.GetIndex(), id)
				}
				m = *cctx.Member
				m.IsLearner = learner
				sort.Strings(m.PeerURLs)
			}
			if err := membership.StageMember(b, m); err != nil {
				return nil, err
			}
			fns = append(fns, func() { a.cfg.Cluster.SetMember(m) })
		case raftpb.ConfChangeType_ConfChangeRemoveNode:
			if err := membership.StageRemoveMember(b, id); err != nil {
				return nil, err
			}
			fns = append(fns, func() { a.cfg.Cluster.RemoveMember(id) })
		case raftpb.ConfChangeType_ConfChangeUpdateNode:
			m, ok := a.cfg.Cluster.Member(id)
			if !ok || cctx.Member == nil {
				continue
			}
			m.PeerURLs = append([]string(nil), cctx.Member.PeerURLs...)
			sort.Strings(m.PeerURLs)
			if err := membership.StageMember(b, m); err != nil {
				return nil, err
			}
			fns = append(fns, func() { a.cfg.Cluster.SetMember(m) })
		}
	}
	if cctx.RequestID != 0 {
		fns = append(fns, func() {
			if a.cfg.Deliver != nil {
				a.cfg.Deliver(cctx.RequestID, Result{Err: rejected})
			}
		})
	}
	return fns, nil
}
