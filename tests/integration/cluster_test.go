package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/cairnkv/cairn/internal/api"
	"github.com/cairnkv/cairn/internal/raftnode"
)

// TestBootstrapAndReplicate: a new cluster of 1 and of 3 members
// bootstraps (raft's Bootstrap with every initial peer in the first
// ConfState), elects a leader, and applies every committed write in the
// same order on every member: raft's State Machine Safety property (no two
// members apply different entries at one index), seen through the MVCC
// store (same keys, values, create/mod revisions and versions at head).
func TestBootstrapAndReplicate(t *testing.T) {
	for _, n := range []int{1, 3} {
		t.Run(fmt.Sprintf("members=%d", n), func(t *testing.T) {
			c := newCluster(t, n)
			ld := c.waitLeader()
			kv := api.NewKV(ld.member(), 128)

			// The KV service validates before proposing (etcd's
			// checkPutRequest): an empty key never reaches raft.
			if _, err := kv.Put(context.Background(), &pb.PutRequest{Value: []byte("v")}); err != rpctypes.ErrGRPCEmptyKey {
				t.Fatalf("put with an empty key: got %v, want %v", err, rpctypes.ErrGRPCEmptyKey)
			}

			// Writes through every member: followers forward proposals
			// to the leader (raft's MsgProp forwarding).
			var lastRev int64
			for i := 0; i < 10; i++ {
				nd := c.running()[i%n]
				rev := c.mustPut(nd, fmt.Sprintf("k%02d", i), fmt.Sprintf("v%d", i))
				if rev <= lastRev {
					t.Fatalf("put %d got revision %d after %d: revisions must increase", i, rev, lastRev)
				}
				lastRev = rev
			}
			// Overwrite and delete through the gRPC service.
			resp, err := drive(c, opTicks, func() (*pb.PutResponse, error) {
				return kv.Put(context.Background(), &pb.PutRequest{Key: []byte("k00"), Value: []byte("again"), PrevKv: true})
			})
			if err != nil {
				t.Fatal(err)
			}
			if string(resp.PrevKv.GetValue()) != "v0" {
				t.Fatalf("prev kv: %v", resp.PrevKv)
			}
			if _, err := drive(c, opTicks, func() (*pb.DeleteRangeResponse, error) {
				return kv.DeleteRange(context.Background(), &pb.DeleteRangeRequest{Key: []byte("k01")})
			}); err != nil {
				t.Fatal(err)
			}

			d := c.waitConverged(1000)
			if len(d.kvs) != 9 {
				t.Fatalf("want 9 keys, got %d: %v", len(d.kvs), d.kvs)
			}
			// A linearizable read on every member sees the last write
			// (ReadIndex: read index >= every index committed before).
			for _, nd := range c.running() {
				rr, err := drive(c, opTicks, func() (*pb.RangeResponse, error) {
					return api.NewKV(nd.member(), 128).Range(context.Background(), &pb.RangeRequest{Key: []byte("k00")})
				})
				if err != nil {
					t.Fatalf("linearizable range on %s: %v", nd.name, err)
				}
				if len(rr.Kvs) != 1 || string(rr.Kvs[0].Value) != "again" {
					t.Fatalf("linearizable range on %s: %v", nd.name, rr.Kvs)
				}
			}
		})
	}
}

