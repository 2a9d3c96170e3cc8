package lease

import (
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/cairnkv/cairn/internal/clock"
)

// env is a lessor on an in-memory DB and a manual clock; stage runs fn
// in one committed batch, as the applier would.
type env struct {
	t   *testing.T
	db  *pebble.DB
	clk *clock.Manual
	l   *Lessor
	cfg Config
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	clk := clock.NewManual(time.Unix(1_000_000, 0))
	cfg.Clock = clk
	l, err := New(zaptest.NewLogger(t), db, cfg)
	require.NoError(t, err)
	return &env{t: t, db: db, clk: clk, l: l, cfg: cfg}
}

func (e *env) stage(fn func(b *pebble.Batch)) {
	e.t.Helper()
	b := e.db.NewIndexedBatch()
	defer b.Close()
	fn(b)
	require.NoError(e.t, b.Commit(pebble.NoSync))
}

func (e *env) grant(id, ttl int64) {
	e.t.Helper()
	e.stage(func(b *pebble.Batch) {
		got, err := e.l.StageGrant(b, id, ttl)
		require.NoError(e.t, err)
		require.Equal(e.t, ttl, got)
	})
}

// revoke applies the revocation of ids, as the applier would once the
// primary's proposals commit.
func (e *env) revoke(ids []int64) {
	e.t.Helper()
	e.stage(func(b *pebble.Batch) {
		for _, id := range ids {
			require.NoError(e.t, e.l.StageRevoke(b, id))
		}
	})
}

// reopen loads a new lessor from the same DB (a restart).
func (e *env) reopen() {
	e.t.Helper()
	l, err := New(zaptest.NewLogger(e.t), e.db, e.cfg)
	require.NoError(e.t, err)
	e.l = l
}

func TestGrantErrors(t *testing.T) {
	e := newEnv(t, Config{})
	e.grant(1, 10)
	e.stage(func(b *pebble.Batch) {
		_, err := e.l.StageGrant(b, 1, 10)
		require.ErrorIs(t, err, ErrExists) // Compat: ErrGRPCLeaseExist
		_, err = e.l.StageGrant(b, 2, MaxTTL+1)
		require.ErrorIs(t, err, ErrTTLTooLarge) // Compat: ErrGRPCLeaseTTLTooLarge
		_, err = e.l.StageGrant(b, 0, 10)
		require.ErrorIs(t, err, ErrNotFound)
		require.ErrorIs(t, e.l.StageRevoke(b, 7), ErrNotFound)
	})
	require.True(t, e.l.Exists(1))
	require.False(t, e.l.Exists(2))
	require.Equal(t, []int64{1}, e.l.Leases())
}

// Only the primary keeps countdowns; a follower never expires or renews.
func TestExpiryOnlyOnPrimary(t *testing.T) {
	e := newEnv(t, Config{})
	e.grant(1, 10)
	e.clk.Advance(time.Hour)
	require.Empty(t, e.l.Expired(100))
	_, err := e.l.Renew(1)
	require.ErrorIs(t, err, ErrNotPrimary)
	_, err = e.l.TimeToLive(1)
	require.ErrorIs(t, err, ErrNotPrimary)

	e.l.Promote(0)
	e.clk.Advance(9 * time.Second)
	require.Empty(t, e.l.Expired(100))
	info, err := e.l.TimeToLive(1)
	require.NoError(t, err)
	require.Equal(t, Info{ID: 1, GrantedTTL: 10, TTL: 1}, info)
	e.clk.Advance(time.Second)
	require.Equal(t, []int64{1}, e.l.Expired(100))
	// Offered once; again only after the retry interval if still there.
	require.Empty(t, e.l.Expired(100))
	e.clk.Advance(ExpiredRetryInterval)
	require.Equal(t, []int64{1}, e.l.Expired(100))
	// An expired lease cannot be renewed: its revocation is under way.
	_, err = e.l.Renew(1)
	require.ErrorIs(t, err, ErrNotFound)

	e.l.Demote()
	e.clk.Advance(time.Hour)
	require.Empty(t, e.l.Expired(100))
}

func TestRenewRestartsCountdown(t *testing.T) {
	e := newEnv(t, Config{})
	e.l.Promote(0)
	e.grant(1, 10) // granted on the primary: countdown starts at once
	e.clk.Advance(8 * time.Second)
	ttl, err := e.l.Renew(1)
	require.NoError(t, err)
	require.Equal(t, int64(10), ttl)
	e.clk.Advance(9 * time.Second)
	require.Empty(t, e.l.Expired(100))
	e.clk.Advance(time.Second)
	require.Equal(t, []int64{1}, e.l.Expired(100))
	_, err = e.l.Renew(42)
	require.ErrorIs(t, err, ErrNotFound)
}

// A new primary gives every lease its remaining TTL (checkpointed, else
// full) plus the extension: etcd's Promote(electionTimeout).
func TestPromoteUsesCheckpointPlusExtension(t *testing.T) {
	e := newEnv(t, Config{})
	e.grant(1, 100)
	e.grant(2, 100)
	e.stage(func(b *pebble.Batch) { e.l.StageCheckpoint(b, 1, 30) })
	e.reopen() // the checkpoint is persisted
	require.True(t, e.l.NeedsClear(1))
	require.False(t, e.l.NeedsClear(2))

	e.l.Promote(time.Second)
	e.clk.Advance(30 * time.Second)
	require.Empty(t, e.l.Expired(100), "no lease may expire before remaining + extension")
	e.clk.Advance(time.Second)
	require.Equal(t, []int64{1}, e.l.Expired(100))
	e.revoke([]int64{1})
	e.clk.Advance(70 * time.Second)
	require.Equal(t, []int64{2}, e.l.Expired(100))

	// A renewal's clear (checkpoint 0) restores the full TTL.
	e.stage(func(b *pebble.Batch) { e.l.StageCheckpoint(b, 1, 0) })
	require.False(t, e.l.NeedsClear(1))
}

