package lease

import (
	"errors"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
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

// The primary checkpoints every lease that is not kept alive, at half its
// TTL (at most the configured interval), with the remaining TTL rounded up.
func TestCheckpoints(t *testing.T) {
	e := newEnv(t, Config{CheckpointInterval: 10 * time.Second})
	e.l.Promote(0)
	e.grant(1, 60) // interval 10 s (the cap)
	e.grant(2, 6)  // interval 3 s (half its TTL)
	e.clk.Advance(2 * time.Second)
	cps, _ := e.l.DueCheckpoints(10)
	require.Empty(t, cps)
	e.clk.Advance(1500 * time.Millisecond)
	cps, seq := e.l.DueCheckpoints(10)
	require.NotZero(t, seq)
	require.Equal(t, []*pb.LeaseCheckpoint{{ID: 2, Remaining_TTL: 3}}, cps) // 2.5 s rounded up
	e.checkpoint(cps)
	e.clk.Advance(7 * time.Second)
	cps, _ = e.l.DueCheckpoints(10)
	require.Equal(t, []*pb.LeaseCheckpoint{{ID: 1, Remaining_TTL: 50}}, cps) // 49.5 s rounded up
	e.checkpoint(cps)
	// Applying one plans the next one an interval later.
	e.clk.Advance(10 * time.Second)
	cps, _ = e.l.DueCheckpoints(10)
	require.Equal(t, []*pb.LeaseCheckpoint{{ID: 1, Remaining_TTL: 40}}, cps)

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

// checkpoint applies cps, as the applier does once they commit.
func (e *env) checkpoint(cps []*pb.LeaseCheckpoint) {
	e.t.Helper()
	e.stage(func(b *pebble.Batch) {
		for _, cp := range cps {
			e.l.StageCheckpoint(b, cp.ID, cp.Remaining_TTL)
		}
	})
}

// renew renews id as the member does: a recorded checkpoint is cleared
// through raft (applied here at once) before the renewal.
func (e *env) renew(id int64) (int64, error) {
	e.t.Helper()
	ttl, err := e.l.Renew(id)
	if errors.Is(err, ErrNeedsClear) {
		e.checkpoint([]*pb.LeaseCheckpoint{{ID: id}})
		ttl, err = e.l.Renew(id)
	}
	return ttl, err
}

// A lease renewed within its interval is not checkpointed (keepalives cost
// no raft entry); once renewals stop, it is checkpointed one interval
// after the last one.
func TestKeptAliveLeaseNotCheckpointed(t *testing.T) {
	e := newEnv(t, Config{})
	e.l.Promote(0)
	e.grant(1, 9) // interval 4.5 s; clientv3 renews every 3 s
	for i := 0; i < 10; i++ {
		e.clk.Advance(3 * time.Second)
		cps, _ := e.l.DueCheckpoints(10)
		require.Empty(t, cps, "renewal %d", i)
		_, err := e.l.Renew(1)
		require.NoError(t, err)
	}
	e.clk.Advance(4 * time.Second)
	cps, _ := e.l.DueCheckpoints(10)
	require.Empty(t, cps)
	e.clk.Advance(500 * time.Millisecond)
	cps, _ = e.l.DueCheckpoints(10)
	require.Equal(t, []*pb.LeaseCheckpoint{{ID: 1, Remaining_TTL: 5}}, cps) // 4.5 s rounded up
}

// A renewal never waits for nothing, and is never undone: while a
// checkpoint of the lease is in flight it refuses (the checkpoint would
// record the remaining TTL from before it), then it needs the recorded
// checkpoint cleared; a leader promoted after that gives the full TTL.
func TestRenewWaitsForCheckpointInFlight(t *testing.T) {
	e := newEnv(t, Config{})
	e.l.Promote(0)
	e.grant(1, 10)
	e.clk.Advance(5 * time.Second)
	cps, seq := e.l.DueCheckpoints(10)
	require.Equal(t, []*pb.LeaseCheckpoint{{ID: 1, Remaining_TTL: 5}}, cps)
	require.NotZero(t, seq)
	_, err := e.l.Renew(1)
	require.ErrorIs(t, err, ErrCheckpointPending)
	_, ok, _ := e.l.TryRenew(1)
	require.False(t, ok, "the fast path must not renew past a checkpoint in flight")
	wait := e.l.CheckpointPending(1)
	require.NotNil(t, wait)
	select {
	case <-wait:
		t.Fatal("settled before the checkpoint was applied")
	default:
	}
	e.checkpoint(cps)
	<-wait // closed by the apply
	require.Nil(t, e.l.CheckpointPending(1))
	_, err = e.l.Renew(1)
	require.ErrorIs(t, err, ErrNeedsClear)
	ttl, err := e.renew(1)
	require.NoError(t, err)
	require.Equal(t, int64(10), ttl)
	require.False(t, e.l.NeedsClear(1))

	// The next leader (same records) gives the full TTL plus grace.
	e.l.Demote()
	e.l.Promote(time.Second)
	e.clk.Advance(10 * time.Second)
	require.Empty(t, e.l.Expired(10))
	e.clk.Advance(time.Second)
	require.Equal(t, []int64{1}, e.l.Expired(10))

	// A batch that fails to go through raft is retried, and releases
	// renewals.
	f := newEnv(t, Config{})
	f.l.Promote(0)
	f.grant(2, 10)
	f.clk.Advance(5 * time.Second)
	cps, seq = f.l.DueCheckpoints(10)
	require.Len(t, cps, 1)
	wait = f.l.CheckpointPending(2)
	f.l.CheckpointsFailed(seq, cps)
	<-wait
	cps2, _ := f.l.DueCheckpoints(10)
	require.Equal(t, cps, cps2)
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

// A checkpoint handed out in an earlier term of this member may be applied
// after a renewal in the current one; the primary notices that the record
// is stale and fixes it at once, so a later leader does not expire the
// lease early.
func TestStaleCheckpointAfterRenew(t *testing.T) {
	e := newEnv(t, Config{CheckpointInterval: 10 * time.Second})
	e.l.Promote(0)
	e.grant(1, 100)
	e.clk.Advance(10 * time.Second)
	cps, _ := e.l.DueCheckpoints(10)
	require.Len(t, cps, 1)
	require.Equal(t, int64(90), cps[0].Remaining_TTL)
	e.l.Demote()
	e.l.Promote(0)
	_, err := e.l.Renew(1) // while the old checkpoint is in flight
	require.NoError(t, err)
	e.checkpoint(cps)
	require.True(t, e.l.NeedsClear(1))
	cps, _ = e.l.DueCheckpoints(10)
	require.Equal(t, []*pb.LeaseCheckpoint{{ID: 1, Remaining_TTL: 0}}, cps)
	e.checkpoint(cps)
	require.False(t, e.l.NeedsClear(1))
}

// primaryFor runs the lessor as primary for d, in 100 ms steps: due
// checkpoints are applied at once, expired leases revoked, and the leases
// in keep are renewed every 3 s of their own. It returns the leases
// revoked and when.
func (e *env) primaryFor(d time.Duration, extend time.Duration, keep map[int64]time.Time, revoked map[int64]time.Time) {
	e.t.Helper()
	e.l.Promote(extend)
	defer e.l.Demote()
	for end := e.clk.Now().Add(d); e.clk.Now().Before(end); {
		e.clk.Advance(100 * time.Millisecond)
		now := e.clk.Now()
		for id, last := range keep {
			if now.Sub(last) >= 3*time.Second {
				_, err := e.renew(id)
				require.NoError(e.t, err, "renew %d", id)
				keep[id] = now
			}
		}
		if cps, _ := e.l.DueCheckpoints(MaxCheckpointBatch); len(cps) > 0 {
			e.checkpoint(cps)
		}
		ids := e.l.Expired(100)
		e.revoke(ids)
		for _, id := range ids {
			revoked[id] = now
		}
	}
}

// Repeated leader changes neither keep a lease that is not kept alive
// alive beyond the documented bound, nor expire one that is kept alive.
// Each "leader" here is the same lessor promoted again: a new leader knows
// exactly the applied records, which is all this one keeps across Demote.
func TestRepeatedLeaderChangesBounded(t *testing.T) {
	const (
		ttl    = 10
		grace  = time.Second // one election timeout
		iv     = ttl * time.Second / 2
		perChg = iv + grace + time.Second // docs/design.md: per leader change
	)
	for _, term := range []time.Duration{2500 * time.Millisecond, 4 * time.Second, 7 * time.Second, 30 * time.Second} {
		t.Run(term.String(), func(t *testing.T) {
			e := newEnv(t, Config{})
			e.l.Promote(0)
			start := e.clk.Now()
			e.grant(1, ttl) // left to run down
			e.grant(2, ttl) // kept alive
			keep := map[int64]time.Time{2: start}
			revoked := map[int64]time.Time{}
			e.l.Demote()
			changes := 0
			for revoked[1].IsZero() && e.clk.Now().Sub(start) < 10*time.Minute {
				changes++
				e.primaryFor(term, grace, keep, revoked)
			}
			require.False(t, revoked[1].IsZero(), "leader changes every %v kept the lease alive", term)
			lived := revoked[1].Sub(start)
			t.Logf("leader every %v: lease with TTL %ds revoked after %v, %d leader changes", term, ttl, lived, changes)
			require.GreaterOrEqual(t, lived, ttl*time.Second, "expired early")
			// Bound: TTL + per-change extension for each change (the
			// first promotion after the grant is one), and (since terms last longer than
			// grace + 1 s) at most TTL terms in all.
			require.LessOrEqual(t, lived, ttl*time.Second+time.Duration(changes)*perChg+100*time.Millisecond)
			require.LessOrEqual(t, changes, ttl+1)
			require.Zero(t, revoked[2], "the kept-alive lease expired")
		})
	}
}
