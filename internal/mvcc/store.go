package mvcc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.uber.org/zap"

	"github.com/cairnkv/cairn/internal/storage"
	"github.com/cairnkv/cairn/internal/storage/schema"
)

// Errors returned to clients (mapped to rpctypes in package api).
var (
	ErrCompacted = errors.New("mvcc: required revision has been compacted")
	ErrFutureRev = errors.New("mvcc: required revision is a future revision")
)

// Store is the MVCC key-value state of one member.
type Store struct {
	lg *zap.Logger
	db *pebble.DB

	// writeRev and writeCompact are the revision and scheduled compaction
	// revision including staged but unpublished writes. Only the applier
	// goroutine touches them.
	writeRev     int64
	writeCompact int64

	// mu guards the published view: what readers may see.
	mu struct {
		sync.RWMutex
		rev        int64 // current revision
		compactRev int64 // reads below it get ErrCompacted
	}

	compactor *compactor
	// apply is set between BeginApply and EndApply (applier goroutine only).
	apply *applyState
	// recent indexes the latest versions that may be in memtables
	// (applier goroutine only).
	recent *recentIndex
	// iters are iterators for reads at the published revision.
	iters iterPool
}

// NewStore loads the revision state from sdb.
func NewStore(lg *zap.Logger, sdb *storage.DB) (*Store, error) {
	if lg == nil {
		lg = zap.NewNop()
	}
	db := sdb.DB
	s := &Store{lg: lg, db: db, recent: newRecentIndex(sdb.FlushedSeqNum)}
	rev, err := readInt64(db, schema.RevisionKey)
	if err != nil {
		return nil, err
	}
	if rev == 0 {
		// Compat: an empty etcd store is at revision 1; the first write
		// makes revision 2.
		rev = 1
	}
	compact, err := readInt64(db, schema.ScheduledCompactKey)
	if err != nil {
		return nil, err
	}
	// Read only by the background compactor, but a damaged record must
	// stop the start, not a compaction hours later.
	if _, err := readInt64(db, schema.FinishedCompactKey); err != nil {
		return nil, err
	}
	s.writeRev, s.writeCompact = rev, compact
	s.mu.rev, s.mu.compactRev = rev, compact
	s.iters.rev = rev
	s.compactor = newCompactor(lg, db, compact)
	return s, nil
}

func readInt64(r pebble.Reader, key []byte) (int64, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("mvcc: read %q: %w", key, err)
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("mvcc: meta key %q has %d bytes, want 8: %w", key, len(v), errBadRecord)
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

// Rev returns the current (published) revision.
func (s *Store) Rev() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.mu.rev
}

// CompactRev returns the revision the store is compacted to.
func (s *Store) CompactRev() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.mu.compactRev
}

// RangeOptions select what Range returns.
type RangeOptions struct {
	// Limit caps the number of KVs returned; 0 means no limit. Count is
	// always the number of keys in the whole range.
	Limit int64
	// Rev is the revision to read at; <= 0 means the current revision.
	Rev int64
	// CountOnly returns no KVs, only Count.
	CountOnly bool
	// KeysOnly omits values.
	KeysOnly bool
}

// RangeResult is what Range returns.
type RangeResult struct {
	KVs []*mvccpb.KeyValue
	// Rev is the store's current revision when the read was served.
	Rev int64
	// Count is the number of keys in the range at the read revision.
	Count int64
}

// Range reads keys in [key, end) at a revision (see the etcd range rules:
// empty end = the single key, end "\x00" = every key >= key).
func (s *Store) Range(key, end []byte, o RangeOptions) (*RangeResult, error) {
	bounds := rangeBounds(key, end)
	s.mu.RLock()
	cur, compact := s.mu.rev, s.mu.compactRev
	// The iterator is a consistent snapshot of everything committed so far,
	// which includes at least revision cur: a fresh one, or one opened
	// after revision cur was published (see iterPool).
	it := s.iters.get(cur)
	var err error
	if it == nil {
		it, err = s.db.NewIter(bounds)
	} else {
		it.SetBounds(bounds.LowerBound, bounds.UpperBound)
	}
	s.mu.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("mvcc: new iterator: %w", err)
	}
	res, err := rangeIter(it, key, cur, compact, o)
	s.iters.put(cur, it)
	return res, err
}

