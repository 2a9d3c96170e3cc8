package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairnkv/cairn/internal/watch"

	"github.com/cairnkv/cairn/internal/config"
)

// smallSnapshots makes the leader compact its raft log every 5 applied
// entries, keeping only 2 (etcd's --snapshot-count and
// --experimental-snapshot-catchup-entries), so a follower that misses more
// than that must be sent a snapshot. The counts are entries, not requests:
// concurrent proposals share entries (raftnode merges them), so the tests'
// bursts of 60-100 parallel puts may make only a few entries.
func smallSnapshots(cfg *config.Server) {
	cfg.SnapshotCount = 5
	cfg.SnapshotCatchUpEntries = 2
}

// TestSnapshotCatchUp: a follower cut off while many entries commit finds,
// once back, that the leader has compacted the entries it needs
// (raft.ErrCompacted on Storage.Term/Entries), so the leader sends a
// MsgSnap (raft's maybeSendSnapshot) whose data travels through the
// SnapshotStores; the follower installs it, and from then on follows the
// log. Its state is then identical to the others', and survives restarts
// (of the follower alone, then of the whole cluster).
func TestSnapshotCatchUp(t *testing.T) {
	c := newCluster(t, 3, withConfig(smallSnapshots))
	ld := c.waitLeader()
	c.mustPut(ld, "first", "1")
	c.waitConverged(1000)
	f := c.others(ld)[0]
	// A watcher on the follower must get every change the snapshot
	// skipped over, replayed from the snapshot's revision log.
	ws := f.member().Watch().NewStream()
	defer ws.Close()
	ws.Create(&pb.WatchCreateRequest{Key: []byte("snap/"), RangeEnd: []byte("snap0")})
	c.net.partition(ids(f), ids(c.all()...))

	c.putMany(ld, "snap/", 200, 16)
	// Overwrites and deletes too, so the snapshot carries history.
	for i := 0; i < 10; i++ {
		c.mustPut(ld, fmt.Sprintf("snap/%05d", i), "overwritten")
	}
	c.waitConverged(1000, c.others(f)...)
	if c.net.stats.snapOK.Load() != 0 {
		t.Fatalf("a snapshot was sent before the follower came back")
	}

	c.net.heal()
	d := c.waitConverged(3000, c.running()...)
	if n := c.net.stats.snapOK.Load(); n == 0 {
		t.Fatalf("the follower caught up without a snapshot (SnapshotCount=%d, SnapshotCatchUpEntries=%d): the leader's log was not compacted",
			f.cfg.SnapshotCount, f.cfg.SnapshotCatchUpEntries)
	}
	t.Logf("snapshots sent: %d ok, %d failed; state: rev %d, %d keys", c.net.stats.snapOK.Load(), c.net.stats.snapFailed.Load(), d.rev, len(d.kvs))
	if len(d.kvs) != 201 {
		t.Fatalf("want 201 keys, got %d", len(d.kvs))
	}
	// Old revisions came with the snapshot: the follower reads history.
	if err := sameHistory(c.running()...); err != nil {
		t.Fatal(err)
	}
	checkWatched(t, ws, 210)

	// After the snapshot the follower follows the log again.
	c.mustPut(f, "after-snapshot", "1")
	c.waitConverged(1000)
	if err := c.barrier(f); err != nil {
		t.Fatalf("linearizable barrier on the follower after its snapshot: %v", err)
	}

	// Restart the follower on its data dir: it restarts from the
	// installed snapshot plus the log after it (raft Config.Applied).
	f.restart()
	c.waitConverged(2000)
	c.mustPut(ld, "after-restart", "1")
	c.waitConverged(1000)

	// Restart the whole cluster: every member replays from its own
	// compacted log.
	for _, nd := range c.all() {
		nd.mustStop()
	}
	for _, nd := range c.all() {
		nd.start()
	}
	c.waitLeader()
	d = c.waitConverged(2000)
	if len(d.kvs) != 203 {
		t.Fatalf("after a full restart: want 203 keys, got %d", len(d.kvs))
	}
	if err := sameHistory(c.running()...); err != nil {
		t.Fatal(err)
	}
	c.mustPut(c.running()[1], "after-full-restart", "1")
	c.waitConverged(1000)
}

// TestStopAfterSendingSnapshot: a member that has given raft a snapshot
// (Storage.Snapshot pins a Pebble snapshot) must release it at shutdown;
// otherwise Pebble's Close reports "leaked snapshots" and Run fails. This
// was a bug, found by this test and fixed in Member.Run.
func TestStopAfterSendingSnapshot(t *testing.T) {
	c := newCluster(t, 3, withConfig(smallSnapshots))
	c.strict = true
	ld := c.waitLeader()
	f := c.others(ld)[0]
	// A watcher on the follower must get every change the snapshot
	// skipped over, replayed from the snapshot's revision log.
	ws := f.member().Watch().NewStream()
	defer ws.Close()
	ws.Create(&pb.WatchCreateRequest{Key: []byte("snap/"), RangeEnd: []byte("snap0")})
	c.net.partition(ids(f), ids(c.all()...))
	c.putMany(ld, "k", 100, 16)
	c.net.heal()
	c.waitConverged(3000)
	if c.net.stats.snapOK.Load() == 0 {
		t.Fatal("no snapshot was sent")
	}
	if err := ld.stop(); err != nil {
		t.Fatalf("stopping the leader that sent a snapshot: %v", err)
	}
}

// checkWatched reads n events from ws after its created response: each put
// of the test's prefix once, in revision order.
func checkWatched(t *testing.T, ws *watch.Stream, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var last int64
	got := 0
	for got < n {
		resp, _, err := ws.Next(ctx)
		if err != nil {
			t.Fatalf("watch on the follower: %d of %d events: %v", got, n, err)
		}
		if resp.Canceled || resp.CompactRevision != 0 {
			t.Fatalf("watch on the follower canceled: %v", resp)
		}
		for _, ev := range resp.Events {
			if ev.Kv.ModRevision <= last {
				t.Fatalf("watch event at revision %d after %d", ev.Kv.ModRevision, last)
			}
			last = ev.Kv.ModRevision
			got++
		}
	}
	if got != n {
		t.Fatalf("watch got %d events, want %d", got, n)
	}
}
