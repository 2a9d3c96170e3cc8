package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// peer is the sending side towards one member: a connection, a bounded
// queue of marshalled messages and the goroutine that streams them.
type peer struct {
	t     *Transport
	id    uint64
	label string
	addrs []resolver.Address // guarded by t.mu
	res   *manual.Resolver
	conn  *grpc.ClientConn
	queue chan []byte
	// carry is a frame that did not fit in the previous batch (run only).
	carry []byte

	ctx    context.Context // cancelled when the peer is removed or the transport stops
	cancel context.CancelFunc

	active   atomic.Bool  // a stream is established
	since    atomic.Int64 // when it was, in Unix nanoseconds
	dropping atomic.Bool  // Send has dropped since the last successful write
}

func (t *Transport) newPeer(id uint64, addrs []resolver.Address) (*peer, error) {
	r := manual.NewBuilderWithScheme("cairnpeer")
	r.InitialState(resolver.State{Addresses: addrs})
	opts := []grpc.DialOption{
		grpc.WithResolvers(r),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  100 * time.Millisecond,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   maxBackoff,
			},
			MinConnectTimeout: t.cfg.DialTimeout,
		}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time: keepaliveTime, Timeout: keepaliveWait, PermitWithoutStream: true,
		}),
		grpc.WithStaticStreamWindowSize(peerStreamWindow),
		grpc.WithStaticConnWindowSize(peerConnWindow),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallSendMsgSize(t.cfg.MaxMessageSize),
			grpc.MaxCallRecvMsgSize(t.cfg.MaxMessageSize),
		),
	}
	if t.localAddr != nil {
		d := &net.Dialer{LocalAddr: t.localAddr}
		opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}))
	}
	conn, err := grpc.NewClient(r.Scheme()+":///"+idString(id), append(opts, t.cfg.DialOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("transport: peer %s: %w", idString(id), err)
	}
	ctx, cancel := context.WithCancel(t.ctx)
	return &peer{
		t:      t,
		id:     id,
		label:  idString(id),
		addrs:  addrs,
		res:    r,
		conn:   conn,
		queue:  make(chan []byte, t.cfg.QueueSize),
		ctx:    ctx,
		cancel: cancel,
	}, nil
}

// close stops the peer's goroutines (the transport's WaitGroup tracks
// them) and fails its snapshot transfers.
func (p *peer) close() {
	p.cancel()
	_ = p.conn.Close()
}

