package mvcc

import (
	"context"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/stretchr/testify/require"

	"github.com/cairnkv/cairn/internal/storage"
)

type hashStore struct {
	db *pebble.DB
	s  *Store
}

func newHashStore(t *testing.T) *hashStore {
	db, err := storage.Open(nil, t.TempDir())
	require.NoError(t, err)
	s, err := NewStore(nil, db)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close(); _ = db.Close() })
	return &hashStore{db.DB, s}
}

func (h *hashStore) write(t *testing.T, fn func(*WriteTxn)) {
	b := h.db.NewIndexedBatch()
	defer b.Close()
	w := h.s.Write(b)
	fn(w)
	w.End()
	require.NoError(t, b.Commit(pebble.NoSync))
	h.s.Publish()
}

func (h *hashStore) history(t *testing.T) {
	for i, k := range []string{"a", "b", "a", "c", "b"} {
		h.write(t, func(w *WriteTxn) {
			_, err := w.Put([]byte(k), []byte{byte(i)}, 0)
			require.NoError(t, err)
		})
	}
	h.write(t, func(w *WriteTxn) {
		_, err := w.DeleteRange([]byte("c"), nil)
		require.NoError(t, err)
	})
}

// Two members that applied the same log agree on HashKV whether or not
// background compaction has physically run on them; a different history
// gives a different hash.
func TestHashKVIndependentOfPhysicalCompaction(t *testing.T) {
	x, y := newHashStore(t), newHashStore(t)
	x.history(t)
	y.history(t)
	hx, _, _, err := x.s.HashKV(0)
	require.NoError(t, err)
	hy, _, _, err := y.s.HashKV(0)
	require.NoError(t, err)
	require.Equal(t, hx, hy)

	for _, h := range []*hashStore{x, y} {
		b := h.db.NewIndexedBatch()
		_, err := h.s.Compact(b, 6)
		require.NoError(t, err)
		require.NoError(t, b.Commit(pebble.NoSync))
		b.Close()
		h.s.Publish()
	}
	// Only x compacts physically.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { x.s.RunCompactor(ctx); close(done) }()
	<-x.s.compactor.wait(6)
	cancel()
	<-done

	hx, rev, compact, err := x.s.HashKV(0)
	require.NoError(t, err)
	hy, _, _, err = y.s.HashKV(0)
	require.NoError(t, err)
	require.Equal(t, hx, hy, "physical compaction must not change the hash")
	require.EqualValues(t, 7, rev)
	require.EqualValues(t, 6, compact)

	_, _, _, err = x.s.HashKV(5)
	require.ErrorIs(t, err, ErrCompacted)
	_, _, _, err = x.s.HashKV(8)
	require.ErrorIs(t, err, ErrFutureRev)

	y.write(t, func(w *WriteTxn) {
		_, err := w.Put([]byte("d"), []byte("x"), 0)
		require.NoError(t, err)
	})
	hy, _, _, err = y.s.HashKV(0)
	require.NoError(t, err)
	require.NotEqual(t, hx, hy)
}
