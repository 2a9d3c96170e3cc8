package integration

import (
	"encoding/binary"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/cairnkv/cairn/internal/storage"
	"github.com/cairnkv/cairn/internal/storage/schema"
)

// TestCorruptDataDirRefused: a data dir whose records were damaged on disk
// is refused at start with an error naming what is wrong, never served and
// never a panic. Each case damages one record of a member that held data
// (a log, applied writes, a lease, its membership) and starts it again.
func TestCorruptDataDirRefused(t *testing.T) {
	u64 := func(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
	cases := []struct {
		name   string
		key    []byte
		value  []byte
		delete bool
	}{
		{name: "raft log key too short", key: []byte{schema.RaftLog, 0x02}, value: []byte("x")},
		{name: "raft log entry garbage", key: append([]byte{schema.RaftLog}, u64(2)...), value: []byte{0xff, 0xff, 0xff}},
		{name: "raft log entry beyond a gap", key: append([]byte{schema.RaftLog}, u64(1<<40)...), value: []byte{}},
		{name: "hard state garbage", key: schema.HardStateKey, value: []byte{0xff, 0x01}},
		{name: "conf state garbage", key: schema.ConfStateKey, value: []byte{0xff, 0x01}},
		{name: "snapshot metadata garbage", key: schema.SnapshotMetaKey, value: []byte{0xff, 0x01}},
		{name: "commit hint short", key: schema.CommitHintKey, value: []byte{1, 2, 3}},
		{name: "applied index short", key: schema.AppliedKey, value: []byte{1}},
		{name: "revision short", key: schema.RevisionKey, value: []byte{1, 2}},
		{name: "scheduled compaction short", key: schema.ScheduledCompactKey, value: []byte{1}},
		{name: "finished compaction short", key: schema.FinishedCompactKey, value: []byte{1}},
		{name: "cluster ID short", key: schema.ClusterIDKey, value: []byte{1}},
		{name: "member record garbage", key: append(append([]byte(nil), schema.MemberPrefix...), u64(7)...), value: []byte("{not json")},
		{name: "member key short", key: append(append([]byte(nil), schema.MemberPrefix...), 1), value: []byte(`{"id":1}`)},
		{name: "lease key short", key: []byte{schema.Lease, 1}, value: []byte{1}},
		{name: "lease record garbage", key: append([]byte{schema.Lease}, u64(42)...), value: []byte{9, 9}},
		{name: "format version unknown", key: schema.FormatKey, value: []byte{0xff}},
		{name: "format record missing", key: schema.FormatKey, delete: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, 1)
			nd := c.waitLeader()
			c.mustPut(nd, "k", "v")
			nd.mustStop()

			db, err := storage.Open(nil, nd.cfg.DataDir)
			if err != nil {
				t.Fatalf("open the data dir to damage it: %v", err)
			}
			if tc.delete {
				err = db.Delete(tc.key, pebble.Sync)
			} else {
				err = db.Set(tc.key, tc.value, pebble.Sync)
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}

			err = nd.tryStart()
			if err == nil {
				nd.mustStop()
				t.Fatalf("a member started on a data dir with a damaged record (%s)", tc.name)
			}
			t.Logf("refused: %v", err)
		})
	}
}
