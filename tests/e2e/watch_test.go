package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
)

// Expected outputs here are what etcdctl and clientv3 v3.7.3 get from etcd
// v3.7.3 (checked with E2E_SERVER_BINARY=etcd).

// bgCtl is an etcdctl process that keeps running (watch), read line by line.
type bgCtl struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *bytes.Buffer
	done   chan struct{}
}

func (s *server) etcdctlBackground(t testing.TB, args ...string) *bgCtl {
	t.Helper()
	full := append([]string{"--endpoints=" + s.endpoint}, args...)
	cmd := exec.Command(binaries.etcdctl, full...)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	b := &bgCtl{cmd: cmd, stdin: stdin, lines: make(chan string, 1024), stderr: &bytes.Buffer{}, done: make(chan struct{})}
	cmd.Stderr = b.stderr
	require.NoError(t, cmd.Start())
	go func() {
		defer close(b.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			b.lines <- sc.Text()
		}
	}()
	go func() { _ = cmd.Wait(); close(b.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-b.done
	})
	return b
}

// read returns the next n lines, failing the test if they do not come.
func (b *bgCtl) read(t testing.TB, n int) []string {
	t.Helper()
	var out []string
	timeout := time.NewTimer(opTimeout)
	defer timeout.Stop()
	for len(out) < n {
		select {
		case l, ok := <-b.lines:
			if !ok {
				t.Fatalf("etcdctl exited after %d of %d lines %q; stderr:\n%s", len(out), n, out, b.stderr.String())
			}
			out = append(out, l)
		case <-timeout.C:
			t.Fatalf("etcdctl printed %d of %d lines in %v: %q", len(out), n, opTimeout, out)
		}
	}
	return out
}

func TestEtcdctlWatch(t *testing.T) {
	s := startServer(t)
	cli := s.client()
	mustPut(t, cli, "foo/a", "1", 2)
	mustPut(t, cli, "foo/b", "2", 3)
	_, err := cli.Delete(testCtx(t), "foo/a")
	require.NoError(t, err)
	mustPut(t, cli, "other", "x", 5)

	t.Run("prefix from a revision with prev-kv", func(t *testing.T) {
		w := s.etcdctlBackground(t, "watch", "--prefix", "foo", "--rev=2", "--prev-kv")
		// Compat: a delete with --prev-kv prints the previous key and value,
		// then the deleted key with an empty value.
		require.Equal(t, []string{"PUT", "foo/a", "1", "PUT", "foo/b", "2", "DELETE", "foo/a", "1", "foo/a", ""}, w.read(t, 11))
		mustPut(t, cli, "foo/c", "3", 6)
		require.Equal(t, []string{"PUT", "foo/c", "3"}, w.read(t, 3))
	})
	t.Run("single key, live", func(t *testing.T) {
		// Starting at the next revision makes the watch live from the
		// first byte: no put can slip in before it is created.
		next := currentRev(t, cli) + 1
		w := s.etcdctlBackground(t, "watch", "foo/b", fmt.Sprintf("--rev=%d", next))
		mustPut(t, cli, "foo/b", "live", next)
		require.Equal(t, []string{"PUT", "foo/b", "live"}, w.read(t, 3))
	})
	t.Run("json", func(t *testing.T) {
		w := s.etcdctlBackground(t, "watch", "foo/b", "--rev=3", "-w", "json")
		line := w.read(t, 1)[0]
		require.Contains(t, line, `"Events":[{"kv":{"key":"Zm9vL2I=","create_revision":3,"mod_revision":3,"version":1,"value":"Mg=="}}`)
		require.Contains(t, line, `"CompactRevision":0,"Canceled":false,"Created":false,"CancelReason":""}`)
	})
	t.Run("interactive", func(t *testing.T) {
		w := s.etcdctlBackground(t, "watch", "-i")
		_, err := io.WriteString(w.stdin, "watch foo/a --rev=2\n")
		require.NoError(t, err)
		require.Equal(t, []string{"PUT", "foo/a", "1", "DELETE", "foo/a", ""}, w.read(t, 6))
	})
	t.Run("compacted", func(t *testing.T) {
		_, err := cli.Compact(testCtx(t), 4)
		require.NoError(t, err)
		r := s.etcdctl(t, "", "watch", "foo/b", "--rev=2")
		require.Empty(t, r.stdout)
		require.Equal(t, "watch was canceled (etcdserver: mvcc: required revision has been compacted)\nError: watch is canceled by the server\n", r.stderr)
		require.NotZero(t, r.code)
	})
}

