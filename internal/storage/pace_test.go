package storage

import (
	"crypto/rand"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/require"
)

// fakeClock is the pacer's clock in tests: sleeping advances it.
type fakeClock struct {
	t      time.Time
	sleeps []time.Duration
}

func (c *fakeClock) now() time.Time { return c.t }
func (c *fakeClock) sleep(d time.Duration) {
	c.sleeps = append(c.sleeps, d)
	c.t = c.t.Add(d)
}

// testPacer is a pacer over an idle in-memory Pebble DB (not behind) and a
// fake clock.
func testPacer(t *testing.T, ratio int64) (*pacer, *fakeClock) {
	t.Helper()
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	c := &fakeClock{t: time.Unix(1000, 0)}
	p := newPacer(ratio)
	p.now, p.sleep = c.now, c.sleep
	p.db.Store(db)
	return p, c
}

func TestPacedFileSleepsInProportionToWork(t *testing.T) {
	p, c := testPacer(t, 2)
	fs := pacedFS{FS: vfs.NewMem(), p: p}
	f, err := fs.Create("000001.sst", "pebble-memtable-flush")
	require.NoError(t, err)
	write := func(after time.Duration) {
		c.t = c.t.Add(after)
		_, err := f.Write([]byte("block"))
		require.NoError(t, err)
	}
	write(0) // the first write starts the clock
	write(time.Millisecond)
	require.Empty(t, c.sleeps, "less than a slice of work")
	write(1500 * time.Microsecond)
	require.Equal(t, []time.Duration{5 * time.Millisecond}, c.sleeps, "2.5 ms of work, ratio 2")
	// The pause is not work: the next slice starts after it.
	write(time.Millisecond)
	require.Len(t, c.sleeps, 1)
	write(time.Millisecond)
	require.Equal(t, 4*time.Millisecond, c.sleeps[1])

	// A write stall stops the pauses, at once (not at the next metrics
	// read), and its end restarts them.
	p.writeStallBegin(pebble.WriteStallBeginInfo{})
	write(3 * time.Millisecond)
	require.Len(t, c.sleeps, 2, "no pause during a write stall")
	p.writeStallEnd()
	write(3 * time.Millisecond)
	require.Len(t, c.sleeps, 3)
	require.NoError(t, f.Close())
}

func TestPacedFSPacesOnlyFlushesAndCompactions(t *testing.T) {
	p, _ := testPacer(t, 2)
	fs := pacedFS{FS: vfs.NewMem(), p: p}
	for i, tc := range []struct {
		category vfs.DiskWriteCategory
		paced    bool
	}{
		{"pebble-memtable-flush", true},
		{"pebble-compaction", true},
		{"pebble-wal", false},
		{"pebble-manifest", false},
		{vfs.WriteCategoryUnspecified, false},
	} {
		f, err := fs.Create(fmt.Sprintf("%06d.x", i), tc.category)
		require.NoError(t, err)
		_, paced := f.(*pacedFile)
		require.Equal(t, tc.paced, paced, tc.category)
		require.NoError(t, f.Close())
	}
	// Ratio 0 turns pacing off.
	off := pacedFS{FS: vfs.NewMem(), p: newPacer(0)}
	f, err := off.Create("000009.sst", "pebble-compaction")
	require.NoError(t, err)
	_, paced := f.(*pacedFile)
	require.False(t, paced)
	require.NoError(t, f.Close())
}

// A caller waiting on a compaction it asked for (defragmentation) turns
// pacing off until it returns.
func TestPacerHeldByWaitingCompaction(t *testing.T) {
	p, c := testPacer(t, 2)
	require.False(t, p.behind(c.now()))
	p.held.Add(1)
	require.True(t, p.behind(c.now()))
	p.held.Add(-1)
	require.False(t, p.behind(c.now()))
}

// Until the DB is open (WAL replay, the flushes of recovery) nothing is
// paced.
func TestPacerBehindWhileOpening(t *testing.T) {
	p := newPacer(2)
	require.True(t, p.behind(time.Now()))
}

func TestBehindOf(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		memBytes  uint64
		sublevels int32
		behind    bool
	}{
		{64 * mib, 0, false},
		// A new DB's first flush: eight memtables of 256 KiB to 32 MiB,
		// and the mutable one.
		{128 * mib, 7, false},
		{192 * mib, 0, false},
		{193 * mib, 0, true}, // more than three memtables' worth
		{64 * mib, 8, true},  // L0 twice as deep as the compaction threshold
	} {
		var m pebble.Metrics
		m.MemTable.Size = tc.memBytes
		m.Levels[0].Sublevels = tc.sublevels
		require.Equal(t, tc.behind, behindOf(&m), "%+v", tc)
	}
}

// A flush and a compaction that pause after every write (and so read the
// DB's metrics from inside the job, which must not deadlock) write tables
// that read back what they were given.
func TestPacedFlushAndCompaction(t *testing.T) {
	var sleeps atomic.Int64
	p := newPacer(2)
	p.slice = 0
	p.sleep = func(time.Duration) { sleeps.Add(1) }
	mem := vfs.NewMem()
	// No automatic compaction: one that merged the two tables before the
	// manual one left that a table to move, which writes nothing (and so
	// never pauses), and its own pauses were counted as the flushes'.
	db, err := pebble.Open("", &pebble.Options{FS: pacedFS{FS: mem, p: p}, DisableAutomaticCompactions: true})
	require.NoError(t, err)
	p.db.Store(db)
	// Two flushes of the same keys, so that the compaction merges them
	// (one table would only be moved).
	val := make([]byte, 100)
	for range 2 {
		_, _ = rand.Read(val) // incompressible: tables of many writes
		for i := range 1000 {
			require.NoError(t, db.Set([]byte(fmt.Sprintf("k%06d", i)), val, pebble.NoSync))
		}
		require.NoError(t, db.Flush())
	}
	flushed := sleeps.Load()
	require.Positive(t, flushed, "the flushes paused")
	require.NoError(t, db.Compact(t.Context(), []byte("k"), []byte("l"), true))
	require.Greater(t, sleeps.Load(), flushed, "the compaction paused")
	require.NoError(t, db.Close())

	db, err = pebble.Open("", &pebble.Options{FS: mem})
	require.NoError(t, err)
	defer db.Close()
	for _, i := range []int{0, 500, 999} {
		v, closer, err := db.Get([]byte(fmt.Sprintf("k%06d", i)))
		require.NoError(t, err)
		require.Len(t, v, 100)
		require.NoError(t, closer.Close())
	}
}

func TestCompactUnpaced(t *testing.T) {
	db, err := Open(nil, filepath.Join(t.TempDir(), "data"))
	require.NoError(t, err)
	defer db.Close()
	for i := range 100 {
		require.NoError(t, db.Set([]byte(fmt.Sprintf("k%03d", i)), []byte("v"), pebble.NoSync))
	}
	require.NoError(t, db.CompactUnpaced(t.Context(), []byte{0}, []byte{0xff}))
	require.Zero(t, db.pacer.held.Load(), "pacing back on once the compaction returns")
	require.Zero(t, db.Metrics().Levels[0].TablesCount, "everything left L0")
}
