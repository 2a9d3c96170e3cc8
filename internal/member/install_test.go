package member

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"

	"github.com/cairnkv/cairn/internal/config"
	"github.com/cairnkv/cairn/internal/raftlog"
	"github.com/cairnkv/cairn/internal/snapshot"
	"github.com/cairnkv/cairn/internal/storage"
	"github.com/cairnkv/cairn/internal/storage/schema"
)

// A crash in the middle of installing a snapshot (after the synced marker,
// with the old state half replaced) must be finished at the next start,
// before anything reads the state: the state is the snapshot's, the raft
// log restarts after the snapshot index, and the marker is gone.
func TestResumeInterruptedSnapshotInstall(t *testing.T) {
	const index, term = 50, 3
	mvccKey := []byte{schema.MVCC, 'n', 'e', 'w'}
	staleKey := []byte{schema.MVCC, 'o', 'l', 'd'}

	// The leader's state at the snapshot point.
	src, err := storage.Open(nil, t.TempDir())
	require.NoError(t, err)
	defer src.Close()
	applied := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, index), term)
	require.NoError(t, src.Set(mvccKey, []byte("v"), pebble.Sync))
	require.NoError(t, src.Set(schema.AppliedKey, applied, pebble.Sync))
	var stream bytes.Buffer
	ps := src.NewSnapshot()
	require.NoError(t, snapshot.Write(&stream, ps))
	require.NoError(t, ps.Close())

	// The follower: old state and log, the received file, the marker, and
	// an installation cut off after it deleted part of the old state.
	dataDir := t.TempDir()
	db, err := storage.Open(nil, dataDir)
	require.NoError(t, err)
	rs, err := raftlog.Open(db.DB)
	require.NoError(t, err)
	var ents []*raftpb.Entry
	for i := uint64(1); i <= 10; i++ {
		ents = append(ents, &raftpb.Entry{Index: proto.Uint64(i), Term: proto.Uint64(1)})
	}
	require.NoError(t, rs.Save(&raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(10)}, ents, true))
	require.NoError(t, db.Set(staleKey, []byte("stale"), pebble.Sync))
	require.NoError(t, snapshot.Save(dataDir, index, bytes.NewReader(stream.Bytes())))
	meta := &raftpb.SnapshotMetadata{Index: proto.Uint64(index), Term: proto.Uint64(term), ConfState: &raftpb.ConfState{Voters: []uint64{1}}}
	data, err := proto.Marshal(meta)
	require.NoError(t, err)
	require.NoError(t, db.Set(snapshot.InstallMarkerKey, data, pebble.Sync))
	require.NoError(t, db.DeleteRange([]byte{schema.RevLog}, []byte{schema.RevLog + 1}, pebble.Sync)) // partial work
	require.NoError(t, db.Close())

	// Restart.
	db, err = storage.Open(nil, dataDir)
	require.NoError(t, err)
	defer db.Close()
	rs, err = raftlog.Open(db.DB)
	require.NoError(t, err)
	cfg := config.Defaults()
	cfg.DataDir = dataDir
	m := &Member{lg: zaptest.NewLogger(t), cfg: cfg, db: db}
	require.NoError(t, m.resumeInstall(rs))

	get := func(k []byte) []byte {
		v, closer, err := db.Get(k)
		if errors.Is(err, pebble.ErrNotFound) {
			return nil
		}
		require.NoError(t, err)
		defer closer.Close()
		return append([]byte(nil), v...)
	}
	require.Nil(t, get(snapshot.InstallMarkerKey), "marker cleared")
	require.Equal(t, []byte("v"), get(mvccKey))
	require.Nil(t, get(staleKey), "old state replaced")
	require.Equal(t, applied, get(schema.AppliedKey))
	first, _ := rs.FirstIndex()
	last, _ := rs.LastIndex()
	require.EqualValues(t, index+1, first)
	require.EqualValues(t, index, last)
	hs, cs, err := rs.InitialState()
	require.NoError(t, err)
	require.EqualValues(t, index, hs.GetCommit())
	require.Equal(t, []uint64{1}, cs.GetVoters())

	// A second start finds nothing to resume.
	require.NoError(t, m.resumeInstall(rs))
}
