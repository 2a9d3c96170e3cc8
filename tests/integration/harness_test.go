// Package integration runs whole Cairn clusters inside one test process:
// N members (member.Member, the production code path from the data
// directory up to the applier) joined by an in-memory network (fakeNet)
// with injectable faults, and driven by a manual raft clock.
//
// Determinism rules:
//   - Raft time only moves when a test advances it (cluster.tick*); every
//     wait is a bounded loop "advance one tick, check a condition", or a
//     channel receive, never a bare sleep.
//   - Between two ticks the harness lets the network drain (settle), so a
//     heartbeat sent at tick k is in the receiver's inbox before tick k+1;
//     this stands in for a network much faster than the heartbeat interval,
//     as on a real LAN.
//   - Fault decisions (probabilistic drops, duplicates, reorders) come from a
//     seeded generator (the seed is logged; set CAIRN_IT_SEED to replay the
//     same fault choices).
//
// A few member code paths use real time on top of raft ticks (the read-index
// retry timer, publish's retry, MoveLeader's poll, the request timeout); the
// harness sets HeartbeatInterval to 10ms, so those are short, and keeps
// ElectionTimeout/HeartbeatInterval at etcd's ratio of 10 ticks.
//
// Logs: every member logs into one buffer per test, printed if the test
// fails (CAIRN_IT_LOG=debug|info|warn sets the level; default info).
package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/cairnkv/cairn/internal/apply"
	"github.com/cairnkv/cairn/internal/clock"
	"github.com/cairnkv/cairn/internal/config"
	"github.com/cairnkv/cairn/internal/member"
	"github.com/cairnkv/cairn/internal/mvcc"
)

const (
	heartbeat = 10 * time.Millisecond
	// electionTicks is ElectionTimeout/HeartbeatInterval, etcd's default
	// ratio (100ms/1000ms). raft randomizes each follower's timeout in
	// [electionTicks, 2*electionTicks).
	electionTicks = 10
	// stuckTimeout bounds how long a member's raft loop may take to accept
	// one tick before the harness declares it wedged.
	stuckTimeout = 30 * time.Second
	// settleMax bounds how long one tick waits for the network to drain.
	settleMax = 20 * time.Millisecond
)

// testSeed is the fault-injection seed (CAIRN_IT_SEED, else the time).
func testSeed(t testing.TB) uint64 {
	if s := os.Getenv("CAIRN_IT_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CAIRN_IT_SEED: %v", err)
		}
		return v
	}
	return uint64(time.Now().UnixNano())
}

// logBuffer collects the members' logs of one test.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	const max = 8 << 20 // keep the tail only
	if b.buf.Len() > max {
		tail := append([]byte(nil), b.buf.Bytes()[b.buf.Len()-max/2:]...)
		b.buf.Reset()
		b.buf.WriteString("...(earlier logs cut)...\n")
		b.buf.Write(tail)
	}
	return b.buf.Write(p)
}

func (b *logBuffer) Sync() error { return nil }

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// cluster is an in-process Cairn cluster.
type cluster struct {
	t     *testing.T
	net   *fakeNet
	dir   string
	token string
	logs  *logBuffer
	lg    *zap.Logger
	seed  uint64
	// adjust is applied to every member's config.
	adjust func(*config.Server)

	mu    sync.Mutex
	nodes []*node // all slots ever created, in creation order

	// strict fails on errors of known bugs (see knownBugs).
	strict bool

	// tickHook, if set, runs before every tick round (fault schedules).
	tickHook atomic.Pointer[func()]

	// leaseOpts is passed to every member.
	leaseOpts member.LeaseOptions
}

// setTickHook runs fn before every tick round (nil: none).
func (c *cluster) setTickHook(fn func()) {
	if fn == nil {
		c.tickHook.Store(nil)
		return
	}
	c.tickHook.Store(&fn)
}

// node is one member slot: a name, a data directory and a peer URL that
// outlive restarts of the member in it.
type node struct {
	c    *cluster
	name string
	cfg  config.Server
	// peerHTTP serves member.PeerHTTP() of the current member at the
	// node's peer URL, so that a member joining with
	// --initial-cluster-state=existing can fetch the member list (the
	// raft messages themselves travel over fakeNet, by member ID).
	peerHTTP *httptest.Server
	handler  atomic.Pointer[http.Handler]
	// clk is the member's lease clock: it advances one heartbeat per
	// tick, and survives restarts of the member in this slot.
	clk *clock.Manual

	mu      sync.Mutex
	m       *member.Member
	id      uint64
	ticks   chan time.Time
	cancel  context.CancelFunc
	done    chan struct{} // closed when Run returned
	runErr  error
	running bool
}