// TestLeaderLoss: when the leader dies or is cut off, the other members
// elect a new one within a bounded number of ticks (raft §5.2: a follower
// that hears nothing for its randomized election timeout, in
// [ElectionTick, 2*ElectionTick), campaigns; with PreVote it first checks
// that it could win; with CheckQuorum a leader cut off from a quorum steps
// down after one election timeout). Writes continue on the new leader, and
// the old leader, once back, follows the new term and catches up to the
// same state.
func TestLeaderLoss(t *testing.T) {
	for _, mode := range []string{"stop", "partition"} {
		t.Run(mode, func(t *testing.T) {
			c := newCluster(t, 3)
			old := c.waitLeader()
			c.mustPut(old, "before", "1")
			c.waitConverged(1000)
			oldTerm := old.member().Status().Term
			rest := c.others(old)
			all := c.all()

			switch mode {
			case "stop":
				old.mustStop()
			case "partition":
				c.net.partition(ids(old), ids(all...))
			}
			ticks := 0
			c.waitFor("new leader among the rest", maxElectionTicks, func() bool {
				ticks++
				ld := c.leaderOf(rest...)
				if ld == nil {
					return false
				}
				if mode == "partition" {
					// CheckQuorum: the cut-off leader steps down too.
					return old.member().Status().Leader != old.ID()
				}
				return true
			})
			nl := c.leaderOf(rest...)
			if nl == old || nl.member().Status().Term <= oldTerm {
				t.Fatalf("new leader %s at term %d after leader %s at term %d", nl.name, nl.member().Status().Term, old.name, oldTerm)
			}
			t.Logf("new leader %s elected after %d ticks", nl.name, ticks)

			for i := 0; i < 5; i++ {
				c.mustPut(rest[i%len(rest)], fmt.Sprintf("after%d", i), "2")
			}
			c.waitConverged(1000, rest...)

			switch mode {
			case "stop":
				old.start()
			case "partition":
				c.net.heal()
			}
			d := c.waitConverged(2000, c.running()...)
			if len(d.kvs) != 6 {
				t.Fatalf("want 6 keys, got %v", d.kvs)
			}
			if st := old.member().Status(); st.Term <= oldTerm || st.Leader == 0 {
				t.Fatalf("old leader did not join the new term: %+v", st)
			}
			// The old leader serves linearizable reads again.
			if err := c.barrier(old); err != nil {
				t.Fatalf("barrier on the old leader after it rejoined: %v", err)
			}
			if _, ok := get(old, "after4"); !ok {
				t.Fatal("old leader misses a write after its linearizable barrier")
			}
		})
	}
}

// TestMinorityPartition: a leader cut off with a minority can neither
// commit (raft commits only entries stored on a quorum) nor serve a
// linearizable read. Reads use ReadIndex with ReadOnlySafe: the leader
// confirms its leadership with a heartbeat round acknowledged by a quorum
// before answering (raft thesis §6.4), so a deposed leader that still
// believes it leads (its clock is frozen here, like a long GC pause, so
// CheckQuorum does not save it) must block, not return stale data, while
// the majority elects a new leader and commits a newer value.
func TestMinorityPartition(t *testing.T) {
	c := newCluster(t, 5)
	old := c.waitLeader()
	c.mustPut(old, "x", "old")
	c.waitConverged(1000)
	all := c.all()
	var minority, majority []*node
	minority = append(minority, old)
	for _, nd := range c.others(old) {
		if len(minority) < 2 {
			minority = append(minority, nd)
		} else {
			majority = append(majority, nd)
		}
	}
	c.net.partition(ids(minority...), ids(all...))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	propc := proposeAsync(ctx, old, "minority", "lost")
	type read struct {
		err error
		val string
	}
	readc := make(chan read, 1)
	go func() {
		err := old.member().LinearizableBarrier(ctx)
		r := read{err: err}
		if err == nil {
			if kv, ok := get(old, "x"); ok {
				r.val = string(kv.Value)
			}
		}
		readc <- r
	}()

	// Everyone but the old leader keeps time; the majority elects a new
	// leader and commits a newer value.
	ticking := append(slices.Clone(majority), minority[1])
	nl := c.waitLeaderAmong(majority...)
	if _, err := c.put(nl, "x", "new", ticking...); err != nil {
		t.Fatal(err)
	}
	if st := old.member().Status(); st.Leader != old.ID() {
		t.Fatalf("test setup: the old leader should still believe it leads: %+v", st)
	}
	for i := 0; i < 5*electionTicks; i++ {
		select {
		case r := <-readc:
			t.Fatalf("linearizable barrier on a deposed leader returned (err %v, x=%q): it must block or fail, and never succeed while cut off from the quorum", r.err, r.val)
		case err := <-propc:
			if err == nil {
				t.Fatal("a proposal on the minority side was applied")
			}
			propc = nil
		default:
		}
		c.tickOnly(ticking...)
	}
	cancel()
	if r := <-readc; r.err == nil {
		t.Fatalf("barrier on the deposed leader succeeded while partitioned (x=%q)", r.val)
	}
	if propc != nil {
		if err := <-propc; err == nil {
			t.Fatal("a proposal on the minority side was applied")
		}
	}

	// Once its clock runs, CheckQuorum makes it step down; then a barrier
	// waits for a leader (as etcd's read loop does) and never succeeds
	// while the minority cannot elect one; proposals are refused.
	c.waitFor("old leader steps down", 3*electionTicks, func() bool {
		return old.member().Status().Leader != old.ID()
	})
	bctx, bcancel := context.WithCancel(context.Background())
	barc := make(chan error, 1)
	go func() { barc <- old.member().LinearizableBarrier(bctx) }()
	for range 10 * electionTicks {
		c.tickOnly(minority...)
		select {
		case err := <-barc:
			t.Fatalf("barrier on the minority side returned %v; it must wait for a leader", err)
		default:
		}
	}
	bcancel()
	if err := <-barc; err == nil {
		t.Fatal("barrier on the minority side succeeded")
	} else {
		t.Logf("barrier on the minority side, given up: %v", err)
	}

	c.net.heal()
	c.waitConverged(3000, c.running()...)
	if err := c.barrier(old); err != nil {
		t.Fatalf("barrier after healing: %v", err)
	}
	for _, nd := range c.running() {
		if kv, ok := get(nd, "x"); !ok || string(kv.Value) != "new" {
			t.Fatalf("%s: x = %v after healing, want new", nd.name, kv)
		}
		if kv, ok := get(nd, "minority"); ok {
			t.Fatalf("%s applied the minority's uncommitted proposal: %v", nd.name, kv)
		}
	}
}

