package robustness

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/cairnkv/cairn/tests/testproc"
)

const (
	readyLine    = testproc.ReadyLine
	startTimeout = 60 * time.Second // a -race server on a busy 2-core box
	healthWait   = 60 * time.Second // for the cluster to settle after a fault
)

// clusterConfig is the shape of one run's cluster.
type clusterConfig struct {
	size          int
	snapshotCount int // --snapshot-count
	catchUp       int // --snapshot-catchup-entries
	heartbeatMs   int
	electionMs    int
}

// cluster is a set of member processes on 127.X.Y.(i+1), their peer
// traffic through a proxy.
type cluster struct {
	t       testing.TB
	log     func(format string, args ...any)
	dir     string
	cfg     clusterConfig
	token   string
	members []*member // member i at index i-1
	proxy   *proxy
	admin   []*clientv3.Client // one single-endpoint client per member
}

type member struct {
	idx        int // 1-based
	name, ip   string
	clientAddr string // host:port
	peerListen string // host:port the member listens on
	peerURL    string // http://ip:proxyPort, what it advertises
	dataDir    string
	state      string // --initial-cluster-state
	initial    string // --initial-cluster
	env        []string
	proc       *process
	logs       []string
}

type process struct {
	cmd     *exec.Cmd
	ready   chan struct{}
	exited  chan struct{}
	waitErr error
}

func (p *process) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// exitCode is the process's exit status (-1 when killed by a signal).
func (p *process) exitCode() int {
	var ee *exec.ExitError
	if errors.As(p.waitErr, &ee) {
		return ee.ExitCode()
	}
	if p.waitErr == nil {
		return 0
	}
	return -1
}

func (m *member) args(c *cluster) []string {
	return []string{
		"--name", m.name,
		"--data-dir", m.dataDir,
		"--listen-client-urls", "http://" + m.clientAddr,
		"--advertise-client-urls", "http://" + m.clientAddr,
		"--listen-peer-urls", "http://" + m.peerListen,
		"--initial-advertise-peer-urls", m.peerURL,
		"--initial-cluster", m.initial,
		"--initial-cluster-state", m.state,
		"--initial-cluster-token", c.token,
		"--heartbeat-interval", fmt.Sprint(c.cfg.heartbeatMs),
		"--election-timeout", fmt.Sprint(c.cfg.electionMs),
		"--snapshot-count", fmt.Sprint(c.cfg.snapshotCount),
		"--snapshot-catchup-entries", fmt.Sprint(c.cfg.catchUp),
		"--feature-gates", "SetMemberLocalAddr=true",
	}
}

// freeAddr returns a free host:port on ip.
func freeAddr(ip string) (string, error) {
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startCluster starts cfg.size members and waits until they serve.
func startCluster(t testing.TB, dir string, cfg clusterConfig, logf func(string, ...any)) (*cluster, error) {
	noteInputs()
	c := &cluster{t: t, log: logf, dir: dir, cfg: cfg, token: fmt.Sprintf("robustness-%d", time.Now().UnixNano()), proxy: newProxy(cfg.size)}
	t.Cleanup(c.cleanup)
	// A random /24 of 127/8 (all loopback on Linux) per cluster: two suites
	// running at once on one machine do not share addresses, so one's
	// outgoing connections cannot take the port of the other's member
	// while it restarts.
	subnet := fmt.Sprintf("127.%d.%d.", 1+rand.IntN(254), 1+rand.IntN(254))
	var initial []string
	for i := 1; i <= cfg.size; i++ {
		ip := fmt.Sprintf("%s%d", subnet, i+1)
		m := &member{idx: i, name: fmt.Sprintf("m%d", i), ip: ip, state: "new",
			dataDir: filepath.Join(dir, fmt.Sprintf("m%d.data", i))}
		var err error
		if m.clientAddr, err = freeAddr(ip); err != nil {
			return nil, err
		}
		if m.peerListen, err = freeAddr(ip); err != nil {
			return nil, err
		}
		pl, err := net.Listen("tcp", ip+":0")
		if err != nil {
			return nil, err
		}
		m.peerURL = "http://" + pl.Addr().String()
		c.proxy.addMember(i, ip, pl, m.peerListen)
		c.members = append(c.members, m)
		initial = append(initial, m.name+"="+m.peerURL)
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{m.clientAddr}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			return nil, err
		}
		c.admin = append(c.admin, cli)
	}
	for _, m := range c.members {
		m.initial = strings.Join(initial, ",")
		if err := c.launch(m); err != nil {
			return nil, err
		}
	}
	deadline := time.Now().Add(startTimeout)
	for _, m := range c.members {
		if err := c.awaitReady(m, deadline); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), healthWait)
	defer cancel()
	if err := c.waitHealthy(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *cluster) endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.clientAddr)
	}
	return eps
}