type clusterOption func(*cluster)

// withConfig adjusts every member's configuration.
func withConfig(fn func(*config.Server)) clusterOption {
	return func(c *cluster) { c.adjust = fn }
}

// newCluster starts an n-member cluster and waits until it has a leader
// and every member has published itself (member.Ready).
func newCluster(t *testing.T, n int, opts ...clusterOption) *cluster {
	t.Helper()
	c := &cluster{t: t, dir: t.TempDir(), token: "it-" + t.Name(), logs: &logBuffer{}}
	for _, o := range opts {
		o(c)
	}
	c.seed = testSeed(t)
	t.Logf("fault seed %d (CAIRN_IT_SEED=%d replays it)", c.seed, c.seed)
	c.net = newFakeNet(c.seed)
	level := zapcore.InfoLevel
	if s := os.Getenv("CAIRN_IT_LOG"); s != "" {
		if err := level.Set(s); err != nil {
			t.Fatalf("CAIRN_IT_LOG: %v", err)
		}
	}
	enc := zap.NewDevelopmentEncoderConfig()
	c.lg = zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(enc), c.logs, level))
	// Registered after t.TempDir, so it runs before the directory is
	// removed: every member is stopped and its DB closed first.
	t.Cleanup(c.close)

	slots := make([]*node, n)
	for i := range slots {
		slots[i] = c.newNode(fmt.Sprintf("m%d", i+1))
	}
	initial := c.initialCluster(slots...)
	for _, nd := range slots {
		nd.cfg.InitialCluster = initial
		nd.start()
	}
	if err := c.waitForErr(maxElectionTicks, func() bool { return c.leaderOf(c.running()...) != nil }); err != nil {
		t.Fatalf("leader election: %v\n%s", err, c.status())
	}
	c.waitReady(slots...)
	return c
}

// newNode creates a member slot (not started): a data dir, a peer URL.
func (c *cluster) newNode(name string) *node {
	c.t.Helper()
	nd := &node{c: c, name: name, clk: clock.NewManual(time.Unix(1_700_000_000, 0))}
	nd.peerHTTP = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := nd.handler.Load(); h != nil {
			(*h).ServeHTTP(w, r)
			return
		}
		http.Error(w, "member not running", http.StatusServiceUnavailable)
	}))
	cfg := config.Defaults()
	cfg.Name = name
	cfg.DataDir = filepath.Join(c.dir, name)
	cfg.ListenClientURLs = []string{"http://127.0.0.1:0"} // unused: no client server
	cfg.AdvertiseClientURLs = []string{"http://" + name + ":2379"}
	cfg.ListenPeerURLs = []string{nd.peerHTTP.URL}
	cfg.InitialAdvertisePeerURLs = []string{nd.peerHTTP.URL}
	cfg.InitialClusterState = "new"
	cfg.InitialClusterToken = c.token
	cfg.HeartbeatInterval = heartbeat
	cfg.ElectionTimeout = electionTicks * heartbeat
	cfg.LogLevel = "debug"
	if c.adjust != nil {
		c.adjust(&cfg)
	}
	nd.cfg = cfg
	c.mu.Lock()
	c.nodes = append(c.nodes, nd)
	c.mu.Unlock()
	return nd
}

func (c *cluster) initialCluster(nodes ...*node) string {
	var parts []string
	for _, nd := range nodes {
		parts = append(parts, nd.name+"="+nd.cfg.InitialAdvertisePeerURLs[0])
	}
	return strings.Join(parts, ",")
}

// start opens the member on the node's data dir and runs it.
func (nd *node) start() {
	t := nd.c.t
	t.Helper()
	if err := nd.tryStart(); err != nil {
		t.Fatalf("start %s: %v", nd.name, err)
	}
}

