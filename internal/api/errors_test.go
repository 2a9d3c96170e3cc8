package api

import (
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cairnkv/cairn/internal/member"
	"github.com/cairnkv/cairn/internal/raftnode"
)

// A request that waited for a leader until it timed out gets what etcd
// 3.7.3 answers then (gRPC turns the context error into this status); one
// that was proposed and then timed out gets etcd's "request timed out".
func TestTimeoutErrors(t *testing.T) {
	st := status.Convert(togRPC(member.ErrNoLeaderTimeout))
	if st.Code() != codes.DeadlineExceeded || st.Message() != "context deadline exceeded" {
		t.Fatalf("no leader until the timeout: %v, want DeadlineExceeded \"context deadline exceeded\"", st)
	}
	if err := togRPC(member.ErrTimeout); err != rpctypes.ErrGRPCTimeout {
		t.Fatalf("request timeout: %v, want %v", err, rpctypes.ErrGRPCTimeout)
	}
	if err := togRPC(raftnode.ErrNoLeader); err != rpctypes.ErrGRPCNoLeader {
		t.Fatalf("no leader: %v, want %v", err, rpctypes.ErrGRPCNoLeader)
	}
}
