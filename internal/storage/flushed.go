package storage

import (
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
)

// flushTracker follows the highest sequence number that flushes have
// moved from memtables into sstables.
type flushTracker struct{ seq atomic.Uint64 }

func (t *flushTracker) flushEnd(info pebble.FlushInfo) {
	if info.Err != nil {
		return
	}
	var top uint64
	for _, o := range info.Output {
		top = max(top, uint64(o.LargestSeqNum))
	}
	for {
		cur := t.seq.Load()
		if top <= cur || t.seq.CompareAndSwap(cur, top) {
			return
		}
	}
}

// FlushedSeqNum returns a sequence number S such that every write with a
// sequence number <= S has left the memtables: an iterator created now
// with IterOptions.OnlyReadGuaranteedDurable (sstables only) sees it. The
// bound is exact at flush boundaries: memtables hold disjoint, increasing
// ranges of sequence numbers and are flushed oldest first, and Pebble
// reports a flush only after the new sstables are visible to iterators.
func (d *DB) FlushedSeqNum() uint64 { return d.flushed.seq.Load() }