// run keeps one message stream to the peer open, reconnecting with
// exponential backoff, until the peer is closed.
func (p *peer) run() {
	defer p.t.wg.Done()
	lg := p.t.lg.With(zap.String("remote-peer-id", p.label))
	bo := minBackoff
	var lastErr string
	for {
		established, err := p.stream(lg)
		if p.ctx.Err() != nil {
			return
		}
		p.t.reportUnreachable(p.id)
		if st, ok := status.FromError(err); ok && st.Code() == codes.PermissionDenied && st.Message() == errRemovedText && p.t.cfg.OnRemoved != nil {
			lg.Warn("peer says this member was removed from the cluster")
			p.t.cfg.OnRemoved()
		}
		if established {
			p.t.met.disconnected.WithLabelValues(p.t.localLabel(), p.label).Inc()
			lg.Warn("lost the stream to peer", zap.Error(err))
			lastErr = ""
			bo = minBackoff
		} else if msg := err.Error(); msg != lastErr {
			lg.Warn("cannot open a stream to peer; retrying", zap.Error(err))
			lastErr = msg
		} else {
			lg.Debug("cannot open a stream to peer; retrying", zap.Error(err))
		}
		// Up to 20% jitter, so that members do not retry in lockstep.
		timer := time.NewTimer(bo + rand.N(bo/5+1))
		select {
		case <-p.ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		if !established {
			bo = min(2*bo, maxBackoff)
		}
	}
}

// stream opens a message stream and writes queued batches to it until it
// fails. established tells whether the handshake succeeded.
func (p *peer) stream(lg *zap.Logger) (established bool, err error) {
	cs, cancel, err := p.open(&serviceDesc.Streams[0], methodStream)
	if err != nil {
		return false, err
	}
	defer cancel()
	p.since.Store(time.Now().UnixNano())
	p.active.Store(true)
	active := p.t.met.activePeers.WithLabelValues(p.t.localLabel(), p.label)
	active.Inc()
	lg.Info("established a stream to peer")
	defer func() {
		p.active.Store(false)
		active.Dec()
	}()

	// For a client-streaming call the server only speaks at the end: a
	// reader waiting for that end notices a rejection or a broken stream
	// even while there is nothing to send.
	recvErr := make(chan error, 1)
	if !p.t.goTracked(func() {
		err := cs.RecvMsg(&emptypb.Empty{})
		if err == nil {
			err = errors.New("peer ended the stream")
		}
		recvErr <- err
	}) {
		return true, ErrStopped
	}
	sentBytes := p.t.met.sentBytes.WithLabelValues(p.label)
	for {
		frame := p.carry
		p.carry = nil
		if frame == nil {
			select {
			case <-p.ctx.Done():
				return true, p.ctx.Err()
			case err := <-recvErr:
				return true, err
			case frame = <-p.queue:
			}
		}
		batch, n := p.batch(frame)
		if err := cs.SendMsg(&wrapperspb.BytesValue{Value: batch}); err != nil {
			p.t.met.sentFailures.WithLabelValues(p.label).Add(float64(n))
			if errors.Is(err, io.EOF) {
				// The stream ended; its status says why.
				select {
				case err = <-recvErr:
				case <-p.ctx.Done():
				}
			}
			return true, err
		}
		sentBytes.Add(float64(len(batch)))
		p.dropping.Store(false)
	}
}

// batch appends queued frames to first, up to the batch limit, and returns
// the batch and the number of messages in it.
func (p *peer) batch(first []byte) ([]byte, int) {
	buf, n := first, 1
	limit := p.t.batch
	for len(buf) < limit {
		var f []byte
		select {
		case f = <-p.queue:
		default:
			return buf, n
		}
		if len(buf)+len(f) > limit {
			p.carry = f
			break
		}
		if n == 1 {
			// Never append to a frame that Send handed over: copy.
			nb := make([]byte, 0, min(limit, 4*(len(buf)+len(f))))
			buf = append(nb, buf...)
		}
		buf = append(buf, f...)
		n++
	}
	return buf, n
}

// open starts a call to the peer and waits for its handshake: the header
// metadata in which the server confirms its member and cluster IDs. It
// returns the stream and the function that ends it.
func (p *peer) open(desc *grpc.StreamDesc, method string) (grpc.ClientStream, context.CancelFunc, error) {
	ctx, cancel := context.WithCancel(p.ctx)
	ctx = metadata.NewOutgoingContext(ctx, p.t.outgoingMD(p.id))
	var timedOut atomic.Bool
	timer := time.AfterFunc(p.t.cfg.DialTimeout, func() {
		timedOut.Store(true)
		cancel()
	})
	cs, err := p.conn.NewStream(ctx, desc, method)
	if err == nil {
		err = p.handshake(cs)
	}
	if !timer.Stop() && err == nil {
		err = ctx.Err() // the timer fired just after the handshake
	}
	if err != nil {
		cancel()
		if timedOut.Load() {
			err = fmt.Errorf("no handshake within %v: %w", p.t.cfg.DialTimeout, err)
		}
		return nil, nil, err
	}
	return cs, cancel, nil
}

func (p *peer) handshake(cs grpc.ClientStream) error {
	md, err := cs.Header()
	if err != nil {
		return err
	}
	if len(md.Get(mdMemberID)) == 0 {
		// The server ended the call without accepting it: its status
		// says why.
		err := cs.RecvMsg(&emptypb.Empty{})
		if err == nil {
			err = errors.New("peer ended the call without a handshake")
		}
		return err
	}
	return p.t.checkServerHeader(p.id, md)
}
