package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/test/bufconn"

	"github.com/cairnkv/cairn/internal/api"
	"github.com/cairnkv/cairn/internal/api/v3electionpb"
	"github.com/cairnkv/cairn/internal/api/v3lockpb"
)

// selfClient is a clientv3 client connected to this member's own gRPC
// server through an in-memory listener: the Election and Lock services
// run etcd's client-side recipes on it (as etcd does with v3client).
type selfClient struct {
	l        *bufconn.Listener
	cli      *clientv3.Client
	election *api.Election
	lock     *api.Lock
	closed   atomic.Bool
}

// registerRecipes starts gs on an in-memory listener, connects a client
// to it, and registers the Election and Lock services on gs. Call close
// before stopping gs.
func registerRecipes(lg *zap.Logger, gs *grpc.Server) (*selfClient, error) {
	l := bufconn.Listen(1 << 20)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: []string{"cairn-self:0"},
		Logger:    lg.Named("self-client"),
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return l.DialContext(ctx)
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("server: in-process client: %w", err)
	}
	sc := &selfClient{l: l, cli: cli, election: api.NewElection(cli), lock: api.NewLock(cli)}
	v3electionpb.RegisterElectionServer(gs, sc.election)
	v3lockpb.RegisterLockServer(gs, sc.lock)
	return sc, nil
}

// serve serves gs on the in-memory listener until it is closed.
func (s *selfClient) serve(gs *grpc.Server) error {
	// bufconn's Accept fails with a plain "closed" error once closed.
	if err := gs.Serve(s.l); err != nil && !s.closed.Load() && !errors.Is(err, grpc.ErrServerStopped) && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("in-process grpc serve: %w", err)
	}
	return nil
}

// close closes the client (failing the recipes' calls in flight, so a
// graceful stop does not wait for a blocked Campaign or Lock) and the
// listener.
func (s *selfClient) close() {
	if s.closed.Swap(true) {
		return
	}
	_ = s.cli.Close()
	_ = s.l.Close()
}
