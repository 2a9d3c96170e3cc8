package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// gRPC names and metadata keys of the peer protocol.
const (
	serviceName    = "cairnpeer.Raft"
	methodStream   = "/" + serviceName + "/Stream"
	methodSnapshot = "/" + serviceName + "/Snapshot"

	// Request metadata.
	mdFrom      = "cairn-from"       // the sender's member ID
	mdTo        = "cairn-to"         // the member ID the sender means to reach
	mdClusterID = "cairn-cluster-id" // in requests and in the server's header
	// Response header metadata: the server's member ID.
	mdMemberID = "cairn-member-id"

	batchField protowire.Number = 1 // Batch.msgs
)

// peerService is the handler type of serviceDesc.
type peerService interface {
	serveStream(grpc.ServerStream) error
	serveSnapshot(grpc.ServerStream) error
}

// serviceDesc is what protoc-gen-go-grpc would generate for
//
//	service Raft {
//	  rpc Stream(stream google.protobuf.BytesValue) returns (google.protobuf.Empty);
//	  rpc Snapshot(stream google.protobuf.BytesValue) returns (google.protobuf.Empty);
//	}
//
// except that Snapshot's first frame is a raftpb.Message.
var serviceDesc = grpc.ServiceDesc{
	ServiceName: serviceName,
	HandlerType: (*peerService)(nil),
	Streams: []grpc.StreamDesc{
		{
			StreamName:    "Stream",
			Handler:       func(srv any, s grpc.ServerStream) error { return srv.(peerService).serveStream(s) },
			ClientStreams: true,
		},
		{
			StreamName:    "Snapshot",
			Handler:       func(srv any, s grpc.ServerStream) error { return srv.(peerService).serveSnapshot(s) },
			ClientStreams: true,
		},
	},
	Metadata: "cairnpeer/raft.proto",
}

var _ peerService = (*Transport)(nil)

func (t *Transport) localLabel() string { return idString(t.cfg.LocalID) }

func (t *Transport) outgoingMD(to uint64) metadata.MD {
	return metadata.Pairs(
		mdFrom, idString(t.cfg.LocalID),
		mdTo, idString(to),
		mdClusterID, idString(t.cfg.ClusterID),
	)
}

func mdID(md metadata.MD, key string) (uint64, error) {
	v := md.Get(key)
	if len(v) != 1 {
		return 0, fmt.Errorf("want one %q metadata value, got %d", key, len(v))
	}
	id, err := strconv.ParseUint(v[0], 16, 64)
	if err != nil {
		return 0, fmt.Errorf("bad %q metadata: %w", key, err)
	}
	return id, nil
}

func clusterMismatch(local, remote uint64) string {
	return fmt.Sprintf("etcdserver: cluster ID mismatch (local %s, remote %s)", idString(local), idString(remote))
}

// checkServerHeader checks the handshake a server sent the peer expected
// to be member id.
func (t *Transport) checkServerHeader(id uint64, md metadata.MD) error {
	cid, err := mdID(md, mdClusterID)
	if err != nil {
		return fmt.Errorf("peer handshake: %w", err)
	}
	if cid != t.cfg.ClusterID {
		return errors.New(clusterMismatch(t.cfg.ClusterID, cid))
	}
	mid, err := mdID(md, mdMemberID)
	if err != nil {
		return fmt.Errorf("peer handshake: %w", err)
	}
	if mid != id {
		return fmt.Errorf("member ID mismatch: the peer URLs of member %s lead to member %s", idString(id), idString(mid))
	}
	return nil
}

// authorize checks an incoming call's metadata and returns the sender.
func (t *Transport) authorize(ctx context.Context) (uint64, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	cid, err := mdID(md, mdClusterID)
	if err != nil {
		return 0, status.Errorf(codes.InvalidArgument, "cairn: peer call: %v", err)
	}
	if cid != t.cfg.ClusterID {
		return 0, status.Error(codes.FailedPrecondition, clusterMismatch(t.cfg.ClusterID, cid))
	}
	to, err := mdID(md, mdTo)
	if err != nil {
		return 0, status.Errorf(codes.InvalidArgument, "cairn: peer call: %v", err)
	}
	if to != t.cfg.LocalID {
		return 0, status.Errorf(codes.FailedPrecondition, "cairn: member ID mismatch: this is member %s, not %s",
			idString(t.cfg.LocalID), idString(to))
	}
	from, err := mdID(md, mdFrom)
	if err != nil || from == 0 {
		return 0, status.Errorf(codes.InvalidArgument, "cairn: peer call without a sender member ID")
	}
	t.mu.RLock()
	_, known := t.peers[from]
	stopped := t.stopped
	t.mu.RUnlock()
	switch {
	case stopped:
		return 0, status.Error(codes.Unavailable, "cairn: peer transport stopped")
	case !known && t.cfg.IsRemoved != nil && t.cfg.IsRemoved(from):
		return 0, status.Error(codes.PermissionDenied, errRemovedText)
	case !known:
		return 0, status.Errorf(codes.NotFound, "cairn: member %s is not a known peer of member %s",
			idString(from), idString(t.cfg.LocalID))
	}
	return from, nil
}