// Close releases what the store holds open in the DB (pooled iterators);
// call it before closing the DB. Reads after Close still work.
func (s *Store) Close() { s.iters.reset(-1) }

// iterPool keeps the iterators of finished reads for reuse by reads at
// the same revision. Opening a Pebble iterator (one level iterator per
// level, a large stack frame that makes fresh handler goroutines grow their
// stacks) was ~15% of a linearizable read's CPU. An iterator opened after
// revision R was published sees every version <= R (and maybe newer ones,
// which reads skip), so it serves any later read at R. The pool is emptied
// when the revision moves, so it never pins old memtables or sstables for
// long.
type iterPool struct {
	mu  sync.Mutex
	rev int64
	its []*pebble.Iterator
}

const maxPooledIters = 64

// get returns a pooled iterator valid for reads at rev, or nil.
func (p *iterPool) get(rev int64) *pebble.Iterator {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rev != rev || len(p.its) == 0 {
		return nil
	}
	it := p.its[len(p.its)-1]
	p.its[len(p.its)-1] = nil
	p.its = p.its[:len(p.its)-1]
	return it
}

// put returns it, opened for (or reused at) revision rev, to the pool.
func (p *iterPool) put(rev int64, it *pebble.Iterator) {
	p.mu.Lock()
	if p.rev == rev && len(p.its) < maxPooledIters {
		p.its = append(p.its, it)
		it = nil
	}
	p.mu.Unlock()
	if it != nil {
		_ = it.Close()
	}
}

// reset closes the pooled iterators and makes the pool serve rev (-1:
// none, until the next reset).
func (p *iterPool) reset(rev int64) {
	p.mu.Lock()
	its := p.its
	p.its, p.rev = nil, rev
	p.mu.Unlock()
	for _, it := range its {
		_ = it.Close()
	}
}