// The primary checkpoints long leases every interval, with the remaining
// TTL rounded up, and never short ones (they lose at most their TTL).
func TestCheckpoints(t *testing.T) {
	e := newEnv(t, Config{CheckpointInterval: 10 * time.Second})
	e.l.Promote(0)
	e.grant(1, 60)
	e.grant(2, 5)
	e.clk.Advance(9 * time.Second)
	require.Empty(t, e.l.DueCheckpoints(10))
	e.clk.Advance(1500 * time.Millisecond)
	cps := e.l.DueCheckpoints(10)
	require.Len(t, cps, 1)
	require.Equal(t, int64(1), cps[0].ID)
	require.Equal(t, int64(50), cps[0].Remaining_TTL) // 49.5 s rounded up
	e.stage(func(b *pebble.Batch) { e.l.StageCheckpoint(b, 1, cps[0].Remaining_TTL) })
	// Applying it plans the next one.
	e.clk.Advance(10 * time.Second)
	cps = e.l.DueCheckpoints(10)
	require.Len(t, cps, 1)
	require.Equal(t, int64(40), cps[0].Remaining_TTL)

	// A follower that applies it and then leads uses it.
	f := newEnv(t, Config{CheckpointInterval: 10 * time.Second})
	f.grant(1, 60)
	f.stage(func(b *pebble.Batch) { f.l.StageCheckpoint(b, 1, 40) })
	f.l.Promote(2 * time.Second)
	f.clk.Advance(41 * time.Second)
	require.Empty(t, f.l.Expired(10))
	f.clk.Advance(time.Second)
	require.Equal(t, []int64{1}, f.l.Expired(10))
}

// Promote spreads leases that would all expire in one second so that at
// most 3/4 of the revoke rate expire per second; none moves earlier.
func TestPromoteSpreadsPileUp(t *testing.T) {
	e := newEnv(t, Config{RevokeRate: 100})
	const n = 300
	for id := int64(1); id <= n; id++ {
		e.grant(id, 10)
	}
	e.l.Promote(0)
	var perSecond []int
	for s := 0; s < 20; s++ {
		e.clk.Advance(time.Second)
		got := e.l.Expired(n)
		e.revoke(got)
		perSecond = append(perSecond, len(got))
	}
	total := 0
	for s, c := range perSecond {
		if s < 9 {
			require.Zero(t, c, "second %d: no lease may expire early", s+1)
		}
		require.LessOrEqual(t, c, 75, "second %d", s+1)
		total += c
	}
	require.Equal(t, n, total)
}

// Revoke returns the keys attached in key order, and attach/detach are
// kept in the DB only.
func TestRevokeAndKeys(t *testing.T) {
	e := newEnv(t, Config{})
	e.grant(5, 10)
	e.stage(func(b *pebble.Batch) {
		e.l.StageAttach(b, 5, []byte("b"))
		e.l.StageAttach(b, 5, []byte("a"))
		e.l.StageAttach(b, 5, []byte("c"))
		e.l.StageDetach(b, 5, []byte("c"))
	})
	keys, err := Keys(e.db, 5)
	require.NoError(t, err)
	require.Equal(t, [][]byte{[]byte("a"), []byte("b")}, keys)
	e.l.Promote(0)
	e.stage(func(b *pebble.Batch) {
		require.NoError(t, e.l.StageRevoke(b, 5))
		for _, k := range keys {
			e.l.StageDetach(b, 5, k)
		}
	})
	require.False(t, e.l.Exists(5))
	e.clk.Advance(time.Hour)
	require.Empty(t, e.l.Expired(10))
	keys, err = Keys(e.db, 5)
	require.NoError(t, err)
	require.Empty(t, keys)
	e.reopen()
	require.Empty(t, e.l.Leases())
}

// A checkpoint taken before a renewal but applied after it would record a
// stale, shorter remaining TTL; the primary notices and records the fresh
// state at once (a clear), so a later leader does not expire the lease
// early.
func TestStaleCheckpointAfterRenew(t *testing.T) {
	e := newEnv(t, Config{CheckpointInterval: 10 * time.Second})
	e.l.Promote(0)
	e.grant(1, 100)
	e.clk.Advance(10 * time.Second)
	cps := e.l.DueCheckpoints(10)
	require.Len(t, cps, 1)
	require.Equal(t, int64(90), cps[0].Remaining_TTL)
	_, err := e.l.Renew(1) // while the checkpoint is in flight
	require.NoError(t, err)
	e.stage(func(b *pebble.Batch) { e.l.StageCheckpoint(b, 1, cps[0].Remaining_TTL) })
	require.True(t, e.l.NeedsClear(1))
	cps = e.l.DueCheckpoints(10)
	require.Len(t, cps, 1)
	require.Equal(t, int64(0), cps[0].Remaining_TTL)
	e.stage(func(b *pebble.Batch) { e.l.StageCheckpoint(b, 1, 0) })
	require.False(t, e.l.NeedsClear(1))
}