// TestLogDivergenceRepair: an isolated leader keeps accepting proposals
// into its own log (raft appends locally before replicating), but they
// never reach a quorum and never commit. The majority elects a leader in a
// higher term whose entries take the same indexes. After healing, the old
// leader's conflicting suffix is overwritten (raft §5.3, the Log Matching
// property: a follower deletes a conflicting entry and all that follow),
// and no member ever applies the lost entries.
func TestLogDivergenceRepair(t *testing.T) {
	c := newCluster(t, 3)
	old := c.waitLeader()
	c.mustPut(old, "base", "1")
	c.waitConverged(1000)
	commitBefore := old.member().Status().Committed
	all := c.all()
	rest := c.others(old)

	// Count the proposals the isolated leader tries to replicate beyond
	// the commit index (they are dropped by the partition); an entry may
	// carry several (raftnode merges concurrent proposals).
	var mu sync.Mutex
	lost := map[[2]uint64]bool{}
	oldID := old.ID()
	c.net.setObserver(func(from uint64, m *raftpb.Message) {
		if from != oldID || m.GetType() != raftpb.MessageType_MsgApp {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, e := range m.GetEntries() {
			if e.GetIndex() > commitBefore && len(e.GetData()) > 0 {
				parts, err := raftnode.Proposals(e.GetData())
				if err != nil {
					t.Errorf("entry %d: %v", e.GetIndex(), err)
				}
				for i := range parts {
					lost[[2]uint64{e.GetIndex(), uint64(i)}] = true
				}
			}
		}
	})
	c.net.partition(ids(old), ids(all...))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var props []<-chan error
	for i := 0; i < 5; i++ {
		props = append(props, proposeAsync(ctx, old, fmt.Sprintf("lost%d", i), "x"))
	}
	c.waitFor("isolated leader appends the proposals", 100, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(lost) >= 5
	}, rest...) // its clock is frozen: it stays leader meanwhile
	c.net.setObserver(nil)

	nl := c.waitLeaderAmong(rest...)
	for i := 0; i < 5; i++ {
		if _, err := c.put(nl, fmt.Sprintf("won%d", i), "y", rest...); err != nil {
			t.Fatal(err)
		}
	}
	if got := old.member().Status(); got.Committed != commitBefore || got.Leader != oldID {
		t.Fatalf("isolated leader committed something: %+v (commit before %d)", got, commitBefore)
	}

	c.net.heal()
	d := c.waitConverged(3000, c.running()...)
	for _, nd := range c.running() {
		for i := 0; i < 5; i++ {
			if kv, ok := get(nd, fmt.Sprintf("lost%d", i)); ok {
				t.Fatalf("%s applied an uncommitted entry of the deposed leader: %v", nd.name, kv)
			}
			if _, ok := get(nd, fmt.Sprintf("won%d", i)); !ok {
				t.Fatalf("%s misses a committed write won%d", nd.name, i)
			}
		}
	}
	if len(d.kvs) != 6 {
		t.Fatalf("want 6 keys, got %v", d.kvs)
	}
	cancel()
	for i, ch := range props {
		if err := <-ch; err == nil {
			t.Fatalf("proposal lost%d reported success", i)
		}
	}
	// The repaired log keeps working.
	c.mustPut(old, "after", "z")
	c.waitConverged(1000)
}