func rangeIter(it *pebble.Iterator, key []byte, cur, compact int64, o RangeOptions) (*RangeResult, error) {
	rev := o.Rev
	if rev <= 0 {
		rev = cur
	}
	if rev > cur {
		return nil, ErrFutureRev
	}
	if rev < compact {
		return nil, ErrCompacted
	}
	res := &RangeResult{Rev: cur}
	err := scan(it, keyStart(key), rev, func(enc []byte, main int64, val []byte) (bool, error) {
		if o.CountOnly || (o.Limit > 0 && int64(len(res.KVs)) >= o.Limit) {
			// Only count: the flags byte says whether it is a tombstone.
			if len(val) == 0 {
				return false, errBadRecord
			}
			if val[0] != flagTombstone {
				res.Count++
			}
			return true, nil
		}
		kv, err := toKV(enc, main, val, !o.KeysOnly)
		if err != nil || kv == nil {
			return err == nil, err
		}
		res.Count++
		res.KVs = append(res.KVs, kv)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// toKV builds a KeyValue from a stored version, or nil for a tombstone.
func toKV(enc []byte, main int64, val []byte, withValue bool) (*mvccpb.KeyValue, error) {
	r, err := decodeRecord(val, withValue)
	if err != nil || r.tombstone {
		return nil, err
	}
	key, err := decodeKey(enc)
	if err != nil {
		return nil, err
	}
	kv := &mvccpb.KeyValue{Key: key, CreateRevision: r.create, ModRevision: main, Version: r.version, Lease: r.lease}
	if withValue && len(r.value) > 0 {
		kv.Value = append([]byte(nil), r.value...)
	}
	return kv, nil
}

// rangeBounds returns iterator bounds covering every version of every key in
// the etcd-style range [key, end).
func rangeBounds(key, end []byte) *pebble.IterOptions {
	lower := keyStart(key)
	var upper []byte
	switch {
	case len(end) == 0:
		upper = keyAfter(key)
	case len(end) == 1 && end[0] == 0:
		upper = []byte{schema.MVCC + 1}
	case bytes.Compare(end, key) <= 0:
		upper = lower // empty range
	default:
		upper = keyStart(end)
	}
	return &pebble.IterOptions{LowerBound: lower, UpperBound: upper}
}

// scan calls fn, in key order, with the newest version at or below rev of
// each key within the iterator's bounds, starting at lower. Tombstones are
// passed too (fn decides). enc and val alias iterator memory.
func scan(it *pebble.Iterator, lower []byte, rev int64, fn func(enc []byte, main int64, val []byte) (bool, error)) error {
	var seekBuf, cur []byte
	valid := it.SeekGE(lower)
	for valid {
		enc, main, _, err := splitVersionKey(it.Key())
		if err != nil {
			return fmt.Errorf("%w: %x", err, it.Key())
		}
		if main > rev {
			// Newer than the read revision: jump to this key's newest
			// version at or below rev. ^MaxInt64 is the smallest possible
			// ^sub, so the target sorts before every version at rev.
			seekBuf = append(append(seekBuf[:0], schema.MVCC), enc...)
			seekBuf = appendRevSuffix(seekBuf, rev, math.MaxInt64)
			valid = it.SeekGE(seekBuf)
			continue // re-examine: an older version of this key, or the next key
		}
		val, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		more, err := fn(enc, main, val)
		if err != nil || !more {
			return err
		}
		// Skip the older versions of this key: usually there are none or a
		// few, so step; past a few, seek.
		cur = append(cur[:0], enc...)
		valid = it.Next()
		for steps := 0; valid && sameKey(it.Key(), cur); steps++ {
			if steps == 3 {
				seekBuf = append(append(seekBuf[:0], schema.MVCC), cur...)
				seekBuf[len(seekBuf)-1] = 2
				valid = it.SeekGE(seekBuf)
				break
			}
			valid = it.Next()
		}
	}
	return it.Error()
}

// sameKey reports whether stored version key k belongs to encoded key enc.
func sameKey(k, enc []byte) bool {
	return len(k) == 1+len(enc)+revSuffixLen && bytes.Equal(k[1:1+len(enc)], enc)
}

// ReadView is a consistent read-only view at one revision, for requests
// that read several ranges (read-only txns). Close releases it.
type ReadView struct {
	snap    *pebble.Snapshot
	rev     int64
	compact int64
}

// View opens a ReadView at the current revision.
func (s *Store) View() (*ReadView, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return &ReadView{snap: s.db.NewSnapshot(), rev: s.mu.rev, compact: s.mu.compactRev}, nil
}

// Rev is the revision the view reads at by default.
func (v *ReadView) Rev() int64 { return v.rev }

// Range reads from the view.
func (v *ReadView) Range(key, end []byte, o RangeOptions) (*RangeResult, error) {
	it, err := v.snap.NewIter(rangeBounds(key, end))
	if err != nil {
		return nil, err
	}
	defer it.Close()
	return rangeIter(it, key, v.rev, v.compact, o)
}

// Close releases the view.
func (v *ReadView) Close() { _ = v.snap.Close() }

// Replace runs install, which replaces the whole state in the DB (a
// snapshot installation), and then re-reads the revision state. Readers
// are held off for the duration: a read that started before sees the old
// state at the old revision, one that starts after sees the new state at
// the new revision, and none sees the new data under the old revision (or
// a half-replaced state). Only the applier goroutine may call it.
func (s *Store) Replace(install func() error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// The install writes the memtables behind the recent index's back.
	s.recent.reset()
	// No read may reuse an iterator of the old state, even at an equal
	// revision.
	defer s.iters.reset(-1)
	if err := install(); err != nil {
		return err
	}
	rev, err := readInt64(s.db, schema.RevisionKey)
	if err != nil {
		return err
	}
	if rev == 0 {
		rev = 1
	}
	compact, err := readInt64(s.db, schema.ScheduledCompactKey)
	if err != nil {
		return err
	}
	finished, err := readInt64(s.db, schema.FinishedCompactKey)
	if err != nil {
		return err
	}
	s.writeRev, s.writeCompact = rev, compact
	s.mu.rev, s.mu.compactRev = rev, compact
	s.compactor.reset(finished, compact)
	return nil
}

// CompactRev is the compacted revision the view sees.
func (v *ReadView) CompactRev() int64 { return v.compact }
