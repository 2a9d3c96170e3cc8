package mvcc

import (
	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// recentIndex answers the applier's latest-version lookups for keys whose
// latest version may still be in a Pebble memtable, so that every other
// lookup can skip the memtables.
//
// Why: each put must find the key's latest version (for its create
// revision and version). Seeking a 64 MB memtable skiplist costs several
// microseconds of cache misses per put, about a fifth of the server's CPU
// per put. With this index, a lookup is one map probe, and on a miss one
// seek of an sstables-only iterator (IterOptions.OnlyReadGuaranteedDurable).
//
// Invariant: when the fast path is on, every key with a version in a
// memtable is in m with its latest state. Writes are recorded when their
// apply batch is published, tagged with the batch's last Pebble sequence
// number; an entry may be dropped once storage.DB.FlushedSeqNum reaches its
// tag (the version is then in an sstable, and a durable-only iterator
// created afterwards sees it), and is dropped a few apply batches later at
// most (prunePerBatch). An entry kept longer is still the key's latest
// state: every later write of the key replaces it. Other writers of the
// MVCC keyspace only delete versions that are not a key's latest
// (compaction), or replace the whole state (snapshot installation, which
// resets the index).
//
// What it holds is bounded by the memtables (entries leave when flushed)
// and by maxRecent: past it the index is cleared and the fast path waits for
// a flush. Only metadata is kept, never values.
//
// Applier goroutine only.
type recentIndex struct {
	m    map[string]recentEntry
	fifo []recentRef // in publish order, so in sequence number order
	head int         // fifo[:head] are consumed
	// dirty: writes may be in the memtables that m does not know (at
	// open, after a snapshot install, after a write outside an apply
	// batch). The next published apply batch sets gate.
	dirty bool
	// gate: the fast path is off until the flushed sequence number
	// reaches it (every write before the reset is then in sstables).
	gate uint64
	// flushed reports the flushed sequence number (storage.DB's
	// FlushedSeqNum).
	flushed func() uint64
}

// maxRecent bounds the index (~100 B per entry, ~6 MiB in all, more
// with GOGC headroom). Past it the memtables are flushed early: with
// unique keys that happens after ~40 MiB of a 64 MiB memtable.
const maxRecent = 1 << 16

type recentEntry struct {
	seq                         uint64
	create, mod, version, lease int64
	deleted                     bool
}

type recentRef struct {
	seq uint64
	key string
}

func newRecentIndex(flushed func() uint64) *recentIndex {
	return &recentIndex{m: make(map[string]recentEntry), dirty: true, flushed: flushed}
}

// reset forgets everything; the fast path stays off until gate is set and
// flushed.
func (r *recentIndex) reset() {
	clear(r.m)
	r.fifo, r.head = r.fifo[:0], 0
	r.dirty = true
}

// prunePerBatch bounds the entries one usable call retires. A flush of
// 64 MiB of memtables makes ~64k entries retirable at once; retiring them
// in one go held the applier for 70-90 ms (a runtime trace of a leader
// during the stall that took txn-put c100's p99 past etcd's), and every
// write in the cluster waited. An entry kept past its flush is still the
// key's latest state (a newer write replaces it), so retiring late only
// delays the memory it frees.
const prunePerBatch = 2048

// usable retires (a bounded number of) entries that flushes have made
// visible in sstables and reports whether the fast path may be used for
// the next apply batch.
func (r *recentIndex) usable() bool {
	if r.dirty {
		return false
	}
	flushed := r.flushed()
	for n := 0; n < prunePerBatch && r.head < len(r.fifo) && r.fifo[r.head].seq <= flushed; n++ {
		ref := r.fifo[r.head]
		if e, ok := r.m[ref.key]; ok && e.seq == ref.seq {
			delete(r.m, ref.key)
		}
		r.fifo[r.head] = recentRef{}
		r.head++
	}
	if r.head > 1024 && r.head*2 > len(r.fifo) {
		n := copy(r.fifo, r.fifo[r.head:])
		clear(r.fifo[n:])
		r.fifo, r.head = r.fifo[:n], 0
	}
	return flushed >= r.gate
}

// published records the writes of an apply batch committed with sequence
// numbers up to seq (overlay: key -> new latest version, nil if deleted).
func (r *recentIndex) published(db *pebble.DB, seq uint64, overlay map[string]*mvccpb.KeyValue) {
	if r.dirty || len(r.m)+len(overlay) > maxRecent {
		// Everything written so far has a sequence number <= seq: once a
		// flush covers seq, no memtable holds a version m does not know.
		clear(r.m)
		r.fifo, r.head = r.fifo[:0], 0
		r.dirty, r.gate = false, seq
		_, _ = db.AsyncFlush()
	}
	for k, kv := range overlay {
		e := recentEntry{seq: seq, deleted: kv == nil}
		if kv != nil {
			e.create, e.mod, e.version, e.lease = kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease
		}
		r.m[k] = e
		r.fifo = append(r.fifo, recentRef{seq: seq, key: k})
	}
}