// TestWatchSemantics checks clientv3 watch behaviour field by field.
func TestWatchSemantics(t *testing.T) {
	s := startServer(t)
	cli := s.client()
	ctx := testCtx(t)
	for i := range 5 {
		mustPut(t, cli, "k", fmt.Sprint(i), int64(i+2)) // revisions 2..6
	}
	_, err := cli.Delete(ctx, "k") // 7
	require.NoError(t, err)
	mustPut(t, cli, "k2", "v", 8)

	t.Run("history with prev kv and filters", func(t *testing.T) {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		wc := cli.Watch(wctx, "k", clientv3.WithRev(5), clientv3.WithPrevKV())
		resp := <-wc
		require.NoError(t, resp.Err())
		require.Equal(t, []string{"PUT k 3 prev 2", "PUT k 4 prev 3", "DELETE k  prev 4"}, eventStrings(resp.Events))
		require.EqualValues(t, 8, resp.Header.Revision)

		noput := cli.Watch(wctx, "k", clientv3.WithRev(2), clientv3.WithFilterPut())
		resp = <-noput
		require.NoError(t, resp.Err())
		require.Equal(t, []string{"DELETE k "}, eventStrings(resp.Events))
	})
	t.Run("prefix and from-key", func(t *testing.T) {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		resp := <-cli.Watch(wctx, "k", clientv3.WithPrefix(), clientv3.WithRev(7))
		require.Equal(t, []string{"DELETE k ", "PUT k2 v"}, eventStrings(resp.Events))
		resp = <-cli.Watch(wctx, "k1", clientv3.WithFromKey(), clientv3.WithRev(2))
		require.Equal(t, []string{"PUT k2 v"}, eventStrings(resp.Events))
	})
	t.Run("progress", func(t *testing.T) {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		wc := cli.Watch(wctx, "quiet", clientv3.WithCreatedNotify())
		resp := <-wc
		require.True(t, resp.Created)
		require.NoError(t, cli.RequestProgress(wctx))
		resp = <-wc
		require.True(t, resp.IsProgressNotify(), "%+v", resp)
		require.EqualValues(t, 8, resp.Header.Revision)
	})
	t.Run("compacted start", func(t *testing.T) {
		_, err := cli.Compact(ctx, 4)
		require.NoError(t, err)
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		resp := <-cli.Watch(wctx, "k", clientv3.WithRev(3))
		require.ErrorIs(t, resp.Err(), rpctypes.ErrCompacted)
		require.EqualValues(t, 4, resp.CompactRevision)
		// At the compacted revision itself the history is still there.
		resp = <-cli.Watch(wctx, "k", clientv3.WithRev(4))
		require.NoError(t, resp.Err())
		require.Equal(t, []string{"PUT k 2", "PUT k 3", "PUT k 4", "DELETE k "}, eventStrings(resp.Events))
	})
	t.Run("fragment", func(t *testing.T) {
		// With previous values, one revision's events exceed the 1.5 MiB
		// response limit though the request that made them does not.
		big := strings.Repeat("x", 700<<10)
		for _, k := range []string{"f/1", "f/2"} {
			_, err := cli.Put(ctx, k, big)
			require.NoError(t, err)
		}
		txn := cli.Txn(ctx).Then(clientv3.OpPut("f/1", big), clientv3.OpPut("f/2", big))
		tr, err := txn.Commit()
		require.NoError(t, err)
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		resp := <-cli.Watch(wctx, "f/", clientv3.WithPrefix(), clientv3.WithRev(tr.Header.Revision), clientv3.WithFragment(), clientv3.WithPrevKV())
		require.NoError(t, resp.Err())
		// clientv3 joins the fragments: both events of the revision arrive together.
		require.Len(t, resp.Events, 2)
	})
}