// launch starts member m's process in its own process group.
func (c *cluster) launch(m *member) error {
	if m.proc != nil {
		return fmt.Errorf("%s already running", m.name)
	}
	logPath := filepath.Join(c.dir, fmt.Sprintf("%s.%d.log", m.name, len(m.logs)+1))
	f, err := os.Create(logPath)
	if err != nil {
		return err
	}
	m.logs = append(m.logs, logPath)
	p := &process{ready: make(chan struct{}), exited: make(chan struct{})}
	w := testproc.NewLogWriter(f, p.ready)
	p.cmd = exec.Command(binaries.server, m.args(c)...)
	p.cmd.Env = append(os.Environ(), m.env...)
	p.cmd.Stdout, p.cmd.Stderr = w, w
	// Its own process group (signals reach every process it starts), and
	// SIGKILL if the test binary dies without running its cleanups (a
	// panic, a -timeout): no member outlives the test.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", m.name, err)
	}
	if len(m.env) > 0 {
		c.log("started %s (pid %d) with %s", m.name, p.cmd.Process.Pid, strings.Join(m.env, " "))
	}
	m.proc = p
	go func() {
		p.waitErr = p.cmd.Wait()
		f.Close()
		close(p.exited)
	}()
	return nil
}

// awaitReady waits for member m's ready line.
func (c *cluster) awaitReady(m *member, deadline time.Time) error {
	p := m.proc
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-p.ready:
		return nil
	case <-p.exited:
		return fmt.Errorf("%s exited before it was ready: %v (log %s)", m.name, p.waitErr, m.logs[len(m.logs)-1])
	case <-timer.C:
		return fmt.Errorf("%s not ready within %v (log %s)", m.name, startTimeout, m.logs[len(m.logs)-1])
	}
}

// signal sends sig to member m's process group.
func (m *member) signal(sig syscall.Signal) error {
	if m.proc == nil {
		return fmt.Errorf("%s is not running", m.name)
	}
	return syscall.Kill(-m.proc.cmd.Process.Pid, sig)
}

// kill sends SIGKILL to member m's process group and waits until it exits.
func (c *cluster) kill(m *member) {
	if m.proc == nil {
		return
	}
	_ = m.signal(syscall.SIGCONT) // a stopped process still dies of SIGKILL; keep the group clean
	_ = m.signal(syscall.SIGKILL)
	<-m.proc.exited
	m.proc = nil
}

// restart starts member m again on its data directory and waits for its
// ready line.
func (c *cluster) restart(m *member) error {
	if err := c.launch(m); err != nil {
		return err
	}
	return c.awaitReady(m, time.Now().Add(startTimeout))
}

// unexpectedExit returns an error for a member whose process exited
// without the harness stopping it.
func (c *cluster) unexpectedExit() error {
	var errs []error
	for _, m := range c.members {
		if m.proc != nil && m.proc.hasExited() {
			errs = append(errs, fmt.Errorf("%s exited on its own: %v (log %s)", m.name, m.proc.waitErr, m.logs[len(m.logs)-1]))
		}
	}
	return errors.Join(errs...)
}

// running returns the members with a live process.
func (c *cluster) running() []*member {
	var rs []*member
	for _, m := range c.members {
		if m.proc != nil && !m.proc.hasExited() {
			rs = append(rs, m)
		}
	}
	return rs
}

type memberStatus struct {
	id, leader uint64
	revision   int64
	raftIndex  uint64
	applied    uint64
	err        error
}

func (c *cluster) status(ctx context.Context, m *member) memberStatus {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := c.admin[m.idx-1].Status(ctx, m.clientAddr)
	if err != nil {
		return memberStatus{err: err}
	}
	return memberStatus{id: st.Header.MemberId, leader: st.Leader, revision: st.Header.Revision, raftIndex: st.RaftIndex, applied: st.RaftAppliedIndex}
}

// leader returns the member every running member names as leader.
func (c *cluster) leader(ctx context.Context) (*member, error) {
	var lead uint64
	var byID = map[uint64]*member{}
	for _, m := range c.running() {
		st := c.status(ctx, m)
		if st.err != nil {
			return nil, fmt.Errorf("%s: %w", m.name, st.err)
		}
		if st.leader == 0 || (lead != 0 && st.leader != lead) {
			return nil, fmt.Errorf("members disagree on the leader (%s says %x, others %x)", m.name, st.leader, lead)
		}
		lead = st.leader
		byID[st.id] = m
	}
	if m := byID[lead]; m != nil {
		return m, nil
	}
	return nil, fmt.Errorf("leader %x is not a running member", lead)
}

// waitLeader polls until every running member names the same leader.
func (c *cluster) waitLeader(ctx context.Context) (*member, error) {
	for {
		m, err := c.leader(ctx)
		if err == nil {
			return m, nil
		}
		if err := pause(ctx, 100*time.Millisecond); err != nil {
			return nil, fmt.Errorf("no leader: %w (last: %v)", err, m)
		}
	}
}

