package transport

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const testCluster = 0xc1

// TestMain fails the package if any test left a goroutine of the
// transport or of gRPC running.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaks := waitNoLeaks(10*time.Second, true); leaks != "" {
			fmt.Fprintf(os.Stderr, "leaked goroutines:\n%s\n", leaks)
			code = 1
		}
	}
	os.Exit(code)
}

// waitNoLeaks waits until no goroutine but the caller runs transport code
// (or, with grpcToo, gRPC code), and returns the stacks of those still
// running at the deadline. The test's own gRPC servers count only with
// grpcToo.
func waitNoLeaks(d time.Duration, grpcToo bool) string {
	deadline := time.Now().Add(d)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaks []string
		for i, g := range strings.Split(string(buf), "\n\n") {
			if i == 0 { // the caller
				continue
			}
			if (grpcToo && strings.Contains(g, "google.golang.org/grpc")) ||
				(strings.Contains(g, "cairn/internal/transport.") && !strings.Contains(g, "testing.tRunner") &&
					!strings.Contains(g, "transport.(*node).startServer")) {
				leaks = append(leaks, g)
			}
		}
		if len(leaks) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(leaks, "\n\n")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitFor polls cond until it holds, failing the test after 15 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type snapReport struct {
	id     uint64
	status raft.SnapshotStatus
}

// fakeRaft records what the transport hands it.
type fakeRaft struct {
	msgs  chan *raftpb.Message
	snaps chan snapReport

	mu          sync.Mutex
	block       bool // Process waits until its ctx is done
	unreachable map[uint64]int
}

func newFakeRaft() *fakeRaft {
	return &fakeRaft{
		msgs:        make(chan *raftpb.Message, 1<<16),
		snaps:       make(chan snapReport, 16),
		unreachable: make(map[uint64]int),
	}
}

func (f *fakeRaft) Process(ctx context.Context, m *raftpb.Message) error {
	f.mu.Lock()
	block := f.block
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return ctx.Err()
	}
	select {
	case f.msgs <- m:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// blockProcess makes Process hang until the call it serves ends.
func (f *fakeRaft) blockProcess() {
	f.mu.Lock()
	f.block = true
	f.mu.Unlock()
}

func (f *fakeRaft) ReportUnreachable(id uint64) {
	f.mu.Lock()
	f.unreachable[id]++
	f.mu.Unlock()
}

func (f *fakeRaft) ReportSnapshot(id uint64, st raft.SnapshotStatus) { f.snaps <- snapReport{id, st} }

func (f *fakeRaft) unreachableCount(id uint64) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.unreachable[id]
}

// next returns the next message processed, failing after 15 s.
func (f *fakeRaft) next(t *testing.T) *raftpb.Message {
	t.Helper()
	select {
	case m := <-f.msgs:
		return m
	case <-time.After(15 * time.Second):
		t.Fatal("timed out waiting for a message")
		return nil
	}
}

func (f *fakeRaft) nextSnapReport(t *testing.T) snapReport {
	t.Helper()
	select {
	case r := <-f.snaps:
		return r
	case <-time.After(15 * time.Second):
		t.Fatal("timed out waiting for ReportSnapshot")
		return snapReport{}
	}
}

// fakeStore keeps snapshots in memory.
type fakeStore struct {
	mu       sync.Mutex
	data     map[uint64][]byte // what Open serves
	openErr  error
	received map[uint64][]byte
	errs     []error // what Receive failed with
}

func newFakeStore() *fakeStore {
	return &fakeStore{data: make(map[uint64][]byte), received: make(map[uint64][]byte)}
}

func (s *fakeStore) Open(index uint64) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.openErr != nil {
		return nil, s.openErr
	}
	d, ok := s.data[index]
	if !ok {
		return nil, fmt.Errorf("no snapshot %d", index)
	}
	return io.NopCloser(bytes.NewReader(d)), nil
}

func (s *fakeStore) Receive(index uint64, r io.Reader) error {
	b, err := io.ReadAll(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.errs = append(s.errs, err)
		return err
	}
	s.received[index] = b
	return nil
}

