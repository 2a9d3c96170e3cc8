package integration

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairnkv/cairn/internal/mvcc"
)

// TestDuplicateAndReorderedMessages: raft assumes an asynchronous network
// that may drop, duplicate and reorder messages (raft §5.1, "RPCs ... may
// be lost, duplicated or reordered"; etcd-io/raft's MsgApp handling is
// idempotent: an entry already in the log is skipped, a stale MsgApp is
// answered with the current index, a stale MsgAppResp is ignored). With
// every link duplicating, dropping and reordering, concurrent writes
// through every member stay safe: every member applies the same history,
// and every acknowledged write is in it at the revision it was
// acknowledged with.
func TestDuplicateAndReorderedMessages(t *testing.T) {
	c := newCluster(t, 3, withConfig(smallSnapshots))
	all := c.all()
	c.net.updateFaults(ids(all...), func(f *linkFaults) {
		f.dup = 0.3
		f.drop = 0.05
		f.hold = true
		f.reorder = true
	})
	// Held messages are released, shuffled, before each tick: every
	// message is delayed by up to one tick and reordered with the others
	// sent on its link in that tick.
	c.setTickHook(c.net.releaseHeld)

	type ack struct {
		key, val string
		rev      int64
	}
	var (
		mu    sync.Mutex
		acks  []ack
		fails int
	)
	const writers, perWriter = 3, 25
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		nd := all[w%len(all)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := nd.member()
			for i := 0; i < perWriter; i++ {
				key := fmt.Sprintf("w%d/%02d", w, i)
				if i%3 == 0 {
					key = "hot" // contended key
				}
				val := fmt.Sprintf("w%d-%d", w, i)
				// A lost forwarded proposal is never answered: give up
				// after a while (the outcome is then unknown).
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				res, err := m.Propose(ctx, &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte(key), Value: []byte(val)}})
				cancel()
				mu.Lock()
				if err == nil && res.Err == nil {
					acks = append(acks, ack{key, val, res.Resp.(*pb.PutResponse).Header.Revision})
				} else {
					fails++
				}
				mu.Unlock()
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	c.waitFor("writers finish", 20000, func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	})

	// Heal and let everything settle, then compare.
	c.setTickHook(nil)
	c.net.heal()
	c.waitLeader()
	d := c.waitConverged(3000)
	st := &c.net.stats
	t.Logf("acknowledged %d, unknown %d; network: sent %d, duplicated %d, dropped %d, snapshots %d; final rev %d",
		len(acks), fails, st.sent.Load(), st.duplicated.Load(), st.dropped.Load(), st.snapOK.Load(), d.rev)
	if st.duplicated.Load() == 0 {
		t.Fatal("no message was duplicated")
	}
	if len(acks) < writers*perWriter/2 {
		t.Fatalf("only %d of %d writes acknowledged", len(acks), writers*perWriter)
	}
	if err := sameHistory(c.running()...); err != nil {
		t.Fatal(err)
	}
	revs := map[int64]ack{}
	for _, a := range acks {
		if b, dup := revs[a.rev]; dup {
			t.Fatalf("two acknowledged writes got revision %d: %+v and %+v", a.rev, a, b)
		}
		revs[a.rev] = a
		for _, nd := range c.running() {
			rr, err := nd.member().Store().Range([]byte(a.key), nil, mvcc.RangeOptions{Rev: a.rev})
			if err != nil {
				t.Fatal(err)
			}
			if len(rr.KVs) != 1 || string(rr.KVs[0].Value) != a.val || rr.KVs[0].ModRevision != a.rev {
				t.Fatalf("%s: acknowledged %s=%s at revision %d, but reads %v there", nd.name, a.key, a.val, a.rev, rr.KVs)
			}
		}
	}
}