// serve authorizes a call, accepts it and runs fn on a tracked goroutine,
// so that Stop can end the call even while fn is blocked receiving.
func (t *Transport) serve(ss grpc.ServerStream, fn func(ctx context.Context, from uint64) error) error {
	from, err := t.authorize(ss.Context())
	if err != nil {
		t.lg.Debug("rejected peer call", zap.Error(err))
		return err
	}
	if err := ss.SendHeader(metadata.Pairs(
		mdMemberID, idString(t.cfg.LocalID),
		mdClusterID, idString(t.cfg.ClusterID),
	)); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	defer context.AfterFunc(t.ctx, cancel)()
	done := make(chan error, 1)
	if !t.goTracked(func() { done <- fn(ctx, from) }) {
		return status.Error(codes.Unavailable, "cairn: peer transport stopped")
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		if t.ctx.Err() != nil {
			return status.Error(codes.Unavailable, "cairn: peer transport stopped")
		}
		return status.FromContextError(ctx.Err()).Err()
	}
}

func (t *Transport) serveStream(ss grpc.ServerStream) error {
	return t.serve(ss, func(ctx context.Context, from uint64) error {
		label := idString(from)
		recvBytes := t.met.recvBytes.WithLabelValues(label)
		for {
			b := &wrapperspb.BytesValue{}
			if err := ss.RecvMsg(b); err != nil {
				if errors.Is(err, io.EOF) {
					return ss.SendMsg(&emptypb.Empty{})
				}
				if ctx.Err() == nil {
					t.met.recvFailures.WithLabelValues(label).Inc()
				}
				return err
			}
			recvBytes.Add(float64(len(b.GetValue())))
			// A member removed while its stream was open is told so on its
			// next batch (authorize only runs when a stream opens), so a
			// member that missed the commit of its own removal still stops.
			if t.peer(from) == nil && t.cfg.IsRemoved != nil && t.cfg.IsRemoved(from) {
				return status.Error(codes.PermissionDenied, errRemovedText)
			}
			if err := t.deliver(ctx, from, b.GetValue()); err != nil {
				if ctx.Err() != nil {
					return status.FromContextError(ctx.Err()).Err()
				}
				t.met.recvFailures.WithLabelValues(label).Inc()
				t.lg.Warn("bad message batch from peer", zap.String("remote-peer-id", label), zap.Error(err))
				return status.Errorf(codes.InvalidArgument, "cairn: bad message batch: %v", err)
			}
		}
	})
}

// deliver decodes a batch received from member from and hands each message
// meant for this member to raft. It returns an error only for a batch that
// cannot be decoded, or when ctx is done.
func (t *Transport) deliver(ctx context.Context, from uint64, batch []byte) error {
	return decodeBatch(batch, func(m *raftpb.Message) error {
		switch {
		case m.GetTo() != t.cfg.LocalID:
			t.lg.Debug("dropped message for another member", zap.String("remote-peer-id", idString(from)),
				zap.String("to", idString(m.GetTo())), zap.Stringer("type", m.GetType()))
			return nil
		case m.GetFrom() != from:
			t.lg.Debug("dropped message whose sender is not the stream's", zap.String("remote-peer-id", idString(from)),
				zap.String("from", idString(m.GetFrom())), zap.Stringer("type", m.GetType()))
			return nil
		case m.GetType() == raftpb.MessageType_MsgSnap:
			// Its data travels on the Snapshot call only.
			t.lg.Warn("dropped MsgSnap sent on the message stream", zap.String("remote-peer-id", idString(from)))
			return nil
		}
		if err := t.cfg.Raft.Process(ctx, m); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			t.met.recvFailures.WithLabelValues(idString(from)).Inc()
			t.lg.Debug("raft did not take a message", zap.String("remote-peer-id", idString(from)),
				zap.Stringer("type", m.GetType()), zap.Error(err))
		}
		return nil
	})
}

// appendFrame appends m as one Batch.msgs field.
func appendFrame(b []byte, m *raftpb.Message) ([]byte, error) {
	size := proto.Size(m)
	b = protowire.AppendTag(b, batchField, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	return proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(b, m)
}

// decodeBatch calls fn with each message of a Batch, in order. Unknown
// fields are skipped; malformed input is an error, never a panic.
func decodeBatch(b []byte, fn func(*raftpb.Message) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("batch: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if num != batchField || typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("batch: %w", protowire.ParseError(n))
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return fmt.Errorf("batch: %w", protowire.ParseError(n))
		}
		b = b[n:]
		m := &raftpb.Message{}
		if err := proto.Unmarshal(v, m); err != nil {
			return fmt.Errorf("batch: raft message: %w", err)
		}
		if err := fn(m); err != nil {
			return err
		}
	}
	return nil
}

// errRemovedText is etcd's message to a member removed from the cluster.
const errRemovedText = "etcdserver: the member has been permanently removed from the cluster"
