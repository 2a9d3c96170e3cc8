package api

import (
	"context"
	"errors"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cairnkv/cairn/internal/apply"
	"github.com/cairnkv/cairn/internal/lease"
	"github.com/cairnkv/cairn/internal/member"
	"github.com/cairnkv/cairn/internal/mvcc"
	"github.com/cairnkv/cairn/internal/raftnode"
)

// togRPC maps an internal error to the status etcd returns for it.
func togRPC(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, mvcc.ErrCompacted):
		return rpctypes.ErrGRPCCompacted
	case errors.Is(err, mvcc.ErrFutureRev):
		return rpctypes.ErrGRPCFutureRev
	case errors.Is(err, apply.ErrKeyNotFound):
		return rpctypes.ErrGRPCKeyNotFound
	case errors.Is(err, apply.ErrLeaseNotFound), errors.Is(err, lease.ErrNotFound):
		return rpctypes.ErrGRPCLeaseNotFound
	case errors.Is(err, lease.ErrExists):
		return rpctypes.ErrGRPCLeaseExist
	case errors.Is(err, lease.ErrTTLTooLarge):
		return rpctypes.ErrGRPCLeaseTTLTooLarge
	case errors.Is(err, lease.ErrNotPrimary):
		return rpctypes.ErrGRPCNotLeader
	case errors.Is(err, member.ErrTooLarge):
		return rpctypes.ErrGRPCRequestTooLarge
	case errors.Is(err, member.ErrTimeout):
		return rpctypes.ErrGRPCTimeout
	case errors.Is(err, member.ErrNoLeaderTimeout):
		// Compat: etcd returns the context error of a proposal that
		// waited for a leader until its request timeout, and gRPC turns
		// it into this status (observed: etcd 3.7.3, two of three
		// members down, `etcdctl --command-timeout=20s put` is answered
		// after 7 s).
		return status.Error(codes.DeadlineExceeded, context.DeadlineExceeded.Error())
	case errors.Is(err, raftnode.ErrNoLeader):
		return rpctypes.ErrGRPCNoLeader
	case errors.Is(err, raftnode.ErrLeaderChanged):
		return rpctypes.ErrGRPCLeaderChanged
	case errors.Is(err, raftnode.ErrStopped):
		return rpctypes.ErrGRPCStopped
	case errors.Is(err, apply.ErrUnsupported):
		return rpctypes.ErrGRPCNotCapable
	case errors.Is(err, member.ErrBadURLs):
		return rpctypes.ErrGRPCMemberBadURLs
	case errors.Is(err, member.ErrPeerURLExist):
		return rpctypes.ErrGRPCPeerURLExist
	case errors.Is(err, member.ErrMemberNotFound):
		return rpctypes.ErrGRPCMemberNotFound
	case errors.Is(err, member.ErrNotLearner):
		return rpctypes.ErrGRPCMemberNotLearner
	case errors.Is(err, member.ErrLearnerNotReady):
		return rpctypes.ErrGRPCLearnerNotReady
	case errors.Is(err, member.ErrTooManyLearners):
		return rpctypes.ErrGRPCTooManyLearners
	case errors.Is(err, member.ErrNotEnoughStarted):
		return rpctypes.ErrGRPCMemberNotEnoughStarted
	case errors.Is(err, member.ErrNotLeader):
		return rpctypes.ErrGRPCNotLeader
	case errors.Is(err, member.ErrBadTransferee):
		return rpctypes.ErrGRPCBadLeaderTransferee
	case errors.Is(err, member.ErrReconfigInProgress):
		// etcd lets raft drop a second pending change and times out;
		// Cairn answers with the same error at once.
		return rpctypes.ErrGRPCTimeout
	case errors.Is(err, context.Canceled):
		return rpctypes.ErrGRPCCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return rpctypes.ErrGRPCDeadlineExceeded
	}
	return status.Error(codes.Unknown, err.Error())
}
