package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// storeSnapshot is everything a client can read, at the current revision
// and at some older ones, to compare a store before and after a restart.
type storeSnapshot struct {
	rev     int64
	current []kv
	history map[int64][]kv // revision -> everything at that revision
}

func takeSnapshot(t testing.TB, cli *clientv3.Client, historyRevs ...int64) storeSnapshot {
	t.Helper()
	ctx := testCtx(t)
	resp, err := cli.Get(ctx, "", clientv3.WithPrefix())
	require.NoError(t, err)
	snap := storeSnapshot{rev: resp.Header.Revision, current: kvsOf(resp.Kvs), history: map[int64][]kv{}}
	for _, rev := range historyRevs {
		resp, err := cli.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(rev))
		require.NoError(t, err, "read at revision %d", rev)
		snap.history[rev] = kvsOf(resp.Kvs)
	}
	return snap
}

func TestRestart(t *testing.T) {
	s := startServer(t)
	cli := s.newClient()
	ctx := testCtx(t)

	// Revisions 2..7: overwrites, a delete and a re-create.
	mustPut(t, cli, "a", "1", 2)
	mustPut(t, cli, "b", "1", 3)
	mustPut(t, cli, "a", "2", 4)
	_, err := cli.Delete(ctx, "b") // 5
	require.NoError(t, err)
	mustPut(t, cli, "b", "2", 6)
	txn, err := cli.Txn(ctx).Then(clientv3.OpPut("c", "1"), clientv3.OpPut("d", "1")).Commit()
	require.NoError(t, err)
	require.Equal(t, int64(7), txn.Header.Revision)
	_, err = cli.Compact(ctx, 3)
	require.NoError(t, err)
	// The newest revision is a delete, so no live key carries it.
	del, err := cli.Delete(ctx, "d")
	require.NoError(t, err)
	require.Equal(t, int64(8), del.Header.Revision)
	first := del.Header

	before := takeSnapshot(t, cli, 3, 4, 5, 6, 7)
	require.Equal(t, int64(8), before.rev)
	require.Equal(t, []kv{{"a", "2", 2, 4, 2, 0}, {"b", "2", 6, 6, 1, 0}, {"c", "1", 7, 7, 1, 0}}, before.current)
	cli.Close()

	s.stop()
	s.start()
	cli = s.newClient()

	after := takeSnapshot(t, cli, 3, 4, 5, 6, 7)
	require.Equal(t, before, after, "store after a clean restart")
	get, err := cli.Get(ctx, "a")
	require.NoError(t, err)
	require.Equal(t, first.ClusterId, get.Header.ClusterId, "cluster ID survives a restart")
	require.Equal(t, first.MemberId, get.Header.MemberId, "member ID survives a restart")
	require.GreaterOrEqual(t, get.Header.RaftTerm, first.RaftTerm)
	_, err = cli.Get(ctx, "a", clientv3.WithRev(2))
	require.ErrorIs(t, err, rpctypes.ErrCompacted, "the compaction survives a restart")
	_, err = cli.Get(ctx, "a", clientv3.WithRev(9))
	require.ErrorIs(t, err, rpctypes.ErrFutureRev)

	// The revision sequence continues where it stopped.
	mustPut(t, cli, "e", "1", 9)
	put, err := cli.Put(ctx, "a", "3", clientv3.WithPrevKV())
	require.NoError(t, err)
	require.Equal(t, int64(10), put.Header.Revision)
	require.Equal(t, []kv{{"a", "2", 2, 4, 2, 0}}, kvsOf([]*mvccpb.KeyValue{put.PrevKv}))

	// Compact away the newest revision's tombstone, then restart again: the
	// revision must not go back (etcd keeps the compacted revision as a
	// floor for the current one).
	del, err = cli.Delete(ctx, "e")
	require.NoError(t, err)
	require.Equal(t, int64(11), del.Header.Revision)
	_, err = cli.Compact(ctx, 11, clientv3.WithCompactPhysical())
	require.NoError(t, err)
	before = takeSnapshot(t, cli, 11)
	cli.Close()

	s.stop()
	s.start()
	cli = s.client()

	after = takeSnapshot(t, cli, 11)
	require.Equal(t, before, after, "store after the second restart")
	require.Equal(t, int64(11), after.rev)
	_, err = cli.Get(ctx, "a", clientv3.WithRev(10))
	require.ErrorIs(t, err, rpctypes.ErrCompacted)
	mustPut(t, cli, "f", "1", 12)
	get, err = cli.Get(ctx, "", clientv3.WithPrefix())
	require.NoError(t, err)
	require.Equal(t, []kv{{"a", "3", 2, 10, 3, 0}, {"b", "2", 6, 6, 1, 0}, {"c", "1", 7, 7, 1, 0}, {"f", "1", 12, 12, 1, 0}}, kvsOf(get.Kvs))
}