// waitHealthy waits until every running member agrees on a leader and
// serves a linearizable read, and returns an error for a member that
// exited on its own.
func (c *cluster) waitHealthy(ctx context.Context) error {
	var last error
	for {
		if err := c.unexpectedExit(); err != nil {
			return err
		}
		_, err := c.leader(ctx)
		if err == nil {
			for _, m := range c.running() {
				rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err = c.admin[m.idx-1].Get(rctx, "health-probe")
				cancel()
				if err != nil {
					err = fmt.Errorf("%s: %w", m.name, err)
					break
				}
			}
		}
		if err == nil {
			return nil
		}
		last = err
		if err := pause(ctx, 100*time.Millisecond); err != nil {
			return fmt.Errorf("cluster not healthy: %w (last: %v)", err, last)
		}
	}
}

// pause waits d or until ctx is done: the pacing of a poll loop.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// transient membership errors: the change is retried.
func transientReconfig(err error) bool {
	for _, e := range []error{rpctypes.ErrUnhealthy, rpctypes.ErrMemberNotEnoughStarted, rpctypes.ErrTimeout,
		rpctypes.ErrLeaderChanged, rpctypes.ErrNoLeader, rpctypes.ErrTimeoutDueToLeaderFail} {
		if errors.Is(err, e) || (err != nil && strings.Contains(err.Error(), e.Error())) {
			return true
		}
	}
	return errors.Is(err, context.DeadlineExceeded)
}

// replace removes member m from the cluster under traffic, wipes its data
// directory and adds it back as a new member on the same addresses.
func (c *cluster) replace(ctx context.Context, m *member) error {
	st := c.status(ctx, m)
	if st.err != nil {
		return fmt.Errorf("status of %s: %w", m.name, st.err)
	}
	var others []string
	for _, o := range c.members {
		if o != m {
			others = append(others, o.clientAddr)
		}
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: others, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	if err := retryReconfig(ctx, func(ctx context.Context) error {
		_, err := cli.MemberRemove(ctx, st.id)
		if errors.Is(err, rpctypes.ErrMemberNotFound) {
			return nil // an earlier attempt that timed out went through
		}
		return err
	}); err != nil {
		return fmt.Errorf("remove %s: %w", m.name, err)
	}
	c.log("removed %s (%x)", m.name, st.id)
	// A removed member stops by itself; do not wait for it.
	c.kill(m)
	if err := os.RemoveAll(m.dataDir); err != nil {
		return err
	}
	var resp *clientv3.MemberAddResponse
	if err := retryReconfig(ctx, func(ctx context.Context) error {
		var err error
		resp, err = cli.MemberAdd(ctx, []string{m.peerURL})
		if errors.Is(err, rpctypes.ErrPeerURLExist) {
			// An earlier attempt that timed out went through: find it.
			ml, lerr := cli.MemberList(ctx)
			if lerr != nil {
				return lerr
			}
			resp = &clientv3.MemberAddResponse{Members: ml.Members}
			for _, mm := range ml.Members {
				if len(mm.PeerURLs) == 1 && mm.PeerURLs[0] == m.peerURL {
					resp.Member = mm
				}
			}
			return nil
		}
		return err
	}); err != nil {
		return fmt.Errorf("add %s back: %w", m.name, err)
	}
	if resp == nil || resp.Member == nil {
		return fmt.Errorf("add %s back: the member list has no member with peer URL %s", m.name, m.peerURL)
	}
	var initial []string
	for _, mm := range resp.Members {
		name := mm.Name
		if mm.ID == resp.Member.ID {
			name = m.name
		}
		for _, u := range mm.PeerURLs {
			initial = append(initial, name+"="+u)
		}
	}
	c.log("added %s back as %x", m.name, resp.Member.ID)
	m.initial = strings.Join(initial, ",")
	m.state = "existing"
	return c.restart(m)
}

func retryReconfig(ctx context.Context, f func(context.Context) error) error {
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := f(rctx)
		cancel()
		if err == nil || !transientReconfig(err) {
			return err
		}
		if perr := pause(ctx, 200*time.Millisecond); perr != nil {
			return fmt.Errorf("%w (last: %w)", perr, err)
		}
	}
}

// crashReport returns the first crash report in member logs.
func (c *cluster) crashReport() error {
	var errs []error
	for _, m := range c.members {
		for _, path := range m.logs {
			errs = append(errs, testproc.CrashReports(path, 4<<10)...)
		}
	}
	return errors.Join(errs...)
}

// stopAll kills every member (the data is checked before this).
func (c *cluster) stopAll() {
	for _, m := range c.members {
		c.kill(m)
	}
}

func (c *cluster) cleanup() {
	c.stopAll()
	c.proxy.close()
	for _, cli := range c.admin {
		cli.Close()
	}
}