// TestWatchResumeAfterRestart restarts the server under a watch: clientv3
// resumes from the last revision it saw, with no gap and no duplicate.
func TestWatchResumeAfterRestart(t *testing.T) {
	s := startServer(t)
	cli := s.client()
	ctx := testCtx(t)
	wc := cli.Watch(ctx, "r/", clientv3.WithPrefix(), clientv3.WithRev(1))
	var got []int64
	var mu sync.Mutex
	done := make(chan struct{})
	want := 40
	go func() {
		defer close(done)
		for resp := range wc {
			mu.Lock()
			for _, ev := range resp.Events {
				got = append(got, ev.Kv.ModRevision)
			}
			n := len(got)
			mu.Unlock()
			if n >= want {
				return
			}
		}
	}()
	var revs []int64
	put := func(i int) {
		for {
			resp, err := cli.Put(ctx, fmt.Sprintf("r/%03d", i), "v")
			if err == nil {
				revs = append(revs, resp.Header.Revision)
				return
			}
			require.NoError(t, ctx.Err(), "put r/%03d: %v", i, err)
			waitPoll(time.Now().Add(time.Second)) // pace retries while the server restarts
		}
	}
	for i := range want / 2 {
		put(i)
	}
	s.stop()
	s.start()
	for i := want / 2; i < want; i++ {
		put(i)
	}
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("watch did not deliver every event after the restart")
	}
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, revs, got)
}

func eventStrings(evs []*clientv3.Event) []string {
	var out []string
	for _, ev := range evs {
		s := fmt.Sprintf("%s %s %s", ev.Type, ev.Kv.Key, ev.Kv.Value)
		if ev.PrevKv != nil {
			s += " prev " + string(ev.PrevKv.Value)
		}
		out = append(out, s)
	}
	return out
}

// TestClusterWatchLeaderKill keeps a watcher on every member while the
// leader is killed under writes: each surviving watcher gets every write in
// revision order, exactly once.
func TestClusterWatchLeaderKill(t *testing.T) {
	c := startCluster(t, 3)
	cli := clusterClient(t, c.members)
	leader, _ := waitLeader(t, cli, c.members)
	ctx, cancel := context.WithTimeout(context.Background(), 2*opTimeout)
	defer cancel()

	type stream struct {
		name string
		mu   sync.Mutex
		revs []int64
		err  error
	}
	var streams []*stream
	var wg sync.WaitGroup
	for _, m := range c.members {
		// Every watcher's client knows all endpoints, so the one on the
		// killed member moves to another and resumes.
		wcli, err := clientv3.New(clientv3.Config{Endpoints: append([]string{m.endpoint}, endpointsOf(c.members)...), DialTimeout: 5 * time.Second})
		require.NoError(t, err)
		t.Cleanup(func() { wcli.Close() })
		st := &stream{name: m.name}
		streams = append(streams, st)
		wc := wcli.Watch(clientv3.WithRequireLeader(ctx), "w/", clientv3.WithPrefix(), clientv3.WithRev(1))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for resp := range wc {
				if err := resp.Err(); err != nil {
					st.mu.Lock()
					st.err = err
					st.mu.Unlock()
					return
				}
				st.mu.Lock()
				for _, ev := range resp.Events {
					if ev.Type != mvccpb.PUT {
						st.err = fmt.Errorf("unexpected %v", ev)
					}
					st.revs = append(st.revs, ev.Kv.ModRevision)
				}
				st.mu.Unlock()
			}
		}()
	}

	var acked []int64
	put := func(i int) {
		for ctx.Err() == nil {
			pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
			resp, err := cli.Put(pctx, fmt.Sprintf("w/%04d", i), "v")
			pcancel()
			if err == nil {
				acked = append(acked, resp.Header.Revision)
				return
			}
		}
		t.Fatalf("put w/%04d never succeeded", i)
	}
	for i := range 100 {
		put(i)
	}
	leader.kill()
	for i := 100; i < 200; i++ {
		put(i)
	}
	// Every watcher must reach the last acknowledged revision.
	last := acked[len(acked)-1]
	deadline := time.Now().Add(opTimeout)
	for _, st := range streams {
		for {
			st.mu.Lock()
			n, err := len(st.revs), st.err
			reached := n > 0 && st.revs[n-1] >= last
			st.mu.Unlock()
			require.NoError(t, err, "watcher on %s", st.name)
			if reached {
				break
			}
			if !waitPoll(deadline) || ctx.Err() != nil {
				t.Fatalf("watcher on %s stopped at %d events, want revision %d", st.name, n, last)
			}
		}
	}
	cancel()
	wg.Wait()
	for _, st := range streams {
		// A put whose ack was lost may have been applied too; every acked
		// revision must be there, in order, once.
		require.True(t, isStrictlyIncreasing(st.revs), "watcher on %s: revisions not strictly increasing: %v", st.name, st.revs)
		require.Subset(t, st.revs, acked, "watcher on %s missed acknowledged writes", st.name)
		if st.err != nil && !errors.Is(st.err, context.Canceled) {
			t.Errorf("watcher on %s: %v", st.name, st.err)
		}
	}
}

