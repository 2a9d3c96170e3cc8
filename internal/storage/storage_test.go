package storage

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestOpenFreshAndReopen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	db, err := Open(nil, dir)
	require.NoError(t, err)
	require.NoError(t, db.Close())
	db, err = Open(nil, dir)
	require.NoError(t, err)
	require.NoError(t, db.Close())
}

// A data dir that is not Cairn's (an etcd member dir, say) must be refused
// with a message naming the file, never opened or overwritten.
func TestOpenRefusesForeignDir(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "member", "snap"), 0o700))
	_, err := Open(nil, dir)
	require.ErrorIs(t, err, ErrForeignDataDir)
	require.ErrorContains(t, err, filepath.Join(dir, "member"))
}

func TestOpenRefusesCorruptManifest(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(nil, dir)
	require.NoError(t, err)
	require.NoError(t, db.Close())
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range ents {
		if len(e.Name()) > 9 && e.Name()[:9] == "MANIFEST-" {
			require.NoError(t, os.WriteFile(filepath.Join(dir, e.Name()), []byte("garbage garbage garbage"), 0o600))
		}
	}
	_, err = Open(nil, dir)
	require.Error(t, err)
}

// TestBlockCacheCaches guards against a cache that Pebble's memtable
// accounting leaves empty (it was, with the default cache): reading the
// same flushed keys twice must hit the cache the second time.
func TestBlockCacheCaches(t *testing.T) {
	db, err := Open(nil, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	val := make([]byte, 256)
	key := func(i int) []byte { return fmt.Appendf(nil, "\xfek%08d", i) }
	for i := range 20000 {
		if err := db.Set(key(i), val, pebble.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	read := func() {
		for i := 0; i < 20000; i += 7 {
			_, closer, err := db.Get(key(i))
			if err != nil {
				t.Fatal(err)
			}
			_ = closer.Close()
		}
	}
	read()
	before := db.Metrics().BlockCache
	read()
	after := db.Metrics().BlockCache
	if after.Count == 0 || after.Hits-before.Hits == 0 || after.Misses != before.Misses {
		t.Fatalf("block cache not caching: %d blocks cached; second pass %d hits, %d misses",
			after.Count, after.Hits-before.Hits, after.Misses-before.Misses)
	}
}

// At debug level an operator sees Pebble's flushes (and compactions) in
// the member's log; at info level they stay out of it.
func TestFlushesLoggedAtDebug(t *testing.T) {
	for _, tc := range []struct {
		level  zapcore.Level
		logged bool
	}{{zapcore.DebugLevel, true}, {zapcore.InfoLevel, false}} {
		core, logs := observer.New(tc.level)
		db, err := Open(zap.New(core), t.TempDir())
		require.NoError(t, err)
		require.NoError(t, db.Set([]byte("\xfekey"), []byte("v"), pebble.NoSync))
		require.NoError(t, db.Flush())
		require.NoError(t, db.Close())
		n := logs.FilterMessageSnippet("flushed 1 memtable").Len()
		if tc.logged {
			require.Positive(t, n, "no flush logged at %s", tc.level)
		} else {
			require.Zero(t, n, "flush logged at %s", tc.level)
		}
	}
}
