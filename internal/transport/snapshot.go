package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// snapshotHeader copies a MsgSnap without its Snapshot.Data, so the copy can
// leave the raft loop.
func snapshotHeader(m *raftpb.Message) *raftpb.Message {
	h := &raftpb.Message{}
	hr := h.ProtoReflect()
	m.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Name() != "snapshot" {
			hr.Set(fd, v)
		}
		return true
	})
	h = proto.Clone(h).(*raftpb.Message)
	h.Snapshot = &raftpb.Snapshot{Metadata: proto.Clone(m.GetSnapshot().GetMetadata()).(*raftpb.SnapshotMetadata)}
	return h
}

// startSnapshot sends a MsgSnap on a goroutine of its own. p is nil when the
// peer is unknown. ReportSnapshot is called in every case.
func (t *Transport) startSnapshot(p *peer, m *raftpb.Message) {
	to := m.GetTo()
	hdr := snapshotHeader(m)
	if !t.goTracked(func() { t.sendSnapshot(p, hdr) }) {
		// Stopped: still report, but never from inside Send.
		go t.cfg.Raft.ReportSnapshot(to, raft.SnapshotFailure)
	}
}

func (t *Transport) sendSnapshot(p *peer, m *raftpb.Message) {
	to, index := m.GetTo(), m.GetSnapshot().GetMetadata().GetIndex()
	label := idString(to)
	result := raft.SnapshotFailure
	defer func() { t.cfg.Raft.ReportSnapshot(to, result) }()
	lg := t.lg.With(zap.String("remote-peer-id", label), zap.Uint64("index", index))
	if p == nil {
		lg.Warn("cannot send snapshot to unknown peer")
		return
	}
	inflight := t.met.snapSendInflight.WithLabelValues(label)
	inflight.Inc()
	defer inflight.Dec()
	start := time.Now()
	lg.Info("sending snapshot")
	n, err := p.sendSnapshot(m, index)
	if err != nil {
		t.met.snapSendFailures.WithLabelValues(label).Inc()
		lg.Warn("failed to send snapshot", zap.Int64("bytes", n), zap.Error(err))
		return
	}
	t.met.snapSendSuccess.WithLabelValues(label).Inc()
	t.met.snapSendSeconds.WithLabelValues(label).Observe(time.Since(start).Seconds())
	lg.Info("sent snapshot", zap.Int64("bytes", n), zap.Duration("took", time.Since(start)))
	result = raft.SnapshotFinish
}

// sendSnapshot streams the snapshot at index to the peer: header, chunks,
// CRC-32C trailer. It returns the number of data bytes sent.
func (p *peer) sendSnapshot(m *raftpb.Message, index uint64) (int64, error) {
	if p.t.cfg.Snapshots == nil {
		return 0, errors.New("no snapshot store configured")
	}
	rc, err := p.t.cfg.Snapshots.Open(index)
	if err != nil {
		return 0, fmt.Errorf("open snapshot: %w", err)
	}
	defer rc.Close()
	cs, cancel, err := p.open(&serviceDesc.Streams[1], methodSnapshot)
	if err != nil {
		return 0, err
	}
	defer cancel()
	// finish turns io.EOF from SendMsg into the call's status.
	finish := func(err error) error {
		if errors.Is(err, io.EOF) {
			if err = cs.RecvMsg(&emptypb.Empty{}); err == nil {
				err = errors.New("peer ended the snapshot call early")
			}
		}
		return err
	}
	if err := cs.SendMsg(m); err != nil {
		return 0, finish(err)
	}
	var crc uint32
	var total int64
	for {
		buf := make([]byte, snapshotChunk)
		n, rerr := io.ReadFull(rc, buf)
		if n > 0 {
			crc = crc32.Update(crc, castagnoli, buf[:n])
			if err := cs.SendMsg(&wrapperspb.BytesValue{Value: buf[:n]}); err != nil {
				return total, finish(err)
			}
			total += int64(n)
			p.t.met.sentBytes.WithLabelValues(p.label).Add(float64(n))
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			// cancel aborts the call, so the receiver discards the data.
			return total, fmt.Errorf("read snapshot: %w", rerr)
		}
	}
	if err := cs.SendMsg(&wrapperspb.BytesValue{Value: binary.BigEndian.AppendUint32(nil, crc)}); err != nil {
		return total, finish(err)
	}
	if err := cs.CloseSend(); err != nil {
		return total, err
	}
	return total, cs.RecvMsg(&emptypb.Empty{})
}