func (s *fakeStore) get(index uint64) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.received[index]
	return b, ok
}

func (s *fakeStore) receiveErrs() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.errs...)
}

// node is one member: a transport, its fakes and its peer gRPC server.
type node struct {
	id    uint64
	tr    *Transport
	raft  *fakeRaft
	store *fakeStore
	reg   *prometheus.Registry
	addr  string

	srvMu sync.Mutex
	srv   *grpc.Server
	done  chan struct{}
}

type nodeOpt func(*Config, *[]grpc.ServerOption)

func startNode(t *testing.T, id uint64, opts ...nodeOpt) *node {
	t.Helper()
	cfg := Config{LocalID: id, ClusterID: testCluster, DialTimeout: 2 * time.Second}
	var sopts []grpc.ServerOption
	for _, o := range opts {
		o(&cfg, &sopts)
	}
	n := &node{id: id, raft: newFakeRaft(), store: newFakeStore(), reg: prometheus.NewRegistry()}
	if cfg.Raft == nil {
		cfg.Raft = n.raft
	}
	cfg.Snapshots = n.store
	n.tr = New(zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).Named(idString(id)), cfg)
	if err := n.tr.RegisterMetrics(n.reg); err != nil {
		t.Fatal(err)
	}
	n.startServer(t, "127.0.0.1:0", sopts...)
	t.Cleanup(func() {
		n.tr.Stop()
		n.stopServer()
	})
	return n
}

func (n *node) url() string { return "http://" + n.addr }

func (n *node) startServer(t *testing.T, addr string, extra ...grpc.ServerOption) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(append(n.tr.ServerOptions(), extra...)...)
	n.tr.Register(srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	n.srvMu.Lock()
	n.srv, n.done, n.addr = srv, done, l.Addr().String()
	n.srvMu.Unlock()
}

func (n *node) stopServer() {
	n.srvMu.Lock()
	srv, done := n.srv, n.done
	n.srv = nil
	n.srvMu.Unlock()
	if srv != nil {
		srv.Stop()
		<-done
	}
}

// addPeer makes b a peer of a.
func addPeer(t *testing.T, a, b *node) {
	t.Helper()
	if err := a.tr.AddPeer(b.id, []string{b.url()}); err != nil {
		t.Fatal(err)
	}
}

// connect makes every node a peer of every other.
func connect(t *testing.T, nodes ...*node) {
	t.Helper()
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b {
				addPeer(t, a, b)
			}
		}
	}
}

func msgApp(from, to, index uint64, data []byte) *raftpb.Message {
	m := &raftpb.Message{
		Type:  raftpb.MessageType_MsgApp.Enum(),
		From:  proto.Uint64(from),
		To:    proto.Uint64(to),
		Term:  proto.Uint64(1),
		Index: proto.Uint64(index),
	}
	if data != nil {
		m.Entries = []*raftpb.Entry{{Term: proto.Uint64(1), Index: proto.Uint64(index + 1), Data: data}}
	}
	return m
}

func msgSnap(from, to, index uint64) *raftpb.Message {
	return &raftpb.Message{
		Type: raftpb.MessageType_MsgSnap.Enum(),
		From: proto.Uint64(from),
		To:   proto.Uint64(to),
		Term: proto.Uint64(3),
		Snapshot: &raftpb.Snapshot{
			Data: []byte("not sent"),
			Metadata: &raftpb.SnapshotMetadata{
				Index:     proto.Uint64(index),
				Term:      proto.Uint64(3),
				ConfState: &raftpb.ConfState{Voters: []uint64{from, to}},
			},
		},
	}
}

func randBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// metricValue returns the value of the metric name whose label has value.
func metricValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					switch {
					case m.Counter != nil:
						return m.GetCounter().GetValue()
					case m.Gauge != nil:
						return m.GetGauge().GetValue()
					case m.Histogram != nil:
						return float64(m.GetHistogram().GetSampleCount())
					}
				}
			}
		}
	}
	return 0
}

