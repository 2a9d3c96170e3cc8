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

// Readers do not watch the node's stop channel (see ReadIndex); Run must
// end every read batch when it returns, and refuse new ones, or a reader
// without a deadline would wait forever.
func TestReadIndexEndsWhenRunReturns(t *testing.T) {
	db, err := storage.Open(nil, t.TempDir())
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	rs, err := raftlog.Open(db.DB)
	require.NoError(t, err)
	// Three voters and no transport: no leader, ever.
	n, err := New(nil, Config{
		ID: 1, Peers: []raft.Peer{{ID: 1}, {ID: 2}, {ID: 3}}, Storage: rs,
		TickInterval: time.Hour, ElectionTick: 10, HeartbeatTick: 1,
	})
	require.NoError(t, err)

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
	_, err = n.ReadIndex(context.Background())
	require.ErrorIs(t, err, ErrStopped)
}
