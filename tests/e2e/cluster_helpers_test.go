package e2e

import (
	"context"
	"crypto/sha1"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/cairnkv/cairn/tests/testproc"
)

// Cluster tests run 3 (sometimes 4) server processes on 127.0.0.1, each
// with its own free client and peer port, data directory and log files,
// started the way scripts/local-cluster.sh starts them: etcd's flags, one
// --initial-cluster naming every member, --initial-cluster-state new and an
// --initial-cluster-token. Short raft timings keep elections quick.
const (
	clusterHeartbeatMs = 50
	clusterElectionMs  = 500
	// clusterWait bounds every poll for the cluster to settle (a leader
	// everyone agrees on, equal indexes, a caught-up member): many election
	// timeouts of a -race server on a busy 2-core machine.
	clusterWait = 30 * time.Second
	// reconfigWait bounds the retries of a membership change that etcd
	// refuses as unsafe until the member has been connected to its peers
	// for 5 s (etcdserver.HealthInterval: "etcdserver: unhealthy cluster").
	reconfigWait = 20 * time.Second
)

// Errors that a membership change may get while the cluster is still
// settling; the change is retried until reconfigWait.
var transientReconfigErrors = []string{
	"etcdserver: unhealthy cluster",
	"etcdserver: re-configuration failed due to not enough started members",
	"etcdserver: request timed out", // cairn: a concurrent change still pending
	"etcdserver: leader changed",
	"etcdserver: no leader",
}

// cluster is a set of server processes that form one etcd cluster.
type cluster struct {
	t       *testing.T
	token   string    // --initial-cluster-token
	members []*server // every member ever started, in start order
}

// newMember prepares a server (not started) whose logs are checked and
// whose process is stopped when the test ends.
func newMember(t *testing.T, name string) *server {
	t.Helper()
	base := t.TempDir()
	s := &server{t: t, name: name, dataDir: filepath.Join(base, "data"), logDir: base}
	t.Cleanup(s.cleanup)
	return s
}

// startCluster starts n members with --initial-cluster-state new and waits
// until each has logged "ready to serve client requests" and served a
// linearizable read.
func startCluster(t *testing.T, n int) *cluster {
	t.Helper()
	noteInputs()
	c := &cluster{t: t, token: "e2e-" + strings.ReplaceAll(t.Name(), "/", "-")}
	for i := 1; i <= n; i++ {
		c.members = append(c.members, newMember(t, fmt.Sprintf("m%d", i)))
	}
	// Registered after the members' cleanups, so it runs first: it stops
	// all members at once instead of one after the other.
	t.Cleanup(c.stopAll)
	const attempts = 3
	for i := 1; ; i++ {
		c.setInitialArgs()
		start := time.Now()
		err := c.tryStart()
		if err == nil {
			t.Logf("%d-member cluster ready in %v", n, time.Since(start).Round(time.Millisecond))
			return c
		}
		c.stopAll()
		if !errors.Is(err, errAddrInUse) || i == attempts {
			t.Fatal(err)
		}
		t.Logf("attempt %d: %v; retrying on other ports", i, err)
		for _, s := range c.members {
			require.NoError(t, os.RemoveAll(s.dataDir))
		}
	}
}

// others returns the members other than leader, in member order.
func (c *cluster) others(leader *server) []*server {
	var out []*server
	for _, s := range c.members {
		if s != leader {
			out = append(out, s)
		}
	}
	return out
}

// setInitialArgs picks free ports for every member and sets the flags of a
// new cluster.
func (c *cluster) setInitialArgs() {
	var initial []string
	ports := make([][2]int, len(c.members))
	for i, s := range c.members {
		ports[i] = [2]int{freePort(c.t), freePort(c.t)}
		initial = append(initial, fmt.Sprintf("%s=http://127.0.0.1:%d", s.name, ports[i][1]))
	}
	for i, s := range c.members {
		s.setClusterArgs(ports[i][0], ports[i][1], strings.Join(initial, ","), "new", c.token)
	}
}

// setClusterArgs sets the flags of a cluster member.
func (s *server) setClusterArgs(clientPort, peerPort int, initialCluster, state, token string) {
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", clientPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	s.endpoint = fmt.Sprintf("127.0.0.1:%d", clientPort)
	s.args = []string{
		"--name", s.name,
		"--data-dir", s.dataDir,
		"--listen-client-urls", clientURL,
		"--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL,
		"--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", initialCluster,
		"--initial-cluster-state", state,
		"--initial-cluster-token", token,
		"--heartbeat-interval", fmt.Sprint(clusterHeartbeatMs),
		"--election-timeout", fmt.Sprint(clusterElectionMs),
	}
}

