package mvcc

import (
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/cairnkv/cairn/internal/storage/schema"
)

// WriteTxn stages one revision's worth of changes (one Put, one DeleteRange
// or one Txn) into the applier's indexed batch. All changes of a WriteTxn
// share one main revision; each gets its own sub revision. Reads through a
// WriteTxn see the batch, including its own earlier changes, exactly as etcd
// lets a Txn's later ops see its earlier writes.
type WriteTxn struct {
	s       *Store
	b       *pebble.Batch
	begin   int64
	changes int64
	buf     []byte
}

// Write starts a WriteTxn on b, which must be an indexed batch owned by the
// calling applier goroutine. Call End when done.
func (s *Store) Write(b *pebble.Batch) *WriteTxn {
	return &WriteTxn{s: s, b: b, begin: s.writeRev}
}

// Rev is the revision a read in this txn observes.
func (t *WriteTxn) Rev() int64 {
	if t.changes > 0 {
		return t.begin + 1
	}
	return t.begin
}

// Range reads through the batch at Rev().
func (t *WriteTxn) Range(key, end []byte, o RangeOptions) (*RangeResult, error) {
	it, err := t.b.NewIter(rangeBounds(key, end))
	if err != nil {
		return nil, fmt.Errorf("mvcc: new batch iterator: %w", err)
	}
	defer it.Close()
	res, err := rangeIter(it, key, t.Rev(), t.s.writeCompact, o)
	if err != nil {
		return nil, err
	}
	return res, nil
}

// latest returns the newest live version of key, or nil. Without
// needValue the returned version may lack its value.
func (t *WriteTxn) latest(key []byte, needValue bool) (*mvccpb.KeyValue, error) {
	if a := t.s.apply; a != nil {
		// Fast path: a key written earlier in this apply batch is in the
		// overlay; any other key is read from the DB as of the start of
		// the batch, through iterators reused for the whole batch
		// (creating a batch iterator per put cost ~12% of the put path).
		if kv, ok := a.overlay[string(key)]; ok {
			return kv, nil
		}
		if a.durable != nil {
			// Keys that may have a version in a memtable are in the
			// recent index; for all others the sstables are enough.
			e, ok := t.s.recent.m[string(key)]
			switch {
			case !ok:
				return latestIn(a.durable, key)
			case e.deleted:
				return nil, nil
			case !needValue:
				return &mvccpb.KeyValue{Key: key, CreateRevision: e.create, ModRevision: e.mod, Version: e.version, Lease: e.lease}, nil
			}
		}
		it, err := a.fullIter(t.s.db)
		if err != nil {
			return nil, err
		}
		return latestIn(it, key)
	}
	it, err := t.b.NewIter(rangeBounds(key, nil))
	if err != nil {
		return nil, fmt.Errorf("mvcc: new batch iterator: %w", err)
	}
	defer it.Close()
	if !it.First() {
		return nil, it.Error()
	}
	enc, main, _, err := splitVersionKey(it.Key())
	if err != nil {
		return nil, err
	}
	val, err := it.ValueAndErr()
	if err != nil {
		return nil, err
	}
	return toKV(enc, main, val, true)
}

// Put writes a new version of key and returns the previous live version (nil
// if none).
func (t *WriteTxn) Put(key, value []byte, lease int64) (*mvccpb.KeyValue, error) {
	return t.put(key, value, lease, true)
}

// PutMeta is Put for callers that read only the previous version's
// metadata (revisions, version, lease): its Value may be missing, which
// spares a memtable seek for a recently written key.
func (t *WriteTxn) PutMeta(key, value []byte, lease int64) (*mvccpb.KeyValue, error) {
	return t.put(key, value, lease, false)
}

func (t *WriteTxn) put(key, value []byte, lease int64, prevValue bool) (*mvccpb.KeyValue, error) {
	a := t.s.apply
	collect := a != nil && a.collect
	// The previous value is read for an event only if a watcher wants
	// it (etcdctl watch --prev-kv, clientv3 WithPrevKV; Kubernetes'
	// apiserver does): a value not in the memtables costs a seek through
	// every level. With such a watcher it is read once per put, however
	// many watchers want it (etcd reads it per event per watcher).
	withPrev := collect && a.withPrev
	prev, err := t.latest(key, prevValue || withPrev)
	if err != nil {
		return nil, err
	}
	rev := t.begin + 1
	r := record{create: rev, version: 1, lease: lease, value: value}
	if prev != nil {
		r.create, r.version = prev.CreateRevision, prev.Version+1
	}
	if kv := t.stage(key, r); kv != nil && collect {
		ev := &mvccpb.Event{Type: mvccpb.Event_PUT, Kv: kv}
		if withPrev {
			ev.PrevKv = prev
		}
		a.events = append(a.events, ev)
	}
	return prev, nil
}