func TestMessagesArriveInOrder(t *testing.T) {
	n1, n2, n3 := startNode(t, 1), startNode(t, 2), startNode(t, 3)
	connect(t, n1, n2, n3)
	const count = 3000
	big := randBytes(t, 6<<20) // above gRPC's default 4 MiB limit
	go func() {
		var batch []*raftpb.Message
		for i := uint64(1); i <= count; i++ {
			var data []byte
			switch {
			case i == 1500:
				data = big
			case i%97 == 0:
				data = make([]byte, 300<<10)
			}
			batch = append(batch, msgApp(1, 2, i, data), msgApp(1, 3, i, data))
			if i%7 == 0 || i == count {
				n1.tr.Send(batch)
				batch = nil
			}
		}
	}()
	n2.tr.Send([]*raftpb.Message{msgApp(2, 1, 1, nil), msgApp(2, 1, 2, nil)})
	for _, n := range []*node{n2, n3} {
		for i := uint64(1); i <= count; i++ {
			m := n.raft.next(t)
			if m.GetIndex() != i || m.GetFrom() != 1 || m.GetTo() != n.id {
				t.Fatalf("member %d: message %d is %v", n.id, i, m)
			}
			if i == 1500 && !bytes.Equal(m.GetEntries()[0].GetData(), big) {
				t.Fatalf("member %d: the big entry was corrupted", n.id)
			}
		}
	}
	for i := uint64(1); i <= 2; i++ {
		if m := n1.raft.next(t); m.GetIndex() != i || m.GetFrom() != 2 {
			t.Fatalf("member 1: message %d is %v", i, m)
		}
	}
	waitFor(t, "member 1 to have 2 active peers", func() bool { return n1.tr.ActivePeers() == 2 })
	if !n1.tr.IsActive(2) || n1.tr.ActiveSince(3).IsZero() || n1.tr.IsActive(7) || !n1.tr.ActiveSince(7).IsZero() {
		t.Error("IsActive/ActiveSince disagree with ActivePeers")
	}
	if v := metricValue(t, n1.reg, "etcd_network_peer_sent_bytes_total", "To", "2"); v < float64(len(big)) {
		t.Errorf("sent bytes to 2 = %v", v)
	}
	if v := metricValue(t, n2.reg, "etcd_network_peer_received_bytes_total", "From", "1"); v < float64(len(big)) {
		t.Errorf("received bytes from 1 = %v", v)
	}
	if v := metricValue(t, n1.reg, "etcd_network_active_peers", "Remote", "3"); v != 1 {
		t.Errorf("active peers gauge for 3 = %v", v)
	}
}

// A dead peer and a peer that stops reading never block Send, nor the
// messages to a live peer; their overflow is dropped and reported.
func TestSlowAndDeadPeersDoNotBlock(t *testing.T) {
	n1 := startNode(t, 1, func(c *Config, _ *[]grpc.ServerOption) { c.QueueSize = 64 })
	live := startNode(t, 2)
	slow := startNode(t, 3)
	slow.raft.blockProcess()
	// Receivers first, so that member 1's first streams are accepted.
	addPeer(t, live, n1)
	addPeer(t, slow, n1)
	addPeer(t, n1, live)
	addPeer(t, n1, slow)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + l.Addr().String()
	l.Close() // connections are refused from now on
	if err := n1.tr.AddPeer(9, []string{deadURL}); err != nil {
		t.Fatal(err)
	}

	// Lockstep with the live peer: each Send must return, and its message
	// to the live peer arrive, while the other two peers' queues overflow.
	const count = 600
	payload := make([]byte, 100<<10)
	for i := uint64(1); i <= count; i++ {
		sent := make(chan struct{})
		go func() {
			defer close(sent)
			n1.tr.Send([]*raftpb.Message{msgApp(1, 9, i, payload), msgApp(1, 3, i, payload), msgApp(1, 2, i, nil)})
		}()
		select {
		case <-sent:
		case <-time.After(15 * time.Second):
			t.Fatal("Send blocked")
		}
		if m := live.raft.next(t); m.GetIndex() != i {
			t.Fatalf("live peer: message %d is %v", i, m)
		}
	}
	waitFor(t, "ReportUnreachable for the dead and the slow peer", func() bool {
		return n1.raft.unreachableCount(9) > 0 && n1.raft.unreachableCount(3) > 0
	})
	if n1.raft.unreachableCount(2) != 0 {
		t.Errorf("the live peer was reported unreachable")
	}
	if v := metricValue(t, n1.reg, "etcd_network_peer_sent_failures_total", "To", "9"); v < count-64 {
		t.Errorf("sent failures to the dead peer = %v, want >= %d", v, count-64)
	}
	if v := metricValue(t, n1.reg, "etcd_network_peer_sent_failures_total", "To", "3"); v == 0 {
		t.Errorf("no sent failures counted for the slow peer")
	}
}