// crashWrite is one put a crash-test writer issued.
type crashWrite struct {
	round, writer, seq int
	rev                int64 // revision in the put response's header
}

func (w crashWrite) key() string {
	return fmt.Sprintf("crash/r%d/w%d/%06d", w.round, w.writer, w.seq)
}

func parseCrashKey(t testing.TB, key string) crashWrite {
	t.Helper()
	var w crashWrite
	_, err := fmt.Sscanf(key, "crash/r%d/w%d/%06d", &w.round, &w.writer, &w.seq)
	require.NoError(t, err, "unexpected key %q in the store", key)
	require.Equal(t, w.key(), key, "unexpected key in the store")
	return w
}

const (
	crashRounds     = 3
	crashWriters    = 8
	crashAckTarget  = 100 * crashWriters  // kill once this many puts are acknowledged...
	crashMaxWriting = 2 * time.Second     // ... or after this long, whichever is first
	crashWaitAcks   = 30 * time.Second    // no acknowledgement at all by then fails the test
	crashValueExtra = "-value-of-the-put" // value = key + this
)

// TestCrashRecovery kills the server with SIGKILL while 8 clients write,
// three times, and checks after every restart that every acknowledged put is
// there with the revision its response reported, that every write in flight
// at the kill is either wholly there or wholly gone, and that revisions
// neither repeat nor skip.
func TestCrashRecovery(t *testing.T) {
	s := startServer(t)
	var acked []crashWrite
	for round := range crashRounds {
		if round > 0 {
			s.start()
		}
		cli := s.newClient()
		startRev := verifyCrashStore(t, cli, acked, round)
		cli.Close()

		got := writeUntilKilled(t, s, round)
		require.NotEmpty(t, got, "round %d: no put was acknowledged before the kill", round)
		for _, w := range got {
			require.Greater(t, w.rev, startRev, "round %d: %s acknowledged at a revision the store had before the round", round, w.key())
		}
		acked = append(acked, got...)
		t.Logf("round %d: %d puts acknowledged before kill -9 (revisions %d..)", round, len(got), startRev+1)
	}
	s.start()
	cli := s.newClient()
	defer cli.Close()
	endRev := verifyCrashStore(t, cli, acked, crashRounds)
	// The store still takes writes, at the next revision.
	mustPut(t, cli, "after-crashes", "x", endRev+1)
}

// writeUntilKilled runs the writers of one round, kills the server while
// they write and returns the acknowledged puts.
func writeUntilKilled(t *testing.T, s *server, round int) []crashWrite {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu       sync.Mutex
		acks     []crashWrite
		failures []string
		killed   atomic.Bool
		first    = make(chan struct{}) // closed at the first acknowledgement
		target   = make(chan struct{}) // closed at crashAckTarget of them
		wg       sync.WaitGroup
	)
	clients := make([]*clientv3.Client, crashWriters)
	for i := range clients {
		clients[i] = s.newClient()
		defer clients[i].Close()
	}
	for w, cli := range clients {
		wg.Go(func() {
			var lastRev int64
			for seq := 0; ; seq++ {
				cw := crashWrite{round: round, writer: w, seq: seq}
				resp, err := cli.Put(ctx, cw.key(), cw.key()+crashValueExtra)
				if err != nil {
					if !killed.Load() {
						mu.Lock()
						failures = append(failures, fmt.Sprintf("put %s before the kill: %v", cw.key(), err))
						mu.Unlock()
					}
					return
				}
				cw.rev = resp.Header.Revision
				mu.Lock()
				if cw.rev <= lastRev {
					failures = append(failures, fmt.Sprintf("writer %d: put %s acknowledged at revision %d after its previous put at %d", w, cw.key(), cw.rev, lastRev))
				}
				lastRev = cw.rev
				acks = append(acks, cw)
				switch len(acks) {
				case 1:
					close(first)
				case crashAckTarget:
					close(target)
				}
				mu.Unlock()
			}
		})
	}

	enough := time.NewTimer(crashMaxWriting)
	defer enough.Stop()
	select {
	case <-target:
	case <-enough.C:
	}
	// A slow server may not have acknowledged anything yet: give it a
	// bounded while longer.
	slow := time.NewTimer(crashWaitAcks)
	defer slow.Stop()
	select {
	case <-first:
	case <-slow.C:
	case <-s.proc.exited:
	}
	killed.Store(true)
	s.kill() // SIGKILL with puts in flight: the writers never pause
	cancel()
	wg.Wait()
	require.Empty(t, failures, "round %d", round)
	return acks
}