// DeleteRange deletes every live key in [key, end) and returns the deleted
// versions in key order.
func (t *WriteTxn) DeleteRange(key, end []byte) ([]*mvccpb.KeyValue, error) {
	res, err := t.Range(key, end, RangeOptions{})
	if err != nil {
		return nil, err
	}
	rev := t.begin + 1
	for _, kv := range res.KVs {
		t.stage(kv.Key, record{tombstone: true})
		if a := t.s.apply; a != nil && a.collect {
			a.events = append(a.events, &mvccpb.Event{Type: mvccpb.Event_DELETE, Kv: &mvccpb.KeyValue{Key: kv.Key, ModRevision: rev}, PrevKv: kv})
		}
	}
	return res.KVs, nil
}

// stage writes one version of key. During an apply batch it returns the new
// live version (nil for a tombstone), which the overlay and events share.
func (t *WriteTxn) stage(key []byte, r record) *mvccpb.KeyValue {
	rev, sub := t.begin+1, t.changes
	var kv *mvccpb.KeyValue
	if a := t.s.apply; a != nil {
		if !r.tombstone {
			kv = &mvccpb.KeyValue{Key: key, CreateRevision: r.create, ModRevision: rev, Version: r.version, Lease: r.lease, Value: r.value}
		}
		a.overlay[string(key)] = kv
		a.batch = t.b
	} else {
		// The recent index cannot know this write (see recentIndex).
		t.s.recent.dirty = true
	}
	t.buf = versionKey(t.buf[:0], key, rev, sub)
	val := appendRecord(make([]byte, 0, len(r.value)+16), r)
	must(t.b.Set(t.buf, val, nil))
	must(t.b.Set(revLogKey(rev, sub), key, nil))
	t.changes++
	return kv
}

// End closes the txn and returns the store revision after it.
func (t *WriteTxn) End() int64 {
	if t.changes > 0 {
		t.s.writeRev = t.begin + 1
		if a := t.s.apply; a != nil {
			// Once per apply batch, in StageRev: a Set per txn was a
			// third of a put's MVCC writes, each a memtable insert that
			// is flushed and compacted for nothing.
			a.revPending = true
		} else {
			must(t.b.Set(schema.RevisionKey, binary.BigEndian.AppendUint64(nil, uint64(t.s.writeRev)), nil))
		}
	}
	return t.s.writeRev
}

// Compact schedules compaction at rev in batch b: from the moment b is
// published, reads below rev fail with ErrCompacted and the background
// compactor starts removing superseded versions. The returned channel is
// closed once they are physically gone.
func (s *Store) Compact(b *pebble.Batch, rev int64) (<-chan struct{}, error) {
	if rev <= s.writeCompact {
		return nil, ErrCompacted
	}
	if rev > s.writeRev {
		return nil, ErrFutureRev
	}
	s.writeCompact = rev
	must(b.Set(schema.ScheduledCompactKey, binary.BigEndian.AppendUint64(nil, uint64(rev)), nil))
	return s.compactor.wait(rev), nil
}

// StageRev writes the store revision that the apply batch's txns reached
// into b, once for the whole batch. Call it after the batch's last txn and
// before committing b; Publish refuses a batch committed without it.
// Applier goroutine only.
func (s *Store) StageRev(b *pebble.Batch) {
	if a := s.apply; a != nil && a.revPending {
		must(b.Set(schema.RevisionKey, binary.BigEndian.AppendUint64(nil, uint64(s.writeRev)), nil))
		a.revPending = false
	}
}

// Publish makes everything staged so far visible to readers. The applier
// calls it after the batch holding the staged writes is committed.
func (s *Store) Publish() {
	if a := s.apply; a != nil && a.revPending {
		// The batch is committed without its revision: a restart would
		// reuse revisions. A caller's bug, never input's.
		panic("mvcc: apply batch published without StageRev")
	}
	if a := s.apply; a != nil && a.batch != nil {
		// The batch is committed: its sequence numbers are known.
		b := a.batch
		s.recent.published(s.db, uint64(b.SeqNum())+uint64(b.Count())-1, a.overlay)
		a.batch = nil
	}
	s.mu.Lock()
	moved := s.mu.rev != s.writeRev
	s.mu.rev = s.writeRev
	compacted := s.writeCompact > s.mu.compactRev
	s.mu.compactRev = s.writeCompact
	s.mu.Unlock()
	if moved {
		s.iters.reset(s.writeRev)
	}
	if compacted {
		s.compactor.schedule(s.writeCompact)
	}
}

