package mvcc

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"go.uber.org/zap"

	"github.com/cairnkv/cairn/internal/failpoint"
	"github.com/cairnkv/cairn/internal/storage/schema"
)

// compactBatchKeys bounds the work of one compaction batch so that a large
// compaction never holds the write path for long (etcd pain point: multi-
// second compaction spikes).
const compactBatchKeys = 1000

// compactor physically removes versions superseded at or before the
// scheduled compaction revision. Only keys written since the previous
// compaction can hold newly superseded versions, and the revision log names
// them, so its cost follows the write rate, not the size of the data.
//
// Crash safety: the scheduled revision is recorded by the applier; the
// finished revision is recorded after the last batch. Every step is
// idempotent, so after a crash the work is redone from the finished mark.
type compactor struct {
	lg *zap.Logger
	db *pebble.DB

	mu struct {
		sync.Mutex
		target   int64 // highest scheduled revision
		finished int64 // physically compacted up to here
		waiters  []compactWaiter
		kick     chan struct{}
	}
}

type compactWaiter struct {
	rev int64
	ch  chan struct{}
}

func newCompactor(lg *zap.Logger, db *pebble.DB, scheduled int64) *compactor {
	c := &compactor{lg: lg, db: db}
	c.mu.target = scheduled
	c.mu.kick = make(chan struct{}, 1)
	finished, err := readInt64(db, schema.FinishedCompactKey)
	if err != nil {
		lg.Warn("cannot read finished compaction mark; redoing compaction", zap.Error(err))
	}
	c.mu.finished = finished
	if finished < scheduled {
		c.mu.kick <- struct{}{}
	}
	return c
}

func (c *compactor) schedule(rev int64) {
	c.mu.Lock()
	if rev > c.mu.target {
		c.mu.target = rev
	}
	c.mu.Unlock()
	select {
	case c.mu.kick <- struct{}{}:
	default:
	}
}

// wait returns a channel closed once compaction up to rev is physical.
func (c *compactor) wait(rev int64) <-chan struct{} {
	ch := make(chan struct{})
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.finished >= rev {
		close(ch)
		return ch
	}
	c.mu.waiters = append(c.mu.waiters, compactWaiter{rev, ch})
	return ch
}

// RunCompactor runs physical compaction until ctx is done. The server owns
// the goroutine that calls it.
func (s *Store) RunCompactor(ctx context.Context) {
	c := s.compactor
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.mu.kick:
		}
		c.mu.Lock()
		from, to := c.mu.finished, c.mu.target
		c.mu.Unlock()
		if to <= from {
			continue
		}
		if err := c.compact(ctx, from, to); err != nil {
			if ctx.Err() == nil {
				c.lg.Error("compaction failed", zap.Int64("revision", to), zap.Error(err))
			}
			continue
		}
		c.mu.Lock()
		c.mu.finished = to
		kept := c.mu.waiters[:0]
		for _, w := range c.mu.waiters {
			if w.rev <= to {
				close(w.ch)
			} else {
				kept = append(kept, w)
			}
		}
		c.mu.waiters = kept
		c.mu.Unlock()
		c.lg.Info("finished scheduled compaction", zap.Int64("compact-revision", to))
	}
}

// compact removes, for every key written at revisions in [from, to], all
// versions older than its newest version at or below to, and that newest
// version too if it is a tombstone below to; then the revision log below to.
func (c *compactor) compact(ctx context.Context, from, to int64) error {
	lo := revLogKey(from, 0)
	hi := revLogKey(to+1, 0)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		next, done, err := c.compactBatch(lo, hi, to)
		if err != nil {
			return err
		}
		failpoint.Hit(failpoint.CompactAfterBatch)
		if done {
			break
		}
		lo = next
	}
	failpoint.Hit(failpoint.CompactBeforeFinish)
	b := c.db.NewBatch()
	defer b.Close()
	// The revision log at exactly `to` stays: a watch may start at the
	// compacted revision itself.
	if err := b.DeleteRange(revLogKey(0, 0), revLogKey(to, 0), nil); err != nil {
		return err
	}
	if err := b.Set(schema.FinishedCompactKey, binary.BigEndian.AppendUint64(nil, uint64(to)), nil); err != nil {
		return err
	}
	return b.Commit(pebble.NoSync)
}

// compactBatch handles up to compactBatchKeys revision-log entries starting
// at lo and returns where to continue.
func (c *compactor) compactBatch(lo, hi []byte, to int64) (next []byte, done bool, err error) {
	it, err := c.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, false, err
	}
	defer it.Close()
	seen := make(map[string]struct{})
	var keys [][]byte
	n := 0
	for valid := it.First(); valid; valid = it.Next() {
		if n == compactBatchKeys {
			next = append([]byte(nil), it.Key()...)
			break
		}
		n++
		if _, ok := seen[string(it.Value())]; ok {
			continue
		}
		seen[string(it.Value())] = struct{}{}
		keys = append(keys, append([]byte(nil), it.Value()...))
	}
	if err := it.Error(); err != nil {
		return nil, false, err
	}
	b := c.db.NewBatch()
	defer b.Close()
	for _, k := range keys {
		if err := compactKey(c.db, b, k, to); err != nil {
			return nil, false, err
		}
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return nil, false, err
	}
	return next, next == nil, nil
}

func compactKey(db *pebble.DB, b *pebble.Batch, key []byte, to int64) error {
	it, err := db.NewIter(rangeBounds(key, nil))
	if err != nil {
		return err
	}
	defer it.Close()
	seek := appendRevSuffix(keyStart(key), to, math.MaxInt64)
	first := true
	for valid := it.SeekGE(seek); valid; valid = it.Next() {
		_, main, _, err := splitVersionKey(it.Key())
		if err != nil {
			return fmt.Errorf("%w: %x", err, it.Key())
		}
		if first {
			first = false
			// The newest version at or below `to` survives unless it is
			// a tombstone strictly below `to`.
			val, err := it.ValueAndErr()
			if err != nil {
				return err
			}
			if !(main < to && bytes.Equal(val, []byte{flagTombstone})) {
				continue
			}
		}
		if err := b.Delete(it.Key(), nil); err != nil {
			return err
		}
	}
	return it.Error()
}

// reset points the compactor at a replaced state.
func (c *compactor) reset(finished, target int64) {
	c.mu.Lock()
	c.mu.finished, c.mu.target = finished, target
	c.mu.Unlock()
	if finished < target {
		select {
		case c.mu.kick <- struct{}{}:
		default:
		}
	}
}