func (nd *node) tryStart() error {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.running {
		return fmt.Errorf("%s is already running", nd.name)
	}
	if err := nd.cfg.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	ticks := make(chan time.Time)
	m, err := member.NewWithOptions(nd.c.lg.Named(nd.name), nd.cfg, member.Options{
		NewTransport: nd.c.net.transportFor,
		Ticks:        ticks,
		Clock:        nd.clk,
		Lease:        nd.c.leaseOpts,
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	nd.m, nd.id, nd.ticks, nd.cancel, nd.done, nd.runErr, nd.running = m, m.ID(), ticks, cancel, done, nil, true
	h := m.PeerHTTP()
	nd.handler.Store(&h)
	go func() {
		defer close(done)
		err := m.Run(ctx)
		nd.mu.Lock()
		nd.runErr = err
		nd.mu.Unlock()
	}()
	return nil
}

// stop stops the member (cancel + wait for Run) and reports Run's error.
func (nd *node) stop() error {
	nd.mu.Lock()
	if !nd.running {
		nd.mu.Unlock()
		return nil
	}
	cancel, done := nd.cancel, nd.done
	nd.running = false
	nd.mu.Unlock()
	nd.handler.Store(nil)
	cancel()
	select {
	case <-done:
	case <-time.After(stuckTimeout):
		return fmt.Errorf("%s: Run did not return %v after cancel", nd.name, stuckTimeout)
	}
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.runErr
}

// mustStop stops the member and fails the test if Run failed (except
// for a known bug the test tolerates, see knownBugs).
func (nd *node) mustStop() {
	nd.c.t.Helper()
	if err := nd.c.checkStopErr(nd, nd.stop()); err != nil {
		nd.c.t.Fatalf("stop %s: %v", nd.name, err)
	}
}

// knownBugs are errors from member.Run caused by bugs reported to the
// owners of the code, tolerated (logged) by every test except the one that
// pins the bug (which is skipped unless CAIRN_IT_KNOWN_BUGS=1).
var knownBugs = []struct{ name, match string }{
	// None open. Add {name, error text} here, with the test that pins it.
}

// strict makes the cluster fail on known bugs too (pinning tests).
func (c *cluster) checkStopErr(nd *node, err error) error {
	if err == nil || c.strict {
		return err
	}
	for _, b := range knownBugs {
		if strings.Contains(err.Error(), b.match) {
			c.t.Logf("stop %s: tolerating known bug %s: %v", nd.name, b.name, err)
			return nil
		}
	}
	return err
}

// restart stops the member and opens a new one on the same data dir.
func (nd *node) restart() {
	nd.c.t.Helper()
	nd.mustStop()
	nd.start()
}

func (nd *node) member() *member.Member {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.m
}

func (nd *node) isRunning() bool {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.running
}

// ID is the member ID (stable across restarts).
func (nd *node) ID() uint64 {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.id
}

// tick advances the member's raft clock by one tick; it waits until the
// raft loop took it (a stopped member takes none).
func (nd *node) tick() {
	nd.mu.Lock()
	ticks, done, running, m := nd.ticks, nd.done, nd.running, nd.m
	nd.mu.Unlock()
	if !running {
		return
	}
	nd.clk.Advance(heartbeat)
	select {
	case ticks <- time.Time{}:
	case <-done:
	case <-m.Removed():
		// A removed member stops its raft loop at once but Run returns
		// only once the harness stops it (member.Run's contract).
	case <-time.After(stuckTimeout):
		nd.c.t.Errorf("%s: the raft loop took no tick for %v (wedged?)", nd.name, stuckTimeout)
	}
}

// running returns the running nodes.
func (c *cluster) running() []*node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*node
	for _, nd := range c.nodes {
		if nd.isRunning() {
			out = append(out, nd)
		}
	}
	return out
}

// all returns every node slot.
func (c *cluster) all() []*node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.nodes)
}

func (c *cluster) byID(id uint64) *node {
	for _, nd := range c.all() {
		if nd.ID() == id {
			return nd
		}
	}
	return nil
}

func ids(nodes ...*node) []uint64 {
	out := make([]uint64, len(nodes))
	for i, nd := range nodes {
		out[i] = nd.ID()
	}
	return out
}

// tickOnly advances the clock of the given nodes by one tick, then lets
// the network drain.
func (c *cluster) tickOnly(nodes ...*node) {
	if fn := c.tickHook.Load(); fn != nil {
		(*fn)()
	}
	for _, nd := range nodes {
		nd.tick()
	}
	c.settle()
}

// tick advances every running member's clock by one tick.
func (c *cluster) tick() { c.tickOnly(c.running()...) }

// settle waits (bounded) until no message is queued in the network. It
// paces the clock: it is not a synchronisation point any test relies on.
func (c *cluster) settle() {
	deadline := time.Now().Add(settleMax)
	for !c.net.idle() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Microsecond)
	}
	// Let the receivers' raft loops step what was just delivered.
	time.Sleep(200 * time.Microsecond)
}