// verifyCrashStore checks the store against the acknowledged puts of the
// rounds before round and returns the store's revision.
func verifyCrashStore(t *testing.T, cli *clientv3.Client, acked []crashWrite, round int) int64 {
	t.Helper()
	resp, err := cli.Get(testCtx(t), "crash/", clientv3.WithPrefix())
	require.NoError(t, err)
	rev := resp.Header.Revision

	type stored struct {
		crashWrite
		kv kv
	}
	byKey := map[string]stored{}
	byRev := map[int64]string{}
	perWriter := map[[2]int][]stored{} // {round, writer} -> puts in seq order
	for _, x := range kvsOf(resp.Kvs) {
		w := parseCrashKey(t, x.key)
		require.Less(t, w.round, round, "key %s from a round that has not run", x.key)
		require.Equal(t, x.key+crashValueExtra, x.value, "value of %s", x.key)
		require.Equal(t, x.create, x.mod, "%s was written once", x.key)
		require.Equal(t, int64(1), x.version, "%s was written once", x.key)
		require.LessOrEqual(t, x.mod, rev, "%s is newer than the store's revision", x.key)
		other, dup := byRev[x.mod]
		require.False(t, dup, "revision %d is the mod_revision of both %s and %s", x.mod, other, x.key)
		byRev[x.mod] = x.key
		st := stored{w, x}
		st.rev = x.mod
		byKey[x.key] = st
		perWriter[[2]int{w.round, w.writer}] = append(perWriter[[2]int{w.round, w.writer}], st)
	}

	// Every acknowledged put is there, at the revision it was acknowledged at.
	lastAcked := map[[2]int]int{} // {round, writer} -> highest acknowledged seq
	for _, a := range acked {
		got, ok := byKey[a.key()]
		require.True(t, ok, "acknowledged put %s (revision %d) is lost after kill -9", a.key(), a.rev)
		require.Equal(t, a.rev, got.kv.mod, "mod_revision of acknowledged put %s", a.key())
		id := [2]int{a.round, a.writer}
		if seq, ok := lastAcked[id]; !ok || a.seq > seq {
			lastAcked[id] = a.seq
		}
	}

	// Each writer's puts are a gap-free sequence with increasing revisions;
	// at most the one put in flight at the kill is there unacknowledged.
	for id, puts := range perWriter {
		sort.Slice(puts, func(i, j int) bool { return puts[i].seq < puts[j].seq })
		for i, p := range puts {
			require.Equal(t, i, p.seq, "round %d writer %d: put %d is stored but put %d is not", id[0], id[1], p.seq, i)
			if i > 0 {
				require.Greater(t, p.rev, puts[i-1].rev, "round %d writer %d: revisions out of order", id[0], id[1])
			}
		}
		last, ok := lastAcked[id]
		if !ok {
			last = -1
		}
		require.LessOrEqual(t, len(puts)-1, last+1, "round %d writer %d: more than one unacknowledged put survived", id[0], id[1])
	}

	// Every revision since the fresh store's 1 is exactly one put.
	var missing []string
	for r := int64(2); r <= rev; r++ {
		if _, ok := byRev[r]; !ok {
			missing = append(missing, fmt.Sprint(r))
		}
	}
	require.Empty(t, missing, "revisions 2..%d: no put has revision(s) %s", rev, strings.Join(missing, ","))
	t.Logf("after round %d: %d puts stored, %d acknowledged, store at revision %d", round, len(byKey), len(acked), rev)
	return rev
}