// TestBootstrapMembersNotRemoved: no member of a brand-new cluster takes
// itself for removed. This was a bug, found by this suite: raft's
// Bootstrap puts one ConfChangeAddNode per initial member in the log, the
// applier calls Cluster.SetMember -> OnChange -> Member.syncPeers after
// each, and syncPeers judged "removed" against a member list that after
// index 1 held only the first member, so every other member stopped with
// ErrRemoved. Removal is now judged on the applied list only.
func TestBootstrapMembersNotRemoved(t *testing.T) {
	c := newCluster(t, 3)
	c.mustPut(c.waitLeader(), "k", "v")
	c.waitConverged(1000)
	for _, nd := range c.all() {
		nd.mu.Lock()
		done := nd.done
		nd.mu.Unlock()
		select {
		case <-done:
			t.Fatalf("%s stopped: %v", nd.name, nd.runErr)
		case <-nd.m.Removed():
			t.Fatalf("%s believes it was removed", nd.name)
		default:
		}
	}
}

// TestProposalWaitsForLeader: a proposal made while its member knows no
// leader (two of three members are down, the survivor campaigns in vain)
// neither fails at once nor is lost: it waits, as etcd's does, and is
// proposed and applied as soon as a leader is elected, so a short election
// is invisible to clients. A proposal whose caller gives up first fails
// with the context's error (etcd: DeadlineExceeded), not "no leader".
func TestProposalWaitsForLeader(t *testing.T) {
	c := newCluster(t, 3)
	ld := c.waitLeader()
	rest := c.others(ld)
	survivor, down := rest[0], rest[1]
	ld.mustStop()
	down.mustStop()
	c.waitFor("the survivor knows no leader", maxElectionTicks, func() bool {
		return survivor.member().Status().Leader == 0
	})

	ctx := context.Background()
	putc := proposeAsync(ctx, survivor, "during-election", "v")
	type grant struct {
		resp *pb.LeaseGrantResponse
		err  error
	}
	grantc := make(chan grant, 1)
	go func() {
		resp, err := survivor.member().LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 30})
		grantc <- grant{resp, err}
	}()
	// A caller that gives up while there is no leader gets its context's
	// error.
	sctx, scancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer scancel()
	shortc := proposeAsync(sctx, survivor, "given-up", "v")
	for i := 0; i < 3*electionTicks; i++ {
		c.tick()
		select {
		case err := <-putc:
			t.Fatalf("put without a leader returned %v; it must wait for one", err)
		case g := <-grantc:
			t.Fatalf("lease grant without a leader returned %+v, %v; it must wait for one", g.resp, g.err)
		default:
		}
	}
	if err := <-shortc; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("proposal whose caller gave up without a leader: %v, want context.DeadlineExceeded", err)
	}

	down.start()
	var putErr error
	var g grant
	putDone, grantDone := false, false
	c.waitFor("the waiting proposals applied", opTicks, func() bool {
		select {
		case putErr = <-putc:
			putDone = true
		case g = <-grantc:
			grantDone = true
		default:
		}
		return putDone && grantDone
	})
	if putErr != nil {
		t.Fatalf("put made during the election: %v", putErr)
	}
	if g.err != nil || g.resp.TTL != 30 {
		t.Fatalf("lease grant made during the election: %+v, %v", g.resp, g.err)
	}
	d := c.waitConverged(2000)
	for _, nd := range c.running() {
		if _, ok := get(nd, "during-election"); !ok {
			t.Fatalf("%s misses the put made during the election: %v", nd.name, d.kvs)
		}
		if _, ok := get(nd, "given-up"); ok {
			t.Fatalf("%s applied the proposal whose caller gave up", nd.name)
		}
		if !nd.member().Lessor().Exists(g.resp.ID) {
			t.Fatalf("%s misses the lease granted during the election", nd.name)
		}
	}
}