// waitUnticked waits for cond with every clock stopped: for what members
// do on their own (messages sent without a tick need no tick to arrive).
func (c *cluster) waitUnticked(what string, cond func() bool) {
	c.t.Helper()
	for i := 0; !cond(); i++ {
		if i == 5000 {
			c.t.Fatalf("%s: not with the clocks stopped", what)
		}
		c.settle()
	}
}

// waitFor ticks the given nodes (all running ones if none) until cond
// holds, at most maxTicks ticks.
func (c *cluster) waitFor(what string, maxTicks int, cond func() bool, nodes ...*node) {
	c.t.Helper()
	if err := c.waitForErr(maxTicks, cond, nodes...); err != nil {
		c.t.Fatalf("%s: %v", what, err)
	}
}

func (c *cluster) waitForErr(maxTicks int, cond func() bool, nodes ...*node) error {
	for i := 0; ; i++ {
		if cond() {
			return nil
		}
		if i == maxTicks {
			return fmt.Errorf("not within %d ticks", maxTicks)
		}
		if c.t.Failed() {
			return errors.New("test already failed")
		}
		if len(nodes) == 0 {
			c.tick()
		} else {
			c.tickOnly(nodes...)
		}
	}
}

// leaderOf returns the leader all the given running nodes agree on, or nil.
func (c *cluster) leaderOf(nodes ...*node) *node {
	var lead uint64
	for _, nd := range nodes {
		if !nd.isRunning() {
			continue
		}
		l := nd.member().Status().Leader
		if l == 0 || (lead != 0 && l != lead) {
			return nil
		}
		lead = l
	}
	ld := c.byID(lead)
	if ld == nil || !ld.isRunning() || !slices.Contains(nodes, ld) {
		return nil
	}
	return ld
}

// maxElectionTicks bounds an election: raft's randomized timeout is below
// 2*electionTicks; PreVote adds a round trip, and a split vote may need a
// few more rounds.
const maxElectionTicks = 10 * electionTicks

// waitLeader ticks until every running member agrees on one leader.
func (c *cluster) waitLeader() *node {
	c.t.Helper()
	return c.waitLeaderAmong(c.running()...)
}

// waitLeaderAmong ticks only the given nodes until they agree on a leader
// among themselves.
func (c *cluster) waitLeaderAmong(nodes ...*node) *node {
	c.t.Helper()
	var ld *node
	c.waitFor("leader election", maxElectionTicks, func() bool {
		ld = c.leaderOf(nodes...)
		return ld != nil
	}, nodes...)
	return ld
}

// waitReady ticks until the nodes have published themselves.
func (c *cluster) waitReady(nodes ...*node) {
	c.t.Helper()
	c.waitFor("members ready", 1000, func() bool {
		for _, nd := range nodes {
			select {
			case <-nd.member().Ready():
			default:
				return false
			}
		}
		return true
	})
}

// drive runs fn on its own goroutine and ticks the given nodes (all
// running ones if none) until it returns, at most maxTicks ticks.
func drive[T any](c *cluster, maxTicks int, fn func() (T, error), nodes ...*node) (T, error) {
	c.t.Helper()
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := fn()
		ch <- result{v, err}
	}()
	var r result
	err := c.waitForErr(maxTicks, func() bool {
		select {
		case r = <-ch:
			return true
		default:
			return false
		}
	}, nodes...)
	if err != nil {
		c.t.Fatalf("operation did not return: %v", err)
	}
	return r.v, r.err
}

// opTicks bounds one request in a healthy cluster.
const opTicks = 3000

// put proposes a Put through nd and returns the revision it got. It
// ticks the given nodes (all running ones if none) while it waits.
func (c *cluster) put(nd *node, key, val string, tickNodes ...*node) (int64, error) {
	c.t.Helper()
	res, err := drive(c, opTicks, func() (apply.Result, error) {
		return nd.member().Propose(context.Background(), &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte(key), Value: []byte(val)}})
	}, tickNodes...)
	if err != nil {
		return 0, err
	}
	if res.Err != nil {
		return 0, res.Err
	}
	return res.Resp.(*pb.PutResponse).Header.Revision, nil
}

func (c *cluster) mustPut(nd *node, key, val string) int64 {
	c.t.Helper()
	rev, err := c.put(nd, key, val)
	if err != nil {
		c.t.Fatalf("put %s=%s on %s: %v", key, val, nd.name, err)
	}
	return rev
}

