// Package storage opens and guards a member's Pebble database: the single
// store that holds the raft log, the raft state, the MVCC data and the
// metadata (see package schema for the layout). It refuses a data directory
// that is not Cairn's and never creates one over foreign files.
// It also paces Pebble's flushes and compactions (pace.go) so that they
// never take more than a share of a core from requests, unless Pebble
// falls behind.
//
// Durability policy: writes that must survive a crash (raft log and
// HardState) are committed with pebble.Sync; everything else is committed
// with pebble.NoSync and relies on the raft log for replay. Because Pebble
// has one write-ahead log, a synced commit also makes every earlier unsynced
// commit durable, so durable state is always a prefix of the commit order.
package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/zap"

	"github.com/cairnkv/cairn/internal/storage/schema"
)

// ErrForeignDataDir is returned when the data directory holds files that are
// not a Cairn database.
var ErrForeignDataDir = errors.New("storage: data directory is not a cairn data directory")

const (
	memTableBytes = 64 << 20
	// blockCacheBytes is the block cache proper, beyond the memtables:
	// the index and filter blocks of a 1,000,000-key store take ~2 MiB, so
	// this holds them all plus the hottest data blocks. More would help
	// reads of big data sets, but it is resident memory, and RSS after a
	// 1,000,000-key load is a target (docs/design.md, "Memory").
	blockCacheBytes = 16 << 20
)

// DB is an open Cairn database: the Pebble DB, and what Cairn follows of
// its flushes (see FlushedSeqNum).
type DB struct {
	*pebble.DB
	flushed *flushTracker
	pacer   *pacer
}

// Open opens (creating if needed) the Pebble database in dir.
func Open(lg *zap.Logger, dir string) (*DB, error) {
	if lg == nil {
		lg = zap.NewNop()
	}
	fresh, err := checkDir(dir)
	if err != nil {
		return nil, err
	}
	// Pebble charges its memtables to the block cache (under steady
	// writes the cache held its size minus two memtables of blocks), so a
	// cache no bigger than that caches nothing: with Pebble's default
	// 8 MiB cache and 64 MiB memtables every read decompressed its index
	// and data blocks again, at every level, for a put whose key's latest
	// version had left the memtables (docs/design.md, "Memory").
	cache := pebble.NewCache(2*memTableBytes + blockCacheBytes)
	defer cache.Unref()
	opts := &pebble.Options{
		ErrorIfNotExists: !fresh,
		Cache:            cache,
		// Raft log entries are written once and deleted when the log is
		// compacted; a large memtable lets more of them die there instead
		// of reaching L0. 32 MiB cost the same CPU per put once both sizes
		// flush, and moved the members' simultaneous flush stall from one
		// benchmark row to another rather than shrinking it
		// (docs/design.md, "Memory").
		MemTableSize:                memTableBytes,
		MemTableStopWritesThreshold: 4,
		L0CompactionThreshold:       4,
		L0StopWritesThreshold:       1000,
		LBaseMaxBytes:               64 << 20,
		CompactionConcurrencyRange:  func() (int, int) { return 1, 2 },
		Logger:                      zapLogger{lg.Sugar()},
	}
	ft := &flushTracker{}
	pc := newPacer(pauseRatio)
	opts.FS = pacedFS{FS: vfs.Default, p: pc}
	el := pebble.EventListener{FlushEnd: ft.flushEnd, WriteStallBegin: pc.writeStallBegin, WriteStallEnd: pc.writeStallEnd}
	if lg.Core().Enabled(zap.DebugLevel) {
		// Flushes and compactions, with sizes and durations, at debug
		// level: what a stall on the write path is read against.
		el = pebble.TeeEventListener(pebble.MakeLoggingEventListener(zapLogger{lg.Sugar()}), el)
	}
	opts.EventListener = &el
	for i := range opts.Levels {
		opts.Levels[i].BlockSize = 32 << 10
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		opts.Levels[i].FilterType = pebble.TableFilter
		if i >= 1 {
			opts.Levels[i].Compression = func() *sstable.CompressionProfile { return sstable.ZstdCompression }
		} else {
			opts.Levels[i].Compression = func() *sstable.CompressionProfile { return sstable.SnappyCompression }
		}
	}
	opts.EnsureDefaults()
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", dir, err)
	}
	if err := checkFormat(db, dir, fresh); err != nil {
		_ = db.Close()
		return nil, err
	}
	pc.db.Store(db)
	return &DB{DB: db, flushed: ft, pacer: pc}, nil
}

// CompactUnpaced compacts [start, end) with flushes and compactions at
// full speed until it returns: an operator's defragmentation waits on it
// (etcdctl's --command-timeout), so it is not paced like Pebble's own
// background work (pace.go).
func (d *DB) CompactUnpaced(ctx context.Context, start, end []byte) error {
	d.pacer.held.Add(1)
	defer d.pacer.held.Add(-1)
	return d.DB.Compact(ctx, start, end, true)
}

// checkDir reports whether dir is fresh (absent or empty) and refuses a
// non-empty directory that has no Pebble manifest.
func checkDir(dir string) (fresh bool, err error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return true, os.MkdirAll(dir, 0o700)
	}
	if err != nil {
		return false, fmt.Errorf("storage: read data dir %s: %w", dir, err)
	}
	if len(entries) == 0 {
		return true, nil
	}
	for _, e := range entries {
		if e.Name() == "CURRENT" || (len(e.Name()) > 9 && e.Name()[:9] == "MANIFEST-") {
			return false, nil
		}
	}
	return false, fmt.Errorf("%w: %s holds %s but no pebble MANIFEST (an etcd data dir? use a fresh --data-dir)",
		ErrForeignDataDir, dir, filepath.Join(dir, entries[0].Name()))
}

func checkFormat(db *pebble.DB, dir string, fresh bool) error {
	v, closer, err := db.Get(schema.FormatKey)
	if errors.Is(err, pebble.ErrNotFound) {
		if !fresh {
			return fmt.Errorf("%w: %s is a pebble database without a cairn format marker", ErrForeignDataDir, dir)
		}
		return db.Set(schema.FormatKey, []byte(schema.FormatVersion), pebble.Sync)
	}
	if err != nil {
		return fmt.Errorf("storage: read format marker in %s: %w", dir, err)
	}
	defer closer.Close()
	if string(v) != schema.FormatVersion {
		return fmt.Errorf("%w: %s has format %q, this cairn reads %q", ErrForeignDataDir, dir, v, schema.FormatVersion)
	}
	return nil
}

type zapLogger struct{ s *zap.SugaredLogger }

func (l zapLogger) Infof(format string, args ...interface{})  { l.s.Debugf(format, args...) }
func (l zapLogger) Errorf(format string, args ...interface{}) { l.s.Errorf(format, args...) }
func (l zapLogger) Fatalf(format string, args ...interface{}) { l.s.Fatalf(format, args...) }