// Abandon forgets staged writes after the applier discarded its batch.
func (s *Store) Abandon() {
	s.recent.reset()
	s.mu.RLock()
	s.writeRev, s.writeCompact = s.mu.rev, s.mu.compactRev
	s.mu.RUnlock()
}

// must panics on a batch staging error: staging into an in-memory batch can
// only fail on a broken invariant (such as a closed batch).
func must(err error) {
	if err != nil {
		panic(fmt.Sprintf("mvcc: staging into batch: %v", err))
	}
}

// CompactRev is the compacted revision as this txn sees it.
func (t *WriteTxn) CompactRev() int64 { return t.s.writeCompact }

// Changed reports whether the txn staged any change.
func (t *WriteTxn) Changed() bool { return t.changes > 0 }

// applyState is the applier's per-batch read state (see BeginApply).
type applyState struct {
	// full reads the whole DB (memtables and sstables); opened on first
	// use. durable reads only sstables; set when the recent index covers
	// the memtables (see recentIndex).
	full, durable *pebble.Iterator
	overlay       map[string]*mvccpb.KeyValue // nil value: deleted in this batch
	// batch is the batch the writes are staged in, once there is one.
	batch *pebble.Batch
	// revPending: a txn of the batch moved the revision, and StageRev
	// has not written it yet.
	revPending bool
	// collect asks for the batch's changes as watch events, in revision
	// order; it is off when nobody watches, to spare the allocations.
	// withPrev asks for PUT events to carry the previous version too.
	collect, withPrev bool
	events            []*mvccpb.Event
}

func mvccBounds() *pebble.IterOptions {
	return &pebble.IterOptions{LowerBound: []byte{schema.MVCC}, UpperBound: []byte{schema.MVCC + 1}}
}

func (a *applyState) fullIter(db *pebble.DB) (*pebble.Iterator, error) {
	if a.full == nil {
		it, err := db.NewIter(mvccBounds())
		if err != nil {
			return nil, err
		}
		a.full = it
	}
	return a.full, nil
}

// BeginApply prepares the fast latest-version lookup for one apply batch:
// the DB cannot change under the applier during a batch (only the applier
// writes live versions), so iterators opened now serve every lookup, and
// keys written in the batch are answered from an overlay. Call EndApply
// after the batch is committed or abandoned, and Publish after a commit.
// With collect set, the batch's changes are gathered as watch events (see
// TakeEvents); with withPrev too, PUT events carry the version they
// replace (DELETE events always do). Applier goroutine only.
func (s *Store) BeginApply(collect, withPrev bool) error {
	a := &applyState{overlay: make(map[string]*mvccpb.KeyValue), collect: collect, withPrev: withPrev}
	if s.recent.usable() {
		o := mvccBounds()
		o.OnlyReadGuaranteedDurable = true
		it, err := s.db.NewIter(o)
		if err != nil {
			return err
		}
		a.durable = it
	}
	s.apply = a
	return nil
}

// TakeEvents returns the events gathered since BeginApply, whether they
// were gathered at all, and whether their PUTs carry previous versions.
// Applier goroutine only.
func (s *Store) TakeEvents() (evs []*mvccpb.Event, collected, withPrev bool) {
	if s.apply == nil || !s.apply.collect {
		return nil, false, false
	}
	evs = s.apply.events
	s.apply.events = nil
	return evs, true, s.apply.withPrev
}

// EndApply releases what BeginApply set up.
func (s *Store) EndApply() {
	if a := s.apply; a != nil {
		if a.full != nil {
			_ = a.full.Close()
		}
		if a.durable != nil {
			_ = a.durable.Close()
		}
		if a.batch != nil {
			// Staged but never published (abandoned or failed).
			s.recent.reset()
		}
		s.apply = nil
	}
}

// latestIn returns the newest live version of key in it, or nil.
func latestIn(it *pebble.Iterator, key []byte) (*mvccpb.KeyValue, error) {
	start := keyStart(key)
	if !it.SeekGE(start) {
		return nil, it.Error()
	}
	k := it.Key()
	if !sameKey(k, start[1:]) {
		return nil, nil
	}
	enc, main, _, err := splitVersionKey(k)
	if err != nil {
		return nil, err
	}
	val, err := it.ValueAndErr()
	if err != nil {
		return nil, err
	}
	return toKV(enc, main, val, true)
}
