package api

import (
	"context"
	"errors"
	"io"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/metadata"

	"github.com/cairnkv/cairn/internal/member"
)

// Watch serves etcdserverpb.Watch: each gRPC stream is one watch.Stream,
// with a receive loop that creates and cancels watchers and a send loop
// that drains the stream's bounded queue.
type Watch struct {
	pb.UnimplementedWatchServer
	m               *member.Member
	electionTimeout time.Duration
}

// NewWatch returns the Watch service of m.
func NewWatch(m *member.Member, electionTimeout time.Duration) *Watch {
	return &Watch{m: m, electionTimeout: electionTimeout}
}

// Watch serves one client stream until the client goes away.
func (s *Watch) Watch(stream pb.Watch_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	ws := s.m.Watch().NewStream()
	defer ws.Close()

	errc := make(chan error, 2)
	go func() { errc <- s.recvLoop(ctx, stream, ws) }()
	if wantsLeader(ctx) {
		go func() { errc <- s.monitorLeader(ctx) }()
	}
	for {
		resp, rev, err := ws.Next(ctx)
		if err != nil {
			select {
			case rerr := <-errc:
				return rerr
			default:
			}
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		resp.Header = s.m.Header(1)
		resp.Header.Revision = rev
		if err := stream.Send(resp); err != nil {
			return err
		}
		select {
		case err := <-errc:
			if err != nil {
				return err
			}
		default:
		}
	}
}

// recvLoop handles the client's requests. It returns nil when the client
// half-closes (the watches keep running, as in etcd) and the receive error
// otherwise, which ends only this stream.
func (s *Watch) recvLoop(ctx context.Context, stream pb.Watch_WatchServer, ws interface {
	Create(*pb.WatchCreateRequest)
	Cancel(int64)
	RequestProgress()
	WaitRoom(context.Context) error
}) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			<-ctx.Done()
			return nil
		}
		if err != nil {
			return err
		}
		if err := ws.WaitRoom(ctx); err != nil {
			return nil
		}
		switch u := req.RequestUnion.(type) {
		case *pb.WatchRequest_CreateRequest:
			if u.CreateRequest != nil {
				ws.Create(u.CreateRequest)
			}
		case *pb.WatchRequest_CancelRequest:
			if u.CancelRequest != nil {
				ws.Cancel(u.CancelRequest.WatchId)
			}
		case *pb.WatchRequest_ProgressRequest:
			if u.ProgressRequest != nil {
				ws.RequestProgress()
			}
		default:
			// Compat: etcd ignores a request with no known member set.
		}
	}
}

// wantsLeader reports whether the client sent hasleader metadata
// (clientv3.WithRequireLeader, used by Kubernetes).
func wantsLeader(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return false
	}
	vs := md.Get(rpctypes.MetadataRequireLeaderKey)
	return len(vs) > 0 && vs[0] == rpctypes.MetadataHasLeader
}

// monitorLeader ends a require-leader stream after three election timeouts
// without a leader, as etcd does, so the client moves to another member.
func (s *Watch) monitorLeader(ctx context.Context) error {
	t := time.NewTicker(s.electionTimeout)
	defer t.Stop()
	missed := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if s.m.Status().Leader != 0 {
			missed = 0
			continue
		}
		if missed++; missed >= 3 {
			return rpctypes.ErrGRPCNoLeader
		}
	}
}
