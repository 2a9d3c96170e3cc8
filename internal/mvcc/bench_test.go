package mvcc

import (
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"go.uber.org/zap"

	"github.com/cairnkv/cairn/internal/storage"
)

func benchStore(b testing.TB) (*pebble.DB, *Store) {
	b.Helper()
	db, err := storage.Open(zap.NewNop(), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	s, err := NewStore(zap.NewNop(), db)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close(); _ = db.Close() })
	return db.DB, s
}

// applyPuts applies n puts in one batch as the applier does, gathering
// watch events when collect is set.
func applyPuts(b testing.TB, db *pebble.DB, s *Store, keys [][]byte, val []byte, collect bool) {
	batch := db.NewBatch()
	defer batch.Close()
	if err := s.BeginApply(collect, collect); err != nil {
		b.Fatal(err)
	}
	defer s.EndApply()
	for _, k := range keys {
		t := s.Write(batch)
		if _, err := t.Put(k, val, 0); err != nil {
			b.Fatal(err)
		}
		t.End()
	}
	s.StageRev(batch)
	if err := batch.Commit(pebble.NoSync); err != nil {
		b.Fatal(err)
	}
	s.Publish()
	_, _, _ = s.TakeEvents()
}

func benchKeys(n, off int) [][]byte {
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "key-%08d", off+i)
	}
	return keys
}

// BenchmarkApplyPuts is the MVCC share of the write path: batches of 100
// puts of 256-byte values (ns/op is per put).
func BenchmarkApplyPuts(b *testing.B) {
	for _, collect := range []bool{false, true} {
		b.Run(fmt.Sprintf("events=%v", collect), func(b *testing.B) {
			db, s := benchStore(b)
			val := make([]byte, 256)
			b.ReportAllocs()
			for i := 0; i < b.N; i += 100 {
				applyPuts(b, db, s, benchKeys(100, i%100000), val, collect)
			}
		})
	}
}

// BenchmarkRangeHead reads one key at the head revision out of 100,000.
func BenchmarkRangeHead(b *testing.B) {
	db, s := benchStore(b)
	val := make([]byte, 256)
	for i := 0; i < 100000; i += 1000 {
		applyPuts(b, db, s, benchKeys(1000, i), val, false)
	}
	keys := benchKeys(100000, 0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Range(keys[i%len(keys)], nil, RangeOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEventsReplay replays the revision log as a catching-up watcher
// does, 1000 events per call (ns/op is per event).
func BenchmarkEventsReplay(b *testing.B) {
	db, s := benchStore(b)
	val := make([]byte, 256)
	for i := 0; i < 20000; i += 1000 {
		applyPuts(b, db, s, benchKeys(1000, i%5000), val, false)
	}
	b.ReportAllocs()
	b.ResetTimer()
	from := int64(2)
	for i := 0; i < b.N; i += 1000 {
		_, last, err := s.Events(from, s.Rev(), 1000, 1<<30, true)
		if err != nil {
			b.Fatal(err)
		}
		from = last + 1
		if from > s.Rev() {
			from = 2
		}
	}
}
