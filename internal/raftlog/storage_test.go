package raftlog

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/cairnkv/cairn/internal/storage"
)

func ent(i, t uint64) *raftpb.Entry {
	return &raftpb.Entry{Index: proto.Uint64(i), Term: proto.Uint64(t), Type: raftpb.EntryType_EntryNormal.Enum(), Data: []byte{byte(i)}}
}

func hs(term, commit uint64) *raftpb.HardState {
	return &raftpb.HardState{Term: proto.Uint64(term), Commit: proto.Uint64(commit), Vote: proto.Uint64(1)}
}

func open(t testing.TB, dir string) (*Storage, func()) {
	t.Helper()
	db, err := storage.Open(nil, dir)
	require.NoError(t, err)
	s, err := Open(db.DB)
	require.NoError(t, err)
	return s, func() { require.NoError(t, db.Close()) }
}

// Reference: raft doc.go "When writing an Entry with Index i, any
// previously-persisted entries with Index >= i must be discarded."
func TestSaveTruncatesOverwrittenSuffix(t *testing.T) {
	s, done := open(t, t.TempDir())
	defer done()
	require.NoError(t, s.Save(hs(1, 0), []*raftpb.Entry{ent(1, 1), ent(2, 1), ent(3, 1), ent(4, 1)}, true))
	require.NoError(t, s.Save(nil, []*raftpb.Entry{ent(3, 2)}, true))
	last, _ := s.LastIndex()
	require.EqualValues(t, 3, last)
	tm, err := s.Term(3)
	require.NoError(t, err)
	require.EqualValues(t, 2, tm)
	ents, err := s.Entries(1, 4, 1<<30)
	require.NoError(t, err)
	require.Len(t, ents, 3)
	require.EqualValues(t, 2, ents[2].GetTerm())
	_, err = s.Term(4)
	require.ErrorIs(t, err, raft.ErrUnavailable)
	_, err = s.Entries(1, 5, 1<<30)
	require.ErrorIs(t, err, raft.ErrUnavailable)
}

func TestSaveRejectsGap(t *testing.T) {
	s, done := open(t, t.TempDir())
	defer done()
	require.NoError(t, s.Save(nil, []*raftpb.Entry{ent(1, 1)}, true))
	require.Error(t, s.Save(nil, []*raftpb.Entry{ent(3, 1)}, true))
}

func TestEntriesMaxSizeReturnsAtLeastOne(t *testing.T) {
	s, done := open(t, t.TempDir())
	defer done()
	require.NoError(t, s.Save(nil, []*raftpb.Entry{ent(1, 1), ent(2, 1), ent(3, 1)}, true))
	ents, err := s.Entries(1, 4, 0)
	require.NoError(t, err)
	require.Len(t, ents, 1)
	one := uint64(proto.Size(ent(1, 1)))
	ents, err = s.Entries(1, 4, 2*one)
	require.NoError(t, err)
	require.Len(t, ents, 2)
	// The caller may append to the returned slice.
	_ = append(ents, ent(9, 9))
}

func TestCompactAndReopen(t *testing.T) {
	dir := t.TempDir()
	s, done := open(t, dir)
	var es []*raftpb.Entry
	for i := uint64(1); i <= 10; i++ {
		es = append(es, ent(i, 1+i/5))
	}
	require.NoError(t, s.Save(hs(3, 10), es, true))
	require.NoError(t, s.Compact(6))
	first, _ := s.FirstIndex()
	require.EqualValues(t, 7, first)
	// Reference: raft Storage.Term must work for FirstIndex-1.
	tm, err := s.Term(6)
	require.NoError(t, err)
	require.EqualValues(t, 2, tm)
	_, err = s.Term(5)
	require.ErrorIs(t, err, raft.ErrCompacted)
	_, err = s.Entries(5, 8, 1<<30)
	require.ErrorIs(t, err, raft.ErrCompacted)
	snap, err := s.Snapshot()
	require.NoError(t, err)
	require.EqualValues(t, 6, snap.GetMetadata().GetIndex())
	done()

	s, done = open(t, dir)
	defer done()
	first, _ = s.FirstIndex()
	last, _ := s.LastIndex()
	require.EqualValues(t, 7, first)
	require.EqualValues(t, 10, last)
	h, _, err := s.InitialState()
	require.NoError(t, err)
	require.EqualValues(t, 10, h.GetCommit())
	ents, err := s.Entries(7, 11, 1<<30)
	require.NoError(t, err)
	require.Len(t, ents, 4)
	require.EqualValues(t, 7, ents[0].GetIndex())
}

