// Package v3electionpb holds the wire types of etcd's Election service
// (v3electionpb.Election), generated from v3election.proto, and its gRPC
// service description, written by hand.
package v3electionpb

//go:generate sh -c "cd .. && protoc --go_out=. --go_opt=paths=source_relative v3electionpb/v3election.proto"

import (
	"context"

	"google.golang.org/grpc"
)

// ElectionServer is the server side of v3electionpb.Election.
type ElectionServer interface {
	Campaign(context.Context, *CampaignRequest) (*CampaignResponse, error)
	Proclaim(context.Context, *ProclaimRequest) (*ProclaimResponse, error)
	Leader(context.Context, *LeaderRequest) (*LeaderResponse, error)
	Observe(*LeaderRequest, grpc.ServerStreamingServer[LeaderResponse]) error
	Resign(context.Context, *ResignRequest) (*ResignResponse, error)
}

// RegisterElectionServer registers srv on s under etcd's service name.
func RegisterElectionServer(s grpc.ServiceRegistrar, srv ElectionServer) {
	s.RegisterService(&serviceDesc, srv)
}

func unary[Req any, Resp any](name string, call func(ElectionServer, context.Context, *Req) (*Resp, error)) grpc.MethodDesc {
	full := "/v3electionpb.Election/" + name
	return grpc.MethodDesc{MethodName: name, Handler: func(srv any, ctx context.Context, dec func(any) error, in grpc.UnaryServerInterceptor) (any, error) {
		req := new(Req)
		if err := dec(req); err != nil {
			return nil, err
		}
		h := func(ctx context.Context, r any) (any, error) { return call(srv.(ElectionServer), ctx, r.(*Req)) }
		if in == nil {
			return h(ctx, req)
		}
		return in(ctx, req, &grpc.UnaryServerInfo{Server: srv, FullMethod: full}, h)
	}}
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: "v3electionpb.Election",
	HandlerType: (*ElectionServer)(nil),
	Methods: []grpc.MethodDesc{
		unary("Campaign", ElectionServer.Campaign),
		unary("Proclaim", ElectionServer.Proclaim),
		unary("Leader", ElectionServer.Leader),
		unary("Resign", ElectionServer.Resign),
	},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Observe",
		ServerStreams: true,
		Handler: func(srv any, stream grpc.ServerStream) error {
			req := new(LeaderRequest)
			if err := stream.RecvMsg(req); err != nil {
				return err
			}
			return srv.(ElectionServer).Observe(req, &grpc.GenericServerStream[LeaderRequest, LeaderResponse]{ServerStream: stream})
		},
	}},
	Metadata: "v3electionpb/v3election.proto",
}

// ElectionClient calls v3electionpb.Election.
type ElectionClient struct{ cc grpc.ClientConnInterface }

// NewElectionClient returns a client on cc.
func NewElectionClient(cc grpc.ClientConnInterface) *ElectionClient { return &ElectionClient{cc} }

// Campaign waits until the caller leads the election.
func (c *ElectionClient) Campaign(ctx context.Context, in *CampaignRequest, opts ...grpc.CallOption) (*CampaignResponse, error) {
	out := new(CampaignResponse)
	return out, c.cc.Invoke(ctx, "/v3electionpb.Election/Campaign", in, out, opts...)
}

// Proclaim updates the leader's value.
func (c *ElectionClient) Proclaim(ctx context.Context, in *ProclaimRequest, opts ...grpc.CallOption) (*ProclaimResponse, error) {
	out := new(ProclaimResponse)
	return out, c.cc.Invoke(ctx, "/v3electionpb.Election/Proclaim", in, out, opts...)
}

// Leader returns the current leader's key-value.
func (c *ElectionClient) Leader(ctx context.Context, in *LeaderRequest, opts ...grpc.CallOption) (*LeaderResponse, error) {
	out := new(LeaderResponse)
	return out, c.cc.Invoke(ctx, "/v3electionpb.Election/Leader", in, out, opts...)
}

// Resign gives up leadership.
func (c *ElectionClient) Resign(ctx context.Context, in *ResignRequest, opts ...grpc.CallOption) (*ResignResponse, error) {
	out := new(ResignResponse)
	return out, c.cc.Invoke(ctx, "/v3electionpb.Election/Resign", in, out, opts...)
}

// Observe streams the leader's key-value at every change.
func (c *ElectionClient) Observe(ctx context.Context, in *LeaderRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[LeaderResponse], error) {
	stream, err := c.cc.NewStream(ctx, &serviceDesc.Streams[0], "/v3electionpb.Election/Observe", opts...)
	if err != nil {
		return nil, err
	}
	x := &grpc.GenericClientStream[LeaderRequest, LeaderResponse]{ClientStream: stream}
	if err := x.SendMsg(in); err != nil {
		return nil, err
	}
	if err := x.CloseSend(); err != nil {
		return nil, err
	}
	return x, nil
}

// Election_ObserveServer is the server stream of Observe.
type Election_ObserveServer = grpc.ServerStreamingServer[LeaderResponse]
