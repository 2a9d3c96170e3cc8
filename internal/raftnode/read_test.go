package raftnode

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3"

	"github.com/cairnkv/cairn/internal/raftlog"
	"github.com/cairnkv/cairn/internal/storage"
)

// leaderlessNode is member 1 of three voters with no transport: it never
// knows a leader.
func leaderlessNode(t *testing.T, readTimeout time.Duration) *Node {
	t.Helper()
	db, err := storage.Open(nil, t.TempDir())
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	rs, err := raftlog.Open(db.DB)
	require.NoError(t, err)
	n, err := New(nil, Config{
		ID: 1, Peers: []raft.Peer{{ID: 1}, {ID: 2}, {ID: 3}}, Storage: rs,
		TickInterval: time.Hour, ElectionTick: 10, HeartbeatTick: 1,
		ReadTimeout: readTimeout,
	})
	require.NoError(t, err)
	return n
}

// Readers do not watch the node's stop channel (see ReadIndex); Run must
// end every read batch when it returns, and refuse new ones, or a reader
// without a deadline would wait forever.
func TestReadIndexEndsWhenRunReturns(t *testing.T) {
	n := leaderlessNode(t, 0)

	waiting := make(chan error, 1)
	go func() {
		_, err := n.ReadIndex(context.Background())
		waiting <- err
	}()
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- n.Run(ctx) }()
	cancel()
	require.NoError(t, <-ran)
	require.ErrorIs(t, <-waiting, ErrStopped)
	_, err := n.ReadIndex(context.Background())
	require.ErrorIs(t, err, ErrStopped)
}

// A linearizable read under a context without a deadline (a gRPC call
// whose client set none) must still end if the raft loop is stuck, say in
// a Save on a hung disk: the round's timer (Config.ReadTimeout) ends it
// with context.DeadlineExceeded, which the member reports as etcd's
// request timeout.
func TestReadRoundTimesOutWhenLoopIsStuck(t *testing.T) {
	n := leaderlessNode(t, 50*time.Millisecond)
	// Run is never called: nothing takes the round.
	done := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := n.TryReadIndex(context.Background())
			done <- err
		}()
	}
	for range 2 {
		select {
		case err := <-done:
			require.ErrorIs(t, err, context.DeadlineExceeded)
		case <-time.After(time.Minute):
			t.Fatal("a read waited past its round's timeout")
		}
	}
}
