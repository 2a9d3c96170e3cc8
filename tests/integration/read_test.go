package integration

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
)

// TestReadIndexOneRoundInFlight: linearizable reads on a follower share
// read-index rounds, and a follower never has more than one round in
// flight: reads that arrive while one is out wait and share the next (as
// etcd's linearizableReadLoop). One round per arrival costs a round trip to
// the leader and a heartbeat broadcast for every few reads; under 100
// concurrent readers that made linearizable ranges slower than etcd's.
func TestReadIndexOneRoundInFlight(t *testing.T) {
	c := newCluster(t, 3)
	ld := c.waitLeader()
	f := c.others(ld)[0]
	c.mustPut(ld, "k", "v") // the leader has committed in its term

	var rounds atomic.Int64
	c.net.setObserver(func(from uint64, m *raftpb.Message) {
		if from == f.ID() && m.GetType() == raftpb.MessageType_MsgReadIndex {
			rounds.Add(1)
		}
	})
	defer c.net.setObserver(nil)
	// The follower's messages to the leader wait: its first round stays in
	// flight while every other reader arrives.
	c.net.setFaults(f.ID(), ld.ID(), linkFaults{hold: true})

	const readers = 50
	var started, done sync.WaitGroup
	errs := make(chan error, readers)
	read := func() {
		started.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			started.Done()
			errs <- f.member().LinearizableBarrier(context.Background())
		}()
	}
	read()
	c.waitFor("the first read round is sent", electionTicks/2, func() bool { return rounds.Load() >= 1 })
	for range readers - 1 {
		read()
	}
	started.Wait()
	// Let the raft loop take every signal the later readers gave it (each
	// tick is a turn of its loop), well short of giving the round up.
	for range electionTicks / 2 {
		c.tick()
	}
	if n := rounds.Load(); n != 1 {
		t.Fatalf("%d read rounds in flight at once from one follower, want 1", n)
	}
	c.net.heal()
	c.waitFor("every read answered", opTicks, func() bool {
		return len(errs) == readers
	})
	done.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("linearizable read on the follower: %v", err)
		}
	}
	t.Logf("%d reads in %d rounds", readers, rounds.Load())
}

// TestReadIndexLostRoundRetried: with one round in flight at a time, a
// round whose message is lost must not block the follower's reads for
// good: the raft loop gives it up after two election timeouts and its
// readers go again in a new round.
func TestReadIndexLostRoundRetried(t *testing.T) {
	c := newCluster(t, 3)
	ld := c.waitLeader()
	f := c.others(ld)[0]
	c.mustPut(ld, "k", "v")

	var rounds atomic.Int64
	c.net.setObserver(func(from uint64, m *raftpb.Message) {
		if from == f.ID() && m.GetType() == raftpb.MessageType_MsgReadIndex {
			rounds.Add(1)
		}
	})
	defer c.net.setObserver(nil)
	c.net.setFaults(f.ID(), ld.ID(), linkFaults{drop: 1})
	errc := make(chan error, 1)
	go func() { errc <- f.member().LinearizableBarrier(context.Background()) }()
	c.waitFor("the first read round is sent", electionTicks/2, func() bool { return rounds.Load() >= 1 })
	c.net.heal()
	// The lost round is given up after two election timeouts, and the
	// read is answered by the next one.
	c.waitFor("the read answered after the lost round", 4*electionTicks, func() bool { return len(errc) == 1 })
	if err := <-errc; err != nil {
		t.Fatalf("linearizable read on the follower: %v", err)
	}
	if n := rounds.Load(); n < 2 {
		t.Fatalf("answered in %d round(s); the first was lost", n)
	}
}

// TestReadWaitsForLeader: a linearizable read made while its member knows
// no leader waits for one (as etcd's read loop does) instead of failing
// with "no leader", and is answered once a leader is elected.
func TestReadWaitsForLeader(t *testing.T) {
	c := newCluster(t, 3)
	ld := c.waitLeader()
	rest := c.others(ld)
	survivor, down := rest[0], rest[1]
	c.mustPut(ld, "k", "v")
	ld.mustStop()
	down.mustStop()
	c.waitFor("the survivor knows no leader", maxElectionTicks, func() bool {
		return survivor.member().Status().Leader == 0
	})
	errc := make(chan error, 1)
	go func() { errc <- survivor.member().LinearizableBarrier(context.Background()) }()
	for range 3 * electionTicks {
		c.tick()
		select {
		case err := <-errc:
			t.Fatalf("linearizable read without a leader returned %v; it must wait for one", err)
		default:
		}
	}
	down.start()
	c.waitFor("the read answered once a leader is elected", opTicks, func() bool { return len(errc) == 1 })
	if err := <-errc; err != nil {
		t.Fatalf("linearizable read made during the election: %v", err)
	}
}