func (t *Transport) serveSnapshot(ss grpc.ServerStream) error {
	return t.serve(ss, func(ctx context.Context, from uint64) error {
		label := idString(from)
		start := time.Now()
		err := t.receiveSnapshot(ctx, ss, from)
		if err != nil {
			t.met.snapRecvFailures.WithLabelValues(label).Inc()
			t.lg.Warn("failed to receive snapshot", zap.String("remote-peer-id", label), zap.Error(err))
			return err
		}
		t.met.snapRecvSuccess.WithLabelValues(label).Inc()
		t.met.snapRecvSeconds.WithLabelValues(label).Observe(time.Since(start).Seconds())
		return ss.SendMsg(&emptypb.Empty{})
	})
}

func (t *Transport) receiveSnapshot(ctx context.Context, ss grpc.ServerStream, from uint64) error {
	label := idString(from)
	m := &raftpb.Message{}
	if err := ss.RecvMsg(m); err != nil {
		return err
	}
	index := m.GetSnapshot().GetMetadata().GetIndex()
	switch {
	case m.GetType() != raftpb.MessageType_MsgSnap:
		return status.Errorf(codes.InvalidArgument, "cairn: snapshot call starts with %v, not MsgSnap", m.GetType())
	case m.GetTo() != t.cfg.LocalID || m.GetFrom() != from:
		return status.Errorf(codes.InvalidArgument, "cairn: snapshot from %s to %s on a call from %s to %s",
			idString(m.GetFrom()), idString(m.GetTo()), label, idString(t.cfg.LocalID))
	case index == 0:
		return status.Error(codes.InvalidArgument, "cairn: snapshot without an index")
	case t.cfg.Snapshots == nil:
		return status.Error(codes.Unimplemented, "cairn: this member cannot receive snapshots")
	}
	inflight := t.met.snapRecvInflight.WithLabelValues(label)
	inflight.Inc()
	defer inflight.Dec()
	t.lg.Info("receiving snapshot", zap.String("remote-peer-id", label), zap.Uint64("index", index))
	r := &snapshotReader{ss: ss}
	err := t.cfg.Snapshots.Receive(index, r)
	t.met.recvBytes.WithLabelValues(label).Add(float64(r.n))
	if r.err != nil && !errors.Is(r.err, io.EOF) {
		// The stream, not the store, failed: report that.
		if errors.Is(r.err, ErrChecksumMismatch) {
			return status.Errorf(codes.DataLoss, "cairn: snapshot at index %d: %v", index, r.err)
		}
		if _, ok := status.FromError(r.err); ok {
			return r.err
		}
		return status.Errorf(codes.InvalidArgument, "cairn: snapshot at index %d: %v", index, r.err)
	}
	if err != nil {
		return status.Errorf(codes.Internal, "cairn: storing snapshot at index %d: %v", index, err)
	}
	if !r.verified {
		return status.Errorf(codes.Internal, "cairn: snapshot store returned before reading all of snapshot %d", index)
	}
	t.lg.Info("received snapshot", zap.String("remote-peer-id", label), zap.Uint64("index", index), zap.Int64("bytes", r.n))
	if err := t.cfg.Raft.Process(ctx, m); err != nil {
		return status.Errorf(codes.Unavailable, "cairn: raft did not take snapshot %d: %v", index, err)
	}
	return nil
}

// snapshotReader reads the data chunks of a Snapshot call. It holds back
// one frame, because the last frame is the CRC-32C trailer, and returns
// io.EOF only after the trailer matched.
type snapshotReader struct {
	ss       grpc.ServerStream
	cur      []byte // unread bytes of the current chunk
	held     []byte // the frame after cur: data unless it turns out to be the last
	primed   bool
	crc      uint32
	n        int64
	verified bool
	err      error // sticky: io.EOF after verification, or the failure
}

func (r *snapshotReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.advance()
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

func (r *snapshotReader) recv() ([]byte, error) {
	b := &wrapperspb.BytesValue{}
	err := r.ss.RecvMsg(b)
	return b.GetValue(), err
}

func (r *snapshotReader) advance() {
	if !r.primed {
		f, err := r.recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = ErrSnapshotMalformed
			}
			r.err = err
			return
		}
		r.held, r.primed = f, true
	}
	f, err := r.recv()
	switch {
	case errors.Is(err, io.EOF):
		// r.held was the last frame: the trailer.
		switch {
		case len(r.held) != 4:
			r.err = ErrSnapshotMalformed
		case binary.BigEndian.Uint32(r.held) != r.crc:
			r.err = ErrChecksumMismatch
		default:
			r.verified, r.err = true, io.EOF
		}
	case err != nil:
		r.err = err
	default:
		r.cur, r.held = r.held, f
		r.crc = crc32.Update(r.crc, castagnoli, r.cur)
		r.n += int64(len(r.cur))
	}
}