// tryStart launches every member, then waits for all of them at once: a
// member of a new cluster is not ready before a quorum runs.
func (c *cluster) tryStart() error {
	for _, s := range c.members {
		if err := s.launch(); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(startTimeout)
	errs := make([]error, len(c.members))
	abort := make(chan struct{}) // closed at the first failure
	var once sync.Once
	var wg sync.WaitGroup
	for i, s := range c.members {
		wg.Go(func() {
			errs[i] = s.awaitReady(deadline, false, abort)
			if errs[i] != nil {
				once.Do(func() { close(abort) })
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// launch starts the server process without waiting for it. It does not
// touch s.t, so that members can be launched and awaited concurrently.
func (s *server) launch() error {
	if s.proc != nil {
		return fmt.Errorf("%s: already running", s.name)
	}
	logPath := filepath.Join(s.logDir, fmt.Sprintf("server-%d.log", len(s.logs)+1))
	f, err := os.Create(logPath)
	if err != nil {
		return err
	}
	s.logs = append(s.logs, logPath)
	p := &process{ready: make(chan struct{}), exited: make(chan struct{})}
	w := testproc.NewLogWriter(f, p.ready)
	p.cmd = exec.Command(binaries.server, s.args...)
	p.cmd.Stdout = w
	p.cmd.Stderr = w
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", s.name, err)
	}
	s.proc = p
	go func() {
		p.waitErr = p.cmd.Wait()
		f.Close()
		close(p.exited)
	}()
	return nil
}

// awaitReady waits for the ready log line and then for a successful read:
// linearizable, or serializable for a learner (which refuses linearizable
// reads). A process that exits is forgotten (s.proc = nil).
func (s *server) awaitReady(deadline time.Time, serializable bool, abort <-chan struct{}) error {
	p := s.proc
	logPath := s.logs[len(s.logs)-1]
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-p.ready:
	case <-p.exited:
		s.proc = nil
		b, _ := os.ReadFile(logPath)
		if strings.Contains(string(b), errAddrInUse.Error()) {
			return fmt.Errorf("%s exited before logging %q: %w (log %s)", s.name, readyLine, errAddrInUse, logPath)
		}
		return fmt.Errorf("%s exited before logging %q: %v (log %s)", s.name, readyLine, p.waitErr, logPath)
	case <-timer.C:
		return fmt.Errorf("%s did not log %q within %v (log %s)", s.name, readyLine, startTimeout, logPath)
	case <-abort:
		return nil // another member failed: its error is the one to report
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	var opts []clientv3.OpOption
	if serializable {
		opts = append(opts, clientv3.WithSerializable())
	}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := cli.Get(ctx, "e2e-readiness-probe", opts...)
		cancel()
		if err == nil {
			return nil
		}
		retry := time.NewTimer(50 * time.Millisecond)
		select {
		case <-retry.C:
		case <-p.exited:
			s.proc = nil
			return fmt.Errorf("%s exited while waiting for a read: %v (log %s)", s.name, p.waitErr, logPath)
		case <-timer.C:
			retry.Stop()
			return fmt.Errorf("%s: no successful read within %v: %v (log %s)", s.name, startTimeout, err, logPath)
		case <-abort:
			retry.Stop()
			return nil
		}
	}
}

// stopAll stops every running member with SIGTERM and waits for them to
// exit: the followers together, then the leader. (etcd's leader hands its
// leadership to a follower when it stops; stopped together with the
// followers, or as the first member, the member that leads then waits for
// a transfer to a member that is going away until its request timeout.)
// A member that exited on its own is an error (a test must forget a member
// it expects to exit, see waitExit).
func (c *cluster) stopAll() {
	t := c.t
	var running []*server
	for _, s := range c.members {
		if s.proc == nil {
			continue
		}
		if s.exited(s.proc) {
			t.Errorf("%s exited on its own before SIGTERM: %v", s.name, s.proc.waitErr)
			s.proc = nil
			continue
		}
		running = append(running, s)
	}
	if leader := quickLeader(running); leader != nil {
		c.terminate(slices.DeleteFunc(slices.Clone(running), func(s *server) bool { return s == leader }))
		running = []*server{leader}
	}
	c.terminate(running)
}

// terminate sends SIGTERM to the members at once and waits for them.
func (c *cluster) terminate(members []*server) {
	for _, s := range members {
		_ = s.proc.cmd.Process.Signal(syscall.SIGTERM)
	}
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	timedOut := false
	for _, s := range members {
		if !timedOut {
			select {
			case <-s.proc.exited:
			case <-timer.C:
				timedOut = true
			}
		}
		if timedOut && !s.exited(s.proc) {
			_ = s.proc.cmd.Process.Kill()
			<-s.proc.exited
			c.t.Errorf("%s did not exit within %v of SIGTERM; killed it", s.name, stopTimeout)
		}
		s.proc = nil
	}
}

// quickLeader returns the member that says it leads, if one answers a
// Status call at once.
func quickLeader(members []*server) *server {
	if len(members) < 2 {
		return nil
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpointsOf(members), DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil
	}
	defer cli.Close()
	for _, s := range members {
		if st := statusOf(cli, s); st.err == nil && st.id == st.leader {
			return s
		}
	}
	return nil
}

// waitExit waits up to d for the member's process to exit on its own and
// reports whether it did; a process that exited is forgotten.
func (s *server) waitExit(d time.Duration) (exited bool, err error) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-s.proc.exited:
		err = s.proc.waitErr
		s.proc = nil
		return true, err
	case <-timer.C:
		return false, nil
	}
}

func endpointsOf(members []*server) []string {
	var eps []string
	for _, s := range members {
		eps = append(eps, s.endpoint)
	}
	return eps
}

// ctlAt runs etcdctl with --endpoints set to eps (reusing server.etcdctl,
// which only uses the endpoint).
func ctlAt(t testing.TB, eps []string, args ...string) ctlResult {
	t.Helper()
	return (&server{endpoint: strings.Join(eps, ",")}).etcdctl(t, "", args...)
}

// ctlOK runs etcdctl and requires it to succeed.
func ctlOK(t testing.TB, eps []string, args ...string) string {
	t.Helper()
	r := ctlAt(t, eps, args...)
	require.Equal(t, 0, r.code, "etcdctl --endpoints=%s %s: stderr:\n%s", strings.Join(eps, ","), strings.Join(args, " "), r.stderr)
	return r.stdout
}

// ctlReconfig runs an etcdctl membership command, retrying while it fails
// with an error that only says the cluster has not settled yet (etcd
// refuses changes until its peers have been connected for 5 s).
func ctlReconfig(t testing.TB, eps []string, args ...string) ctlResult {
	t.Helper()
	deadline := time.Now().Add(reconfigWait)
	for {
		r := ctlAt(t, eps, args...)
		if r.code == 0 || !isTransientReconfig(r.errLine()) || time.Now().After(deadline) {
			return r
		}
		if !waitPoll(deadline) {
			return r
		}
	}
}

func isTransientReconfig(errLine string) bool {
	for _, e := range transientReconfigErrors {
		if strings.Contains(errLine, e) {
			return true
		}
	}
	return false
}

// waitPoll paces a poll loop: it waits a poll interval and reports false
// once the deadline has passed.
func waitPoll(deadline time.Time) bool {
	if time.Now().After(deadline) {
		return false
	}
	timer := time.NewTimer(min(100*time.Millisecond, time.Until(deadline)))
	defer timer.Stop()
	<-timer.C
	return true
}

// etcdMemberID is the ID etcd gives a member of a new cluster
// (server/etcdserver/api/membership/member.go computeMemberID with no time).
func etcdMemberID(peerURLs []string, token string) uint64 {
	urls := slices.Sorted(slices.Values(peerURLs))
	h := sha1.Sum([]byte(strings.Join(urls, "") + token))
	return binary.BigEndian.Uint64(h[:8])
}

// etcdClusterID is the cluster ID etcd derives from the initial members'
// IDs (server/etcdserver/api/membership/cluster.go genID).
func etcdClusterID(ids []uint64) uint64 {
	ids = slices.Sorted(slices.Values(ids))
	b := make([]byte, 8*len(ids))
	for i, id := range ids {
		binary.BigEndian.PutUint64(b[8*i:], id)
	}
	h := sha1.Sum(b)
	return binary.BigEndian.Uint64(h[:8])
}

// expectedIDs returns the member IDs etcd computes for the cluster's
// initial members, by name, and the cluster ID.
func (c *cluster) expectedIDs() (map[string]uint64, uint64) {
	ids := map[string]uint64{}
	var all []uint64
	for _, s := range c.members[:3] {
		id := etcdMemberID([]string{s.peerURL()}, c.token)
		ids[s.name] = id
		all = append(all, id)
	}
	return ids, etcdClusterID(all)
}

// memberListJSON is `etcdctl member list -w json`.
type memberListJSON struct {
	Header struct {
		ClusterID uint64 `json:"cluster_id"`
		MemberID  uint64 `json:"member_id"`
		RaftTerm  uint64 `json:"raft_term"`
	} `json:"header"`
	Members []memberJSON `json:"members"`
}

type memberJSON struct {
	ID         uint64   `json:"ID"`
	Name       string   `json:"name"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs"`
	IsLearner  bool     `json:"isLearner"`
}

func memberList(t testing.TB, eps []string, extra ...string) memberListJSON {
	t.Helper()
	out := ctlOK(t, eps, append([]string{"member", "list", "-w", "json"}, extra...)...)
	var ml memberListJSON
	require.NoError(t, json.Unmarshal([]byte(out), &ml), out)
	slices.SortFunc(ml.Members, func(a, b memberJSON) int { return strings.Compare(a.Name+hexID(a.ID), b.Name+hexID(b.ID)) })
	return ml
}

// endpointStatusJSON is one element of `etcdctl endpoint status -w json`.
type endpointStatusJSON struct {
	Endpoint string `json:"Endpoint"`
	Status   struct {
		Header struct {
			ClusterID uint64 `json:"cluster_id"`
			MemberID  uint64 `json:"member_id"`
			Revision  int64  `json:"revision"`
			RaftTerm  uint64 `json:"raft_term"`
		} `json:"header"`
		Leader           uint64   `json:"leader"`
		RaftIndex        uint64   `json:"raftIndex"`
		RaftTerm         uint64   `json:"raftTerm"`
		RaftAppliedIndex uint64   `json:"raftAppliedIndex"`
		Errors           []string `json:"errors"`
		IsLearner        bool     `json:"isLearner"`
	} `json:"Status"`
}

func endpointStatus(t testing.TB, eps []string, extra ...string) []endpointStatusJSON {
	t.Helper()
	out := ctlOK(t, eps, append([]string{"endpoint", "status", "-w", "json"}, extra...)...)
	var st []endpointStatusJSON
	require.NoError(t, json.Unmarshal([]byte(out), &st), out)
	return st
}

// clusterClient returns a client over the given members' endpoints, closed
// at the end of the test.
func clusterClient(t testing.TB, members []*server) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpointsOf(members),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	require.NoError(t, err)
	t.Cleanup(func() { cli.Close() })
	return cli
}

// memberStatus is what Maintenance.Status says on one member.
type memberStatus struct {
	s                 *server
	id, leader        uint64
	term, index, appl uint64
	revision          int64
	learner           bool
	err               error
}

func statusOf(cli *clientv3.Client, s *server) memberStatus {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := cli.Status(ctx, s.endpoint)
	if err != nil {
		return memberStatus{s: s, err: err}
	}
	return memberStatus{s: s, id: st.Header.MemberId, leader: st.Leader, term: st.RaftTerm,
		index: st.RaftIndex, appl: st.RaftAppliedIndex, revision: st.Header.Revision, learner: st.IsLearner}
}

// waitLeader polls Maintenance.Status on every given member until all of
// them name the same leader, one of them, that says it leads itself
// (Leader == MemberId), and returns it with every member's ID.
func waitLeader(t testing.TB, cli *clientv3.Client, members []*server) (leader *server, ids map[*server]uint64) {
	t.Helper()
	deadline := time.Now().Add(clusterWait)
	var last []memberStatus
	for {
		last = last[:0]
		ids = map[*server]uint64{}
		agreed := true
		for _, s := range members {
			st := statusOf(cli, s)
			last = append(last, st)
			ids[s] = st.id
			if st.err != nil || st.leader == 0 || st.leader != last[0].leader {
				agreed = false
			}
		}
		if agreed {
			for _, st := range last {
				if st.id == st.leader {
					return st.s, ids
				}
			}
		}
		if !waitPoll(deadline) {
			t.Fatalf("no leader all of %v agree on within %v: %+v", endpointsOf(members), clusterWait, last)
		}
	}
}

// serializableRead reads every key with a serializable read on one member.
func serializableRead(ctx context.Context, s *server, prefix string) (int64, []kv, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return 0, nil, err
	}
	defer cli.Close()
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithSerializable())
	if err != nil {
		return 0, nil, err
	}
	return resp.Header.Revision, kvsOf(resp.Kvs), nil
}

