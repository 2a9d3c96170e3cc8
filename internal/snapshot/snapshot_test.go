package snapshot

import (
	"bytes"
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/stretchr/testify/require"

	"github.com/cairnkv/cairn/internal/storage"
	"github.com/cairnkv/cairn/internal/storage/schema"
)

func openDB(t *testing.T, dir string) *pebble.DB {
	t.Helper()
	db, err := storage.Open(nil, dir)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db.DB
}

func get(t *testing.T, db *pebble.DB, k []byte) []byte {
	t.Helper()
	v, closer, err := db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil
	}
	require.NoError(t, err)
	defer closer.Close()
	return append([]byte(nil), v...)
}

// A snapshot carries the replicated keyspaces and nothing of the raft log,
// the raft state or the receiver's own identity; installing it replaces the
// receiver's state completely.
func TestWriteInstallRoundTrip(t *testing.T) {
	src := openDB(t, t.TempDir())
	self := LocalKeys[1]
	for k, v := range map[string]string{
		string([]byte{schema.MVCC, 'a'}):      "1",
		string([]byte{schema.RevLog, 1}):      "a",
		string([]byte{schema.Meta, 'z'}):      "meta",
		string(self):                          "src-self",
		string([]byte{schema.RaftLog, 1}):     "entry",
		string([]byte{schema.RaftState, 'h'}): "hs",
	} {
		require.NoError(t, src.Set([]byte(k), []byte(v), pebble.Sync))
	}
	snap := src.NewSnapshot()
	defer snap.Close()
	var buf bytes.Buffer
	require.NoError(t, Write(&buf, snap))

	dataDir := t.TempDir()
	dst := openDB(t, t.TempDir())
	require.NoError(t, dst.Set([]byte{schema.MVCC, 'o', 'l', 'd'}, []byte("stale"), pebble.Sync))
	require.NoError(t, dst.Set(self, []byte("dst-self"), pebble.Sync))
	require.NoError(t, Save(dataDir, 7, bytes.NewReader(buf.Bytes())))
	require.NoError(t, Install(dst, dataDir, 7))

	require.Equal(t, []byte("1"), get(t, dst, []byte{schema.MVCC, 'a'}))
	require.Equal(t, []byte("a"), get(t, dst, []byte{schema.RevLog, 1}))
	require.Equal(t, []byte("meta"), get(t, dst, []byte{schema.Meta, 'z'}))
	require.Nil(t, get(t, dst, []byte{schema.MVCC, 'o', 'l', 'd'}), "old state must be gone")
	require.Equal(t, []byte("dst-self"), get(t, dst, self), "the receiver keeps its identity")
	require.Nil(t, get(t, dst, []byte{schema.RaftLog, 1}), "raft log is never shipped")
	require.Nil(t, get(t, dst, []byte{schema.RaftState, 'h'}), "raft state is never shipped")

	Remove(dataDir, 8)
	require.Error(t, Install(dst, dataDir, 7), "removed snapshot files are gone")
}

func FuzzRead(f *testing.F) {
	var buf bytes.Buffer
	src := openDBF(f)
	_ = src.Set([]byte{schema.MVCC, 'k'}, []byte("v"), pebble.Sync)
	snap := src.NewSnapshot()
	_ = Write(&buf, snap)
	snap.Close()
	f.Add(buf.Bytes())
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte{1, 1, schema.RaftLog, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = Read(bytes.NewReader(data), func(k, v []byte) error {
			if len(k) == 0 || (k[0] != schema.MVCC && k[0] != schema.RevLog && k[0] != schema.Meta) {
				t.Fatalf("Read passed a key outside the state keyspaces: %x", k)
			}
			return nil
		})
	})
}

func openDBF(f *testing.F) *pebble.DB {
	db, err := storage.Open(nil, f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = db.Close() })
	return db.DB
}