func isStrictlyIncreasing(revs []int64) bool {
	for i := 1; i < len(revs); i++ {
		if revs[i] <= revs[i-1] {
			return false
		}
	}
	return true
}

// rawWatch opens a Watch stream on a plain gRPC connection, so the test
// controls every request and sees every response field.
func rawWatch(t *testing.T, s *server) (pb.Watch_WatchClient, *grpc.ClientConn) {
	t.Helper()
	conn, err := grpc.NewClient(s.endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32)))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	st, err := pb.NewWatchClient(conn).Watch(testCtx(t))
	require.NoError(t, err)
	return st, conn
}

func createReq(c *pb.WatchCreateRequest) *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: c}}
}

// TestWatchBadRequests: etcd's exact responses to bad watch requests, and a
// malformed stream message ends only its own stream.
func TestWatchBadRequests(t *testing.T) {
	s := startServer(t)
	cli := s.client()
	mustPut(t, cli, "a", "1", 2)
	st, conn := rawWatch(t, s)
	recv := func() *pb.WatchResponse {
		t.Helper()
		resp, err := st.Recv()
		require.NoError(t, err)
		return resp
	}
	refused := func(reason string) {
		t.Helper()
		resp := recv()
		require.EqualValues(t, -1, resp.WatchId)
		require.True(t, resp.Created)
		require.True(t, resp.Canceled)
		require.Equal(t, reason, resp.CancelReason)
		require.EqualValues(t, 2, resp.Header.Revision)
	}
	require.NoError(t, st.Send(createReq(&pb.WatchCreateRequest{Key: []byte("a"), StartRevision: -1})))
	refused("etcdserver: mvcc: required revision has been compacted")
	require.NoError(t, st.Send(createReq(&pb.WatchCreateRequest{Key: []byte("b"), RangeEnd: []byte("a")})))
	refused("mvcc: watcher range is empty")
	require.NoError(t, st.Send(createReq(&pb.WatchCreateRequest{Key: []byte("a"), WatchId: 7})))
	resp := recv()
	require.EqualValues(t, 7, resp.WatchId)
	require.True(t, resp.Created)
	require.False(t, resp.Canceled)
	require.NoError(t, st.Send(createReq(&pb.WatchCreateRequest{Key: []byte("a"), WatchId: 7})))
	refused("mvcc: duplicate watch ID provided on the WatchStream")
	// Auto IDs start at 0; an empty request and a cancel of an unknown ID
	// get no answer.
	require.NoError(t, st.Send(&pb.WatchRequest{}))
	require.NoError(t, st.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: 99}}}))
	require.NoError(t, st.Send(createReq(&pb.WatchCreateRequest{Key: []byte("a")})))
	resp = recv()
	require.EqualValues(t, 0, resp.WatchId)
	require.True(t, resp.Created)
	require.NoError(t, st.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: 7}}}))
	resp = recv()
	require.EqualValues(t, 7, resp.WatchId)
	require.True(t, resp.Canceled)
	require.Empty(t, resp.CancelReason)

	// A message that is not a WatchRequest: that stream fails, another
	// stream on the same connection keeps working.
	other, err := pb.NewWatchClient(conn).Watch(testCtx(t))
	require.NoError(t, err)
	require.NoError(t, other.Send(createReq(&pb.WatchCreateRequest{Key: []byte("a")})))
	resp, err = other.Recv()
	require.NoError(t, err)
	require.True(t, resp.Created)
	bad, err := conn.NewStream(testCtx(t), &pb.Watch_ServiceDesc.Streams[0], "/etcdserverpb.Watch/Watch", grpc.ForceCodecV2(garbageCodec{}))
	require.NoError(t, err)
	require.NoError(t, bad.SendMsg([]byte{0xff, 0xff, 0xff}))
	err = bad.RecvMsg(new([]byte))
	require.Error(t, err)
	require.NotErrorIs(t, err, io.EOF)
	mustPut(t, cli, "a", "2", 3)
	resp, err = other.Recv()
	require.NoError(t, err)
	require.Len(t, resp.Events, 1)
	require.EqualValues(t, 3, resp.Events[0].Kv.ModRevision)
}

