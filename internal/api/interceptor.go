package api

import (
	"context"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/cairnkv/cairn/internal/member"
)

// Compat: a learner serves only Status and serializable Range
// (etcd isRPCSupportedForLearner); everything else gets
// ErrGRPCNotSupportedForLearner.
func learnerAllowed(method string, req any) bool {
	switch {
	case strings.HasSuffix(method, "/Status"):
		return true
	case strings.HasSuffix(method, "KV/Range"):
		r, ok := req.(interface{ GetSerializable() bool })
		return ok && r.GetSerializable()
	}
	return false
}

// requireLeader looks up only the one key: FromIncomingContext copies the
// whole metadata map, which cost ~7% of a leader's CPU per KeepAliveOnce
// (etcd's lease-keepalive benchmark opens a stream per keepalive).
func requireLeader(ctx context.Context, m *member.Member) error {
	if vs := metadata.ValueFromIncomingContext(ctx, rpctypes.MetadataRequireLeaderKey); len(vs) > 0 && vs[0] == rpctypes.MetadataHasLeader && m.Leader() == 0 {
		return rpctypes.ErrGRPCNoLeader
	}
	return nil
}

// UnaryInterceptor enforces learner restrictions and the hasleader
// metadata clients such as Kubernetes send.
func UnaryInterceptor(m *member.Member) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if m.IsLearner() && !learnerAllowed(info.FullMethod, req) {
			return nil, rpctypes.ErrGRPCNotSupportedForLearner
		}
		if err := requireLeader(ctx, m); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamInterceptor is UnaryInterceptor for streams.
func StreamInterceptor(m *member.Member) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if m.IsLearner() && !strings.HasPrefix(info.FullMethod, "/grpc.health") {
			return rpctypes.ErrGRPCNotSupportedForLearner
		}
		if err := requireLeader(ss.Context(), m); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}
