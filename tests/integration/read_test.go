package integration

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
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

// counterOf returns the value of the member's counter called name.
func counterOf(t *testing.T, nd *node, name string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(nd.member().Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestLeaderAnswersFollowerReadsFromItsRounds: raft broadcasts a heartbeat
// round for every MsgReadIndex it steps, so with every member serving
// linearizable reads the leader ran a round per member per round trip.
// The leader now holds a follower's request for its own next round (one
// that starts after the request arrived, so the index it answers is as
// fresh as raft's own would be) and answers it with that round's index.
func TestLeaderAnswersFollowerReadsFromItsRounds(t *testing.T) {
	c := newCluster(t, 3)
	ld := c.waitLeader()
	fs := c.others(ld)
	c.mustPut(ld, "k", "v")

	var roundHeartbeats, requests, answers atomic.Int64
	c.net.setObserver(func(from uint64, m *raftpb.Message) {
		switch {
		case from == ld.ID() && m.GetType() == raftpb.MessageType_MsgHeartbeat && len(m.GetContext()) > 0:
			roundHeartbeats.Add(1)
		case from != ld.ID() && m.GetType() == raftpb.MessageType_MsgReadIndex:
			requests.Add(1)
		case from == ld.ID() && m.GetType() == raftpb.MessageType_MsgReadIndexResp:
			answers.Add(1)
		}
	})
	defer c.net.setObserver(nil)
	// The leader's heartbeats wait, so its first round stays in flight
	// while the followers ask. Only the followers' clocks move (fewer
	// ticks than an election timeout): a leader's tick would resend its
	// heartbeats.
	for _, f := range fs {
		c.net.setFaults(ld.ID(), f.ID(), linkFaults{hold: true})
	}
	errs := make(chan error, 3)
	go func() { errs <- ld.member().LinearizableBarrier(context.Background()) }()
	c.waitUnticked("the leader's round is sent", func() bool { return roundHeartbeats.Load() >= 2 })
	sent := roundHeartbeats.Load()
	for _, f := range fs {
		go func() { errs <- f.member().LinearizableBarrier(context.Background()) }()
	}
	c.waitUnticked("both followers ask the leader", func() bool { return requests.Load() >= 2 })
	for range electionTicks / 2 {
		c.tickOnly(fs...)
	}
	if n := roundHeartbeats.Load(); n != sent {
		t.Fatalf("the leader broadcast %d more read-round heartbeats for 2 follower requests while its round was in flight; want none", n-sent)
	}
	c.net.heal()
	c.waitFor("every read answered", opTicks, func() bool { return len(errs) == 3 })
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatalf("linearizable read: %v", err)
		}
	}
	if n := answers.Load(); n < 2 {
		t.Fatalf("the leader answered %d follower requests, want 2", n)
	}
	if n := counterOf(t, ld, "cairn_server_read_index_remote_total"); n < 2 {
		t.Fatalf("cairn_server_read_index_remote_total = %v, want >= 2", n)
	}
	// The followers' reads see the write made before them.
	for _, f := range fs {
		if kv, ok := get(f, "k"); !ok || string(kv.GetValue()) != "v" {
			t.Fatalf("follower %x: k = %v after a linearizable barrier", f.ID(), kv)
		}
	}
}

// TestReadsNeedNoTick: a linearizable read on a follower or on the leader
// is answered with every clock stopped. A read round is started by the
// event that brings the read (or, on the leader, a follower's request);
// one that waited for the next tick cost a 1-client reader up to a
// heartbeat interval per read.
func TestReadsNeedNoTick(t *testing.T) {
	c := newCluster(t, 3)
	ld := c.waitLeader()
	c.mustPut(ld, "k", "v")
	for _, nd := range append([]*node{ld}, c.others(ld)...) {
		for i := range 3 {
			errc := make(chan error, 1)
			go func() { errc <- nd.member().LinearizableBarrier(context.Background()) }()
			c.waitUnticked(fmt.Sprintf("member %x, read %d answered", nd.ID(), i), func() bool { return len(errc) == 1 })
			if err := <-errc; err != nil {
				t.Fatalf("member %x, read %d: %v", nd.ID(), i, err)
			}
		}
	}
}