// garbageCodec sends raw bytes as a message.
type garbageCodec struct{}

func (garbageCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (garbageCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*(v.(*[]byte)) = data.Materialize()
	return nil
}
func (garbageCodec) Name() string { return "proto" }

// TestWatchSlowReader: a client that stops reading its watch stream blocks
// neither writes nor another client's watcher, and the server does not
// buffer the stalled stream's events without bound.
func TestWatchSlowReader(t *testing.T) {
	s := startServer(t)
	cli := s.client()
	stalled, _ := rawWatch(t, s)
	require.NoError(t, stalled.Send(createReq(&pb.WatchCreateRequest{Key: []byte("s/"), RangeEnd: []byte("s0"), PrevKv: true})))
	resp, err := stalled.Recv()
	require.NoError(t, err)
	require.True(t, resp.Created)
	// From here on nobody reads the stalled stream.

	ctx := testCtx(t)
	live := cli.Watch(ctx, "s/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	require.True(t, (<-live).Created)
	const n = 2000
	val := strings.Repeat("v", 4<<10) // 2000 x 4 KiB x 2 (prev kv): far beyond the stream's flow-control window
	var revs []int64
	for i := range n {
		r, err := cli.Put(ctx, fmt.Sprintf("s/%04d", i%100), val)
		require.NoError(t, err)
		revs = append(revs, r.Header.Revision)
	}
	var got []int64
	for len(got) < n {
		select {
		case resp := <-live:
			require.NoError(t, resp.Err())
			for _, ev := range resp.Events {
				got = append(got, ev.Kv.ModRevision)
			}
		case <-ctx.Done():
			t.Fatalf("live watcher got %d of %d events", len(got), n)
		}
	}
	require.Equal(t, revs, got)
	if isCairn() {
		// The stalled watcher was moved to catch-up rather than buffered.
		require.GreaterOrEqual(t, metricValue(t, s, "etcd_debugging_mvcc_slow_watcher_total"), 1.0)
	}

	// The stalled stream, once read, still gets everything in order.
	var stalledGot []int64
	for len(stalledGot) < n {
		resp, err := stalled.Recv()
		require.NoError(t, err)
		for _, ev := range resp.Events {
			stalledGot = append(stalledGot, ev.Kv.ModRevision)
		}
	}
	require.Equal(t, revs, stalledGot)
}

// metricValue reads an unlabelled metric from the server's /metrics.
func metricValue(t *testing.T, s *server, name string) float64 {
	t.Helper()
	resp, err := http.Get(s.clientURL() + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err)
			return f
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

// TestWatchHTTPGateway: POST /v3/watch streams JSON results, as etcd's
// grpc-gateway does.
func TestWatchHTTPGateway(t *testing.T) {
	s := startServer(t)
	cli := s.client()
	mustPut(t, cli, "foo", "bar", 2)
	req, err := http.NewRequestWithContext(testCtx(t), http.MethodPost, s.clientURL()+"/v3/watch",
		strings.NewReader(`{"create_request": {"key":"Zm9v","start_revision":"2"}}`))
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	sc := bufio.NewScanner(resp.Body)
	var lines []string
	for len(lines) < 2 && sc.Scan() {
		lines = append(lines, sc.Text())
	}
	require.Len(t, lines, 2, "scan: %v", sc.Err())
	require.Contains(t, lines[0], `"created":true`)
	require.Contains(t, lines[1], `"events":[{"kv":{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}}]`)
}
