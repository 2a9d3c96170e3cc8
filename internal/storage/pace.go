package storage

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Pebble's flushes and compactions are paced: after each slice of work a
// job sleeps for pauseRatio times as long, so one job takes at most
// 1/(1+pauseRatio) of a core (a fifth).
//
// Why: a flush or an L0 compaction is a lump of CPU (tenths of a second)
// that a Go scheduler runs to the end of its time slice on one of the
// process's Ps, and on a small machine running several members it lands
// on every member at once (they apply the same log, so they fill their
// memtables together). Requests queued behind it make the benchmark's p99
// (docs/benchmarks.md, "Session 7"). Spread over five times the wall
// time, the same work takes a fifth of the share from requests, which a
// closed-loop client sees as a little slower for a second or two instead
// of twice as slow for a third of one. Nothing is lost: the work is the same,
// and the write path does not wait for it while memtables are free.
//
// Pacing stops while Pebble is behind (memtables queued for flushing, L0
// growing, a write stall), so that it never turns into a write stall of
// its own.
const (
	paceSlice = 2 * time.Millisecond
	// pauseRatio: a job's pause per unit of work. 2, 4 and 8 were
	// measured; 4 gave the lowest and steadiest p99 (docs/benchmarks.md).
	pauseRatio = 4
	// paceCheckEvery bounds how often the pacer reads Pebble's metrics.
	paceCheckEvery = 50 * time.Millisecond
	// Behind: memtables of more bytes than three full ones (the mutable
	// one, one flushing, one queued; writes stall at four queued), or an
	// L0 twice as deep as the compaction threshold. In bytes, not in
	// memtables: a new DB's memtables start at 256 KiB and double, so its
	// first 64 MiB flush takes eight of them at once, and that one is
	// the flush that lands on every member together.
	paceMaxMemBytes    = 3 * memTableBytes
	paceMaxL0Sublevels = 8
)

// pacer decides whether background jobs pause. Shared by every file the
// paced FS creates.
type pacer struct {
	ratio   int64
	slice   time.Duration // paceSlice but in tests
	db      atomic.Pointer[pebble.DB]
	stalled atomic.Bool
	// held counts callers waiting on a compaction they asked for
	// (DB.CompactUnpaced); nothing is paced while it is non-zero.
	held atomic.Int32
	// now and sleep are time.Now and time.Sleep but in tests.
	now   func() time.Time
	sleep func(time.Duration)

	mu       sync.Mutex
	checked  time.Time
	behindAt bool
}

func newPacer(ratio int64) *pacer {
	return &pacer{ratio: ratio, slice: paceSlice, now: time.Now, sleep: time.Sleep}
}

func (p *pacer) writeStallBegin(pebble.WriteStallBeginInfo) { p.stalled.Store(true) }
func (p *pacer) writeStallEnd()                             { p.stalled.Store(false) }

// behind reports whether Pebble is behind on flushes or L0 compactions,
// or someone waits for a compaction: then jobs run at full speed.
func (p *pacer) behind(now time.Time) bool {
	if p.stalled.Load() || p.held.Load() > 0 {
		return true
	}
	db := p.db.Load()
	if db == nil {
		return true // opening: replay and recovery run unpaced
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if now.Sub(p.checked) < paceCheckEvery {
		return p.behindAt
	}
	p.checked = now
	p.behindAt = behindOf(db.Metrics())
	return p.behindAt
}

// behindOf reports whether m shows a flush or L0 backlog.
func behindOf(m *pebble.Metrics) bool {
	return m.MemTable.Size > paceMaxMemBytes || m.Levels[0].Sublevels >= paceMaxL0Sublevels
}

// pacedFS creates the sstables of flushes and compactions as paced files.
type pacedFS struct {
	vfs.FS
	p *pacer
}

func (fs pacedFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, category)
	if err != nil || fs.p.ratio == 0 {
		return f, err
	}
	switch category {
	case "pebble-memtable-flush", "pebble-compaction":
		return &pacedFile{File: f, p: fs.p}, nil
	}
	return f, nil
}

// pacedFile measures the work between its writes (the job building the
// next block) and pauses after every paceSlice of it. One job writes one
// file at a time, so the file's time is the job's. (Pebble's table writer
// may hand data blocks to a writer goroutine over an unbuffered channel;
// a pause there holds the job at its next block all the same.)
type pacedFile struct {
	vfs.File
	p    *pacer
	last time.Time
	work time.Duration
}

func (f *pacedFile) Write(b []byte) (int, error) {
	n, err := f.File.Write(b)
	now := f.p.now()
	if !f.last.IsZero() {
		f.work += now.Sub(f.last)
	}
	if f.work >= f.p.slice {
		if !f.p.behind(now) {
			f.p.sleep(time.Duration(f.p.ratio) * f.work)
			now = f.p.now()
		}
		f.work = 0
	}
	f.last = now
	return n, err
}
