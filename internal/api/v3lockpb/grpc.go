// Package v3lockpb holds the wire types of etcd's Lock service
// (v3lockpb.Lock), generated from v3lock.proto, and its gRPC service
// description, written by hand (it is two unary methods).
package v3lockpb

//go:generate sh -c "cd .. && protoc --go_out=. --go_opt=paths=source_relative v3lockpb/v3lock.proto"

import (
	"context"

	"google.golang.org/grpc"
)

// LockServer is the server side of v3lockpb.Lock.
type LockServer interface {
	Lock(context.Context, *LockRequest) (*LockResponse, error)
	Unlock(context.Context, *UnlockRequest) (*UnlockResponse, error)
}

// RegisterLockServer registers srv on s under etcd's service name.
func RegisterLockServer(s grpc.ServiceRegistrar, srv LockServer) {
	s.RegisterService(&serviceDesc, srv)
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: "v3lockpb.Lock",
	HandlerType: (*LockServer)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Lock", Handler: func(srv any, ctx context.Context, dec func(any) error, in grpc.UnaryServerInterceptor) (any, error) {
			req := new(LockRequest)
			if err := dec(req); err != nil {
				return nil, err
			}
			h := func(ctx context.Context, r any) (any, error) { return srv.(LockServer).Lock(ctx, r.(*LockRequest)) }
			if in == nil {
				return h(ctx, req)
			}
			return in(ctx, req, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/v3lockpb.Lock/Lock"}, h)
		}},
		{MethodName: "Unlock", Handler: func(srv any, ctx context.Context, dec func(any) error, in grpc.UnaryServerInterceptor) (any, error) {
			req := new(UnlockRequest)
			if err := dec(req); err != nil {
				return nil, err
			}
			h := func(ctx context.Context, r any) (any, error) { return srv.(LockServer).Unlock(ctx, r.(*UnlockRequest)) }
			if in == nil {
				return h(ctx, req)
			}
			return in(ctx, req, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/v3lockpb.Lock/Unlock"}, h)
		}},
	},
	Metadata: "v3lockpb/v3lock.proto",
}

// LockClient calls v3lockpb.Lock.
type LockClient struct{ cc grpc.ClientConnInterface }

// NewLockClient returns a client on cc.
func NewLockClient(cc grpc.ClientConnInterface) *LockClient { return &LockClient{cc} }

// Lock waits for the lock name and returns the key that holds it.
func (c *LockClient) Lock(ctx context.Context, in *LockRequest, opts ...grpc.CallOption) (*LockResponse, error) {
	out := new(LockResponse)
	return out, c.cc.Invoke(ctx, "/v3lockpb.Lock/Lock", in, out, opts...)
}

// Unlock releases the lock held by key.
func (c *LockClient) Unlock(ctx context.Context, in *UnlockRequest, opts ...grpc.CallOption) (*UnlockResponse, error) {
	out := new(UnlockResponse)
	return out, c.cc.Invoke(ctx, "/v3lockpb.Lock/Unlock", in, out, opts...)
}