func TestOpenRefusesCommitBeyondLog(t *testing.T) {
	dir := t.TempDir()
	s, done := open(t, dir)
	require.NoError(t, s.Save(hs(1, 1), []*raftpb.Entry{ent(1, 1)}, true))
	// A HardState claiming commit 5 with a log ending at 1 is corruption.
	require.NoError(t, s.Save(hs(1, 5), nil, true))
	done()
	db, err := storage.Open(nil, dir)
	require.NoError(t, err)
	defer db.Close()
	_, err = Open(db.DB)
	require.ErrorContains(t, err, "beyond the last log index")
}

// TestEntriesTailMatchesDisk: whatever Entries serves from the in-memory
// tail equals what a Storage without a tail (reopened on the same DB)
// reads from Pebble, across appends, overwritten suffixes, compactions and
// more entries than the tail holds.
func TestEntriesTailMatchesDisk(t *testing.T) {
	db, err := storage.Open(nil, t.TempDir())
	require.NoError(t, err)
	defer db.Close()
	s, err := Open(db.DB)
	require.NoError(t, err)
	rng := rand.New(rand.NewPCG(1, 2))
	term := uint64(1)
	for step := range 400 {
		last, _ := s.LastIndex()
		first, _ := s.FirstIndex()
		switch r := rng.IntN(10); {
		case r < 7: // append, sometimes overwriting a suffix
			from := last + 1
			if r == 0 && last >= first {
				from = first + rng.Uint64N(last-first+1)
				term++
			}
			var ents []*raftpb.Entry
			for i := range 1 + rng.IntN(60) {
				e := ent(from+uint64(i), term)
				e.Data = make([]byte, rng.IntN(3000))
				ents = append(ents, e)
			}
			require.NoError(t, s.Save(hs(term, 0), ents, false))
		case r < 8 && last > first+10:
			require.NoError(t, s.Compact(first+rng.Uint64N(last-first-5)))
		}
		last, _ = s.LastIndex()
		first, _ = s.FirstIndex()
		if last < first {
			continue
		}
		disk, err := Open(db.DB)
		require.NoError(t, err)
		for range 5 {
			lo := first + rng.Uint64N(last-first+1)
			hi := lo + 1 + rng.Uint64N(last-lo+1)
			maxSize := uint64(rng.IntN(20000))
			got, err := s.Entries(lo, hi, maxSize)
			require.NoError(t, err)
			want, err := disk.Entries(lo, hi, maxSize)
			require.NoError(t, err)
			require.Equal(t, len(want), len(got), "step %d: Entries(%d, %d, %d)", step, lo, hi, maxSize)
			for i := range got {
				require.True(t, proto.Equal(want[i], got[i]), "step %d: entry %d of Entries(%d, %d)", step, i, lo, hi)
			}
		}
	}
	require.NotEmpty(t, s.tail, "the tail was never used")
	require.LessOrEqual(t, len(s.tail), tailMaxEntries)
	require.LessOrEqual(t, s.tailBytes, tailMaxBytes)
}

// BenchmarkSaveOneEntry is a follower at one client: one small entry per
// Save, the tail full (ns/op and allocs are per entry).
func BenchmarkSaveOneEntry(b *testing.B) {
	s, done := open(b, b.TempDir())
	defer done()
	save := func(i uint64) {
		e := ent(i, 1)
		e.Data = make([]byte, 300)
		if err := s.Save(hs(1, 0), []*raftpb.Entry{e}, false); err != nil {
			b.Fatal(err)
		}
	}
	next := uint64(1)
	for ; next <= 2*tailMaxEntries; next++ {
		save(next)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		save(next)
		next++
	}
}

// Once the tail is full, appends drop old entries in bulk: the tail is
// trimmed (and copied into a new array) a few times per thousand appends,
// not on every append (which, at one client, cost a follower a 32 KiB copy
// and a 64 KiB allocation per entry).
func TestTailTrimIsAmortised(t *testing.T) {
	s, done := open(t, t.TempDir())
	defer done()
	trims, appends := 0, 0
	for i := uint64(1); i <= 3*tailMaxEntries; i++ {
		var oldest *raftpb.Entry
		if len(s.tail) > 0 {
			oldest = s.tail[0]
		}
		require.NoError(t, s.Save(hs(1, 0), []*raftpb.Entry{ent(i, 1)}, false))
		require.LessOrEqual(t, len(s.tail), tailMaxEntries)
		if i > tailMaxEntries {
			appends++
			if s.tail[0] != oldest {
				trims++
			}
		}
	}
	require.Less(t, trims, 10, "the tail was trimmed on %d of %d appends", trims, appends)
	got, err := s.Entries(3*tailMaxEntries-10, 3*tailMaxEntries+1, 1<<20)
	require.NoError(t, err)
	require.Len(t, got, 11)
}