func TestReconnectAfterPeerRestart(t *testing.T) {
	n1, n2 := startNode(t, 1), startNode(t, 2)
	connect(t, n1, n2)
	n1.tr.Send([]*raftpb.Message{msgApp(1, 2, 1, nil)})
	if m := n2.raft.next(t); m.GetIndex() != 1 {
		t.Fatalf("got %v", m)
	}
	waitFor(t, "an active stream", func() bool { return n1.tr.ActivePeers() == 1 })

	addr := n2.addr
	n2.stopServer()
	waitFor(t, "the stream to be lost", func() bool { return n1.tr.ActivePeers() == 0 })
	if n1.tr.IsActive(2) || !n1.tr.ActiveSince(2).IsZero() {
		t.Error("peer 2 still active")
	}
	waitFor(t, "ReportUnreachable(2)", func() bool { return n1.raft.unreachableCount(2) > 0 })

	n2.startServer(t, addr)
	// Keep sending until a message gets through the new stream.
	deadline := time.After(15 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for i := uint64(2); ; i++ {
		n1.tr.Send([]*raftpb.Message{msgApp(1, 2, i, nil)})
		select {
		case m := <-n2.raft.msgs:
			if m.GetIndex() < 2 {
				t.Fatalf("got %v", m)
			}
			waitFor(t, "an active stream again", func() bool { return n1.tr.ActivePeers() == 1 })
			if v := metricValue(t, n1.reg, "etcd_network_disconnected_peers_total", "Remote", "2"); v < 1 {
				t.Errorf("disconnected peers = %v", v)
			}
			return
		case <-tick.C:
		case <-deadline:
			t.Fatal("no message got through after the restart")
		}
	}
}

func TestUpdatePeer(t *testing.T) {
	n1, n2 := startNode(t, 1), startNode(t, 2)
	if err := n2.tr.AddPeer(1, []string{n1.url()}); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wrong := "http://" + l.Addr().String()
	l.Close()
	if err := n1.tr.AddPeer(2, []string{wrong}); err != nil {
		t.Fatal(err)
	}
	n1.tr.Send([]*raftpb.Message{msgApp(1, 2, 1, nil)})
	waitFor(t, "ReportUnreachable(2)", func() bool { return n1.raft.unreachableCount(2) > 0 })
	if err := n1.tr.UpdatePeer(2, []string{wrong, n2.url()}); err != nil {
		t.Fatal(err)
	}
	n1.tr.Send([]*raftpb.Message{msgApp(1, 2, 2, nil)})
	for {
		if m := n2.raft.next(t); m.GetIndex() == 2 {
			break
		}
	}
	// SetPeers removes what it is not given.
	if err := n1.tr.SetPeers(map[uint64][]string{1: {"http://ignored:1"}}); err != nil {
		t.Fatal(err)
	}
	if n1.tr.ActivePeers() != 0 || n1.tr.peer(2) != nil {
		t.Fatal("SetPeers did not remove peer 2")
	}
}

// rawCall opens a peer call to addr with the given metadata, as a
// misbehaving or misconfigured member would.
func rawCall(t *testing.T, addr, method string, md metadata.MD) grpc.ClientStream {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(context.Background(), md))
	t.Cleanup(func() {
		cancel()
		cc.Close()
	})
	desc := &serviceDesc.Streams[0]
	if method == methodSnapshot {
		desc = &serviceDesc.Streams[1]
	}
	cs, err := cc.NewStream(ctx, desc, method)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func callMD(from, to, cluster uint64) metadata.MD {
	return metadata.Pairs(mdFrom, idString(from), mdTo, idString(to), mdClusterID, idString(cluster))
}

func TestRejectedCalls(t *testing.T) {
	n2 := startNode(t, 2, func(c *Config, _ *[]grpc.ServerOption) {
		c.IsRemoved = func(id uint64) bool { return id == 4 }
	})
	if err := n2.tr.AddPeer(1, []string{"http://127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	if err := n2.tr.AddPeer(6, []string{"http://127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	n2.tr.RemovePeer(6)
	for _, tc := range []struct {
		name string
		md   metadata.MD
		code codes.Code
		text string
	}{
		{"cluster ID mismatch", callMD(1, 2, 0xbad), codes.FailedPrecondition, "etcdserver: cluster ID mismatch"},
		{"meant for another member", callMD(1, 7, testCluster), codes.FailedPrecondition, "member ID mismatch"},
		{"unknown sender", callMD(5, 2, testCluster), codes.NotFound, "not a known peer"},
		{"removed sender", callMD(4, 2, testCluster), codes.PermissionDenied, "permanently removed"},
		{"sender no longer a peer", callMD(6, 2, testCluster), codes.NotFound, "not a known peer"},
		{"no metadata", metadata.MD{}, codes.InvalidArgument, "cluster-id"},
	} {
		for _, method := range []string{methodStream, methodSnapshot} {
			cs := rawCall(t, n2.addr, method, tc.md)
			err := cs.RecvMsg(&emptypb.Empty{})
			if st, _ := status.FromError(err); st.Code() != tc.code || !strings.Contains(st.Message(), tc.text) {
				t.Errorf("%s %s: got %v, want %v %q", tc.name, method, err, tc.code, tc.text)
			}
		}
	}
}

// Two members of different clusters never exchange messages.
func TestClusterIDMismatch(t *testing.T) {
	n1 := startNode(t, 1)
	n2 := startNode(t, 2, func(c *Config, _ *[]grpc.ServerOption) { c.ClusterID = 0xbad })
	connect(t, n1, n2)
	n1.tr.Send([]*raftpb.Message{msgApp(1, 2, 1, nil)})
	n2.tr.Send([]*raftpb.Message{msgApp(2, 1, 1, nil)})
	waitFor(t, "both to report the other unreachable", func() bool {
		return n1.raft.unreachableCount(2) > 0 && n2.raft.unreachableCount(1) > 0
	})
	if n1.tr.ActivePeers() != 0 || n2.tr.ActivePeers() != 0 {
		t.Fatal("a stream was established across clusters")
	}
	select {
	case m := <-n1.raft.msgs:
		t.Fatalf("member 1 got %v", m)
	case m := <-n2.raft.msgs:
		t.Fatalf("member 2 got %v", m)
	default:
	}
}

// A peer URL that leads to another member is never written to.
func TestMemberIDMismatch(t *testing.T) {
	n1, n3 := startNode(t, 1), startNode(t, 3)
	connect(t, n1, n3)
	if err := n1.tr.AddPeer(2, []string{n3.url()}); err != nil {
		t.Fatal(err)
	}
	n1.tr.Send([]*raftpb.Message{msgApp(1, 2, 1, nil), msgApp(1, 3, 2, nil)})
	if m := n3.raft.next(t); m.GetIndex() != 2 {
		t.Fatalf("member 3 got %v", m)
	}
	waitFor(t, "ReportUnreachable(2)", func() bool { return n1.raft.unreachableCount(2) > 0 })
}

// The receiver drops messages not addressed to it, not from the stream's
// sender, and MsgSnap (which must come on the Snapshot call).
func TestReceiverFiltersMessages(t *testing.T) {
	n2 := startNode(t, 2)
	if err := n2.tr.AddPeer(1, []string{"http://127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	cs := rawCall(t, n2.addr, methodStream, callMD(1, 2, testCluster))
	var batch []byte
	for _, m := range []*raftpb.Message{msgApp(1, 99, 1, nil), msgApp(1, 2, 2, nil), msgApp(5, 2, 3, nil), msgSnap(1, 2, 4), msgApp(1, 2, 5, nil)} {
		var err error
		if batch, err = appendFrame(batch, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := cs.SendMsg(&wrapperspb.BytesValue{Value: batch}); err != nil {
		t.Fatal(err)
	}
	if err := cs.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if err := cs.RecvMsg(&emptypb.Empty{}); err != nil {
		t.Fatalf("stream ended with %v", err)
	}
	for _, want := range []uint64{2, 5} {
		if m := n2.raft.next(t); m.GetIndex() != want {
			t.Fatalf("got %v, want index %d", m, want)
		}
	}
	select {
	case m := <-n2.raft.msgs:
		t.Fatalf("unexpected %v", m)
	default:
	}

	// A malformed batch ends the stream with InvalidArgument.
	cs = rawCall(t, n2.addr, methodStream, callMD(1, 2, testCluster))
	if err := cs.SendMsg(&wrapperspb.BytesValue{Value: []byte{0x0a, 0x05, 0x01}}); err != nil {
		t.Fatal(err)
	}
	if err := cs.RecvMsg(&emptypb.Empty{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("malformed batch: got %v", err)
	}
}

func TestSnapshotTransfer(t *testing.T) {
	n1, n2 := startNode(t, 1), startNode(t, 2)
	connect(t, n1, n2)
	data := randBytes(t, 3<<20+12345)
	n1.store.data[100] = data
	n1.store.data[101] = nil // an empty snapshot is fine too

	for _, index := range []uint64{100, 101} {
		n1.tr.Send([]*raftpb.Message{msgSnap(1, 2, index)})
		m := n2.raft.next(t)
		// Receive stored the data before raft saw the MsgSnap.
		got, ok := n2.store.get(index)
		if !ok || !bytes.Equal(got, n1.store.data[index]) {
			t.Fatalf("snapshot %d: stored %d bytes (ok=%v), want %d", index, len(got), ok, len(n1.store.data[index]))
		}
		if m.GetType() != raftpb.MessageType_MsgSnap || m.GetSnapshot().GetMetadata().GetIndex() != index ||
			m.GetFrom() != 1 || m.GetTerm() != 3 || len(m.GetSnapshot().GetData()) != 0 ||
			len(m.GetSnapshot().GetMetadata().GetConfState().GetVoters()) != 2 {
			t.Fatalf("raft got %v", m)
		}
		if r := n1.raft.nextSnapReport(t); r != (snapReport{2, raft.SnapshotFinish}) {
			t.Fatalf("reported %+v", r)
		}
	}
	if v := metricValue(t, n1.reg, "etcd_network_snapshot_send_success", "To", "2"); v != 2 {
		t.Errorf("snapshot send success = %v", v)
	}
	if v := metricValue(t, n2.reg, "etcd_network_snapshot_receive_success", "From", "1"); v != 2 {
		t.Errorf("snapshot receive success = %v", v)
	}
}

// corruptSnapshots flips a bit of the first data chunk of every Snapshot
// call the server receives.
func corruptSnapshots(_ *Config, sopts *[]grpc.ServerOption) {
	*sopts = append(*sopts, grpc.StreamInterceptor(
		func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if info.FullMethod == methodSnapshot {
				ss = &corruptingStream{ServerStream: ss}
			}
			return h(srv, ss)
		}))
}

type corruptingStream struct {
	grpc.ServerStream
	done bool
}

func (s *corruptingStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if b, ok := m.(*wrapperspb.BytesValue); ok && err == nil && !s.done && len(b.Value) > 4 {
		b.Value[len(b.Value)/2] ^= 0x10
		s.done = true
	}
	return err
}

func TestSnapshotChecksumMismatch(t *testing.T) {
	n1, n2 := startNode(t, 1), startNode(t, 2, corruptSnapshots)
	connect(t, n1, n2)
	n1.store.data[100] = randBytes(t, 2<<20)
	n1.tr.Send([]*raftpb.Message{msgSnap(1, 2, 100)})
	if r := n1.raft.nextSnapReport(t); r != (snapReport{2, raft.SnapshotFailure}) {
		t.Fatalf("reported %+v", r)
	}
	if _, ok := n2.store.get(100); ok {
		t.Fatal("a corrupt snapshot was stored")
	}
	if errs := n2.store.receiveErrs(); len(errs) != 1 || !errors.Is(errs[0], ErrChecksumMismatch) {
		t.Fatalf("Receive saw %v", errs)
	}
	select {
	case m := <-n2.raft.msgs:
		t.Fatalf("raft got %v", m)
	default:
	}
	if v := metricValue(t, n1.reg, "etcd_network_snapshot_send_failures", "To", "2"); v != 1 {
		t.Errorf("snapshot send failures = %v", v)
	}

	// On the wire: a wrong trailer fails the call with DataLoss, a missing
	// one with InvalidArgument.
	for _, tc := range []struct {
		frames [][]byte
		code   codes.Code
	}{
		{[][]byte{[]byte("hello"), {0, 0, 0, 1}}, codes.DataLoss},
		{[][]byte{[]byte("hello")}, codes.InvalidArgument},
		{nil, codes.InvalidArgument},
	} {
		cs := rawCall(t, n2.addr, methodSnapshot, callMD(1, 2, testCluster))
		if err := cs.SendMsg(snapshotHeader(msgSnap(1, 2, 7))); err != nil {
			t.Fatal(err)
		}
		for _, f := range tc.frames {
			if err := cs.SendMsg(&wrapperspb.BytesValue{Value: f}); err != nil {
				t.Fatal(err)
			}
		}
		if err := cs.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if err := cs.RecvMsg(&emptypb.Empty{}); status.Code(err) != tc.code {
			t.Errorf("%d frames: got %v, want %v", len(tc.frames), err, tc.code)
		}
	}
	if _, ok := n2.store.get(7); ok {
		t.Fatal("a bad snapshot was stored")
	}
}

// Every MsgSnap gets exactly one ReportSnapshot, whatever goes wrong.
func TestSnapshotFailuresAreReported(t *testing.T) {
	n1, n2 := startNode(t, 1), startNode(t, 2)
	connect(t, n1, n2)

	// Unknown peer.
	n1.tr.Send([]*raftpb.Message{msgSnap(1, 8, 100)})
	if r := n1.raft.nextSnapReport(t); r != (snapReport{8, raft.SnapshotFailure}) {
		t.Fatalf("unknown peer: reported %+v", r)
	}
	// No such snapshot.
	n1.tr.Send([]*raftpb.Message{msgSnap(1, 2, 100)})
	if r := n1.raft.nextSnapReport(t); r != (snapReport{2, raft.SnapshotFailure}) {
		t.Fatalf("open failure: reported %+v", r)
	}
	// The receiver's raft never takes it, and the sender stops.
	n2.raft.blockProcess()
	n1.store.data[100] = randBytes(t, 1000)
	n1.tr.Send([]*raftpb.Message{msgSnap(1, 2, 100)})
	waitFor(t, "the snapshot to be stored", func() bool { _, ok := n2.store.get(100); return ok })
	n1.tr.Stop()
	if r := n1.raft.nextSnapReport(t); r != (snapReport{2, raft.SnapshotFailure}) {
		t.Fatalf("stop: reported %+v", r)
	}
	// After Stop, still reported.
	n1.tr.Send([]*raftpb.Message{msgSnap(1, 2, 100)})
	if r := n1.raft.nextSnapReport(t); r != (snapReport{2, raft.SnapshotFailure}) {
		t.Fatalf("after stop: reported %+v", r)
	}
	select {
	case r := <-n1.raft.snaps:
		t.Fatalf("extra report %+v", r)
	default:
	}
}

func TestStopLeavesNoGoroutines(t *testing.T) {
	if leaks := waitNoLeaks(10*time.Second, true); leaks != "" {
		t.Fatalf("goroutines left by earlier tests:\n%s", leaks)
	}
	func() {
		n1, n2, n3 := startNode(t, 1), startNode(t, 2), startNode(t, 3)
		n3.raft.blockProcess()
		connect(t, n1, n2, n3)
		if err := n1.tr.AddPeer(9, []string{"http://127.0.0.1:1"}); err != nil {
			t.Fatal(err)
		}
		n1.store.data[5] = randBytes(t, 4<<20)
		for i := uint64(1); i <= 100; i++ {
			n1.tr.Send([]*raftpb.Message{msgApp(1, 2, i, nil), msgApp(1, 3, i, make([]byte, 10<<10)), msgApp(1, 9, i, nil)})
		}
		n1.tr.Send([]*raftpb.Message{msgSnap(1, 3, 5)})
		for i := 0; i < 100; i++ {
			n2.raft.next(t)
		}
		waitFor(t, "the stream to 3", func() bool { return n1.tr.ActivePeers() == 2 })
		// Stop the transports first, with streams and a snapshot in flight,
		// then the servers.
		n1.tr.Stop()
		n2.tr.Stop()
		n3.tr.Stop()
		n1.tr.Stop() // idempotent
		// Stop alone ends the calls the transports serve, even the one
		// blocked in Process.
		if leaks := waitNoLeaks(10*time.Second, false); leaks != "" {
			t.Fatalf("goroutines left after Stop:\n%s", leaks)
		}
		for _, n := range []*node{n1, n2, n3} {
			n.stopServer()
		}
		if r := n1.raft.nextSnapReport(t); r.status != raft.SnapshotFailure && r.status != raft.SnapshotFinish {
			t.Fatalf("reported %+v", r)
		}
	}()
	if leaks := waitNoLeaks(10*time.Second, true); leaks != "" {
		t.Fatalf("leaked goroutines:\n%s", leaks)
	}
}

type discardRaft struct{}

func (discardRaft) Process(context.Context, *raftpb.Message) error { return nil }
func (discardRaft) ReportUnreachable(uint64)                       {}
func (discardRaft) ReportSnapshot(uint64, raft.SnapshotStatus)     {}

// FuzzDecodePeerMessage feeds arbitrary bytes to the receive path: they
// must never panic, whatever they decode to.
func FuzzDecodePeerMessage(f *testing.F) {
	var batch []byte
	for _, m := range []*raftpb.Message{msgApp(1, 2, 1, []byte("x")), msgSnap(1, 2, 3), msgApp(1, 2, 2, nil)} {
		batch, _ = appendFrame(batch, m)
	}
	f.Add(batch)
	single, _ := proto.Marshal(msgApp(1, 2, 9, []byte("entry")))
	f.Add(single)
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	tr := New(zap.NewNop(), Config{LocalID: 2, ClusterID: testCluster, Raft: discardRaft{}})
	f.Cleanup(tr.Stop)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = tr.deliver(ctx, 1, b)
		m := &raftpb.Message{}
		if proto.Unmarshal(b, m) == nil {
			if m.GetType() == raftpb.MessageType_MsgSnap {
				_ = snapshotHeader(m)
			}
			_, _ = appendFrame(nil, m)
		}
	})
}

// With Config.LocalAddr set (etcd's SetMemberLocalAddr gate), peer
// connections come from that address, loopback included.
func TestLocalAddr(t *testing.T) {
	var mu sync.Mutex
	var sources []string
	record := func(_ *Config, sopts *[]grpc.ServerOption) {
		*sopts = append(*sopts, grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if p, ok := grpcpeer.FromContext(ss.Context()); ok {
				mu.Lock()
				sources = append(sources, p.Addr.String())
				mu.Unlock()
			}
			return h(srv, ss)
		}))
	}
	n1 := startNode(t, 1, func(c *Config, _ *[]grpc.ServerOption) { c.LocalAddr = "127.0.0.7" })
	n2 := startNode(t, 2, record)
	connect(t, n1, n2)
	n1.tr.Send([]*raftpb.Message{msgApp(1, 2, 1, nil)})
	if m := n2.raft.next(t); m.GetFrom() != 1 {
		t.Fatalf("got %v", m)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sources) == 0 {
		t.Fatal("no call recorded")
	}
	for _, s := range sources {
		host, _, err := net.SplitHostPort(s)
		if err != nil || host != "127.0.0.7" {
			t.Errorf("call from %s, want host 127.0.0.7", s)
		}
	}
}