// putMany writes count keys prefix%05d through nd with parallel proposals
// (raft batches them into few Readys) and ticks while they run.
func (c *cluster) putMany(nd *node, prefix string, count, parallel int) {
	c.t.Helper()
	m := nd.member()
	var next atomic.Int64
	errc := make(chan error, parallel)
	for w := 0; w < parallel; w++ {
		go func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(count) {
					errc <- nil
					return
				}
				key := fmt.Sprintf("%s%05d", prefix, i)
				res, err := m.Propose(context.Background(), &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte(key), Value: []byte("v-" + key)}})
				if err == nil {
					err = res.Err
				}
				if err != nil {
					errc <- fmt.Errorf("put %s: %w", key, err)
					return
				}
			}
		}()
	}
	finished := 0
	err := c.waitForErr(100*count+1000, func() bool {
		for {
			select {
			case err := <-errc:
				if err != nil {
					c.t.Errorf("putMany on %s: %v", nd.name, err)
				}
				finished++
				continue
			default:
			}
			return finished == parallel
		}
	})
	if err != nil {
		c.t.Fatalf("putMany on %s: %v", nd.name, err)
	}
}

// barrier runs LinearizableBarrier on nd, driving the clock.
func (c *cluster) barrier(nd *node) error {
	c.t.Helper()
	_, err := drive(c, opTicks, func() (struct{}, error) {
		return struct{}{}, nd.member().LinearizableBarrier(context.Background())
	})
	return err
}

// get reads key at the head revision from nd's local store.
func get(nd *node, key string) (*mvccpb.KeyValue, bool) {
	rr, err := nd.member().Store().Range([]byte(key), nil, mvcc.RangeOptions{})
	if err != nil || len(rr.KVs) == 0 {
		return nil, false
	}
	return rr.KVs[0], true
}

// dump is every key of nd at the head revision, with the revision.
type dump struct {
	rev int64
	kvs []string
}

func stateOf(nd *node) (dump, error) {
	rr, err := nd.member().Store().Range([]byte{0}, []byte{0}, mvcc.RangeOptions{})
	if err != nil {
		return dump{}, err
	}
	d := dump{rev: rr.Rev}
	for _, kv := range rr.KVs {
		d.kvs = append(d.kvs, fmt.Sprintf("%q=%q c%d m%d v%d l%d", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease))
	}
	return d, nil
}

// waitConverged ticks until every given node (all running ones if none)
// has applied the same index as the others and the leader's commit index,
// then checks that they hold identical state at the head revision.
func (c *cluster) waitConverged(maxTicks int, nodes ...*node) dump {
	c.t.Helper()
	if len(nodes) == 0 {
		nodes = c.running()
	}
	c.waitFor("members converge", maxTicks, func() bool {
		var applied uint64
		for i, nd := range nodes {
			st := nd.member().Status()
			if st.Applied == 0 || st.Applied < st.Committed {
				return false
			}
			if i == 0 {
				applied = st.Applied
			} else if st.Applied != applied {
				return false
			}
		}
		return true
	})
	return c.requireSameState(nodes...)
}

// waitCaughtUp is waitConverged for a cluster under traffic: it waits
// until every node has applied what any of them had committed when the
// wait began, then compares their states at the lowest head revision
// among them (a common prefix of their histories).
func (c *cluster) waitCaughtUp(maxTicks int, nodes ...*node) {
	c.t.Helper()
	if len(nodes) == 0 {
		nodes = c.running()
	}
	var target uint64
	for _, nd := range nodes {
		target = max(target, nd.member().Status().Committed)
	}
	c.waitFor("members catch up", maxTicks, func() bool {
		for _, nd := range nodes {
			if nd.member().Status().Applied < target {
				return false
			}
		}
		return true
	})
	rev := int64(-1)
	for _, nd := range nodes {
		if r := nd.member().Store().Rev(); rev < 0 || r < rev {
			rev = r
		}
	}
	var first []string
	for i, nd := range nodes {
		rr, err := nd.member().Store().Range([]byte{0}, []byte{0}, mvcc.RangeOptions{Rev: rev})
		if err != nil {
			c.t.Fatalf("%s: range at %d: %v", nd.name, rev, err)
		}
		var kvs []string
		for _, kv := range rr.KVs {
			kvs = append(kvs, fmt.Sprintf("%q=%q c%d m%d v%d", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version))
		}
		if i == 0 {
			first = kvs
		} else if !slices.Equal(kvs, first) {
			c.t.Fatalf("state at revision %d differs: %s %v, %s %v", rev, nodes[0].name, trunc(first), nd.name, trunc(kvs))
		}
	}
}