// waitConverged polls serializable reads of prefix on every given member
// until all are at the same revision with the same keys, and returns them.
func waitConverged(t testing.TB, members []*server, prefix string) (int64, []kv) {
	t.Helper()
	deadline := time.Now().Add(clusterWait)
	for {
		var (
			revs  []int64
			kvs   [][]kv
			errs  []error
			equal = true
		)
		for _, s := range members {
			rev, got, err := serializableRead(testCtx(t), s, prefix)
			revs, kvs, errs = append(revs, rev), append(kvs, got), append(errs, err)
			if err != nil || rev != revs[0] || !slices.Equal(got, kvs[0]) {
				equal = false
			}
		}
		if equal {
			return revs[0], kvs[0]
		}
		if !waitPoll(deadline) {
			t.Fatalf("members %v did not converge within %v: revisions %v, %d/%d keys... errors %v",
				endpointsOf(members), clusterWait, revs, len(kvs[0]), len(kvs[len(kvs)-1]), errs)
		}
	}
}

// addedMember is what `etcdctl member add` printed.
type addedMember struct {
	id             uint64
	clusterID      uint64
	learner        bool
	initialCluster string // ETCD_INITIAL_CLUSTER
	env            map[string]string
}

func parseMemberAdd(t testing.TB, out string) addedMember {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	require.GreaterOrEqual(t, len(lines), 6, "member add output:\n%s", out)
	var a addedMember
	var id, cid string
	head := strings.Fields(lines[0])
	// "Member <id> added [as learner] to cluster <cid>" (%16x pads with spaces).
	switch {
	case len(head) == 6 && head[2] == "added":
		id, cid = head[1], head[5]
	case len(head) == 8 && head[2] == "added" && head[3] == "as" && head[4] == "learner":
		id, cid, a.learner = head[1], head[7], true
	default:
		t.Fatalf("unexpected first line of member add: %q", lines[0])
	}
	_, err := fmt.Sscanf(id, "%x", &a.id)
	require.NoError(t, err, lines[0])
	_, err = fmt.Sscanf(cid, "%x", &a.clusterID)
	require.NoError(t, err, lines[0])
	require.Empty(t, lines[1], out)
	a.env = map[string]string{}
	for _, l := range lines[2:] {
		k, v, ok := strings.Cut(l, "=")
		require.True(t, ok, "line %q of member add output", l)
		a.env[k] = strings.Trim(v, `"`)
	}
	a.initialCluster = a.env["ETCD_INITIAL_CLUSTER"]
	return a
}

// startAdded starts a member that `member add` added, on the ports of
// peerPort (given to member add) and a new client port, with
// --initial-cluster-state existing, and waits until it serves reads
// (serializable ones for a learner).
func (c *cluster) startAdded(s *server, clientPort, peerPort int, added addedMember) {
	t := c.t
	t.Helper()
	s.setClusterArgs(clientPort, peerPort, added.initialCluster, "existing", c.token)
	c.members = append(c.members, s)
	require.NoError(t, s.launch())
	require.NoError(t, s.awaitReady(time.Now().Add(startTimeout), added.learner, nil))
}

// fmtID16 formats an ID the way etcdctl's "%16x" does.
func fmtID16(id uint64) string { return fmt.Sprintf("%16x", id) }

// isCairn reports whether the server under test is cairn (its --version
// says "cairn Version"), not etcd: the known-bug skips apply to cairn only.
func isCairn() bool {
	serverIsCairn.once.Do(func() {
		out, _ := exec.Command(binaries.server, "--version").Output()
		serverIsCairn.yes = strings.Contains(string(out), "cairn Version")
	})
	return serverIsCairn.yes
}

var serverIsCairn struct {
	once sync.Once
	yes  bool
}