// requireSameState fails unless the nodes hold identical KVs and revision.
func (c *cluster) requireSameState(nodes ...*node) dump {
	c.t.Helper()
	var first dump
	for i, nd := range nodes {
		d, err := stateOf(nd)
		if err != nil {
			c.t.Fatalf("range on %s: %v", nd.name, err)
		}
		if i == 0 {
			first = d
			continue
		}
		if d.rev != first.rev || !slices.Equal(d.kvs, first.kvs) {
			c.t.Fatalf("state differs: %s has rev %d and %d keys, %s has rev %d and %d keys\n%s: %v\n%s: %v",
				nodes[0].name, first.rev, len(first.kvs), nd.name, d.rev, len(d.kvs),
				nodes[0].name, trunc(first.kvs), nd.name, trunc(d.kvs))
		}
	}
	return first
}

func trunc(s []string) []string {
	if len(s) > 20 {
		return append(slices.Clone(s[:20]), fmt.Sprintf("...(%d more)", len(s)-20))
	}
	return s
}

// close stops every member and the network; on failure it prints logs.
func (c *cluster) close() {
	for _, nd := range c.all() {
		if err := c.checkStopErr(nd, nd.stop()); err != nil && !errors.Is(err, member.ErrRemoved) {
			c.t.Errorf("stop %s: %v", nd.name, err)
		}
		nd.peerHTTP.Close()
	}
	c.net.close()
	_ = c.lg.Sync()
	if c.t.Failed() || os.Getenv("CAIRN_IT_LOG") != "" {
		c.t.Logf("member logs:\n%s", c.logs.String())
	}
}

// others returns the running nodes except the given ones.
func (c *cluster) others(except ...*node) []*node {
	var out []*node
	for _, nd := range c.running() {
		if !slices.Contains(except, nd) {
			out = append(out, nd)
		}
	}
	return out
}

// proposeAsync proposes key=val through nd on its own goroutine; the
// channel gets nil once the put was applied, or the error.
func proposeAsync(ctx context.Context, nd *node, key, val string) <-chan error {
	m := nd.member()
	ch := make(chan error, 1)
	go func() {
		res, err := m.Propose(ctx, &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte(key), Value: []byte(val)}})
		if err == nil {
			err = res.Err
		}
		ch <- err
	}()
	return ch
}

// status is a short description of every node's raft status, for failures.
func (c *cluster) status() string {
	var b strings.Builder
	for _, nd := range c.all() {
		if !nd.isRunning() {
			fmt.Fprintf(&b, "%s(%x): stopped\n", nd.name, nd.ID())
			continue
		}
		st := nd.member().Status()
		fmt.Fprintf(&b, "%s(%x): leader %x term %d committed %d applied %d\n", nd.name, nd.ID(), st.Leader, st.Term, st.Committed, st.Applied)
	}
	return b.String()
}

// historyOf is nd's whole MVCC history: its state at every revision from
// the compacted one to the head, as one fingerprint per revision.
func historyOf(nd *node) ([]string, error) {
	s := nd.member().Store()
	head, compact := s.Rev(), s.CompactRev()
	var out []string
	for rev := max(compact, 1); rev <= head; rev++ {
		rr, err := s.Range([]byte{0}, []byte{0}, mvcc.RangeOptions{Rev: rev})
		if err != nil {
			return nil, fmt.Errorf("%s: range at %d: %w", nd.name, rev, err)
		}
		h := sha256.New()
		for _, kv := range rr.KVs {
			fmt.Fprintf(h, "%q=%q c%d m%d v%d l%d\n", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease)
		}
		out = append(out, fmt.Sprintf("%d:%d:%x", rev, len(rr.KVs), h.Sum(nil)[:8]))
	}
	return out, nil
}

// sameHistory checks that the nodes agree on the state at every revision.
func sameHistory(nodes ...*node) error {
	var first []string
	for i, nd := range nodes {
		h, err := historyOf(nd)
		if err != nil {
			return err
		}
		if i == 0 {
			first = h
			continue
		}
		if len(h) != len(first) {
			return fmt.Errorf("%s has %d revisions, %s has %d", nodes[0].name, len(first), nd.name, len(h))
		}
		for j := range h {
			if h[j] != first[j] {
				return fmt.Errorf("history differs at %s (%s) vs %s (%s)", first[j], nodes[0].name, h[j], nd.name)
			}
		}
	}
	return nil
}
