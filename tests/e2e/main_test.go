package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

const (
	readyLine = testproc.ReadyLine

	startTimeout = 60 * time.Second // a -race server on a busy 2-core box
	stopTimeout  = 30 * time.Second
	opTimeout    = 30 * time.Second
)

// binaries are built (or taken from the environment) once by TestMain.
var binaries struct {
	server   string // cairn, or E2E_SERVER_BINARY
	etcdctl  string
	cairnctl string
}

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "cairn-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := buildBinaries(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	return m.Run()
}

func buildBinaries(dir string) error {
	var builds []func() error
	binaries.server = os.Getenv("E2E_SERVER_BINARY")
	if binaries.server == "" {
		binaries.server = filepath.Join(dir, "cairn")
		builds = append(builds, func() error {
			return testproc.GoBuild("-race", "-o", binaries.server, "./cmd/cairn")
		})
	}
	binaries.cairnctl = filepath.Join(dir, "cairnctl")
	builds = append(builds, func() error {
		return testproc.GoBuild("-race", "-o", binaries.cairnctl, "./cmd/cairnctl")
	})
	binaries.etcdctl = os.Getenv("E2E_ETCDCTL_BINARY")
	if binaries.etcdctl == "" {
		binaries.etcdctl = filepath.Join(dir, "etcdctl")
		// etcdctl is pinned in go.mod as a tool dependency.
		builds = append(builds, func() error {
			return testproc.GoBuild("-o", binaries.etcdctl, "go.etcd.io/etcd/etcdctl/v3")
		})
	}
	errs := make([]error, len(builds))
	var wg sync.WaitGroup
	for i, build := range builds {
		wg.Go(func() { errs[i] = build() })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// noteInputs makes `go test` caching see what the tests depend on. TestMain
// runs before the test log that go test reads is on, so its Getenv calls and
// the binaries it builds would otherwise be invisible, and a cached result
// could be replayed for another server binary or changed cairn sources. The
// cairn binary is built into a new directory every run, so a run that
// builds it is never a cache hit.
func noteInputs() {
	os.Getenv("E2E_SERVER_BINARY")
	os.Getenv("E2E_ETCDCTL_BINARY")
	_, _ = os.Stat(binaries.server)
	_, _ = os.Stat(binaries.etcdctl)
}

type server struct {
	t        testing.TB
	name     string
	dataDir  string
	logDir   string
	endpoint string // host:port of the client URL, for etcdctl and clientv3
	args     []string
	logs     []string // one log file per start
	proc     *process // nil when not running
}

type process struct {
	cmd     *exec.Cmd
	ready   chan struct{} // closed when the ready line is logged
	exited  chan struct{} // closed when the process has been waited for
	waitErr error         // valid after exited is closed
}

// startServer starts a fresh single-member server and waits until it serves
// linearizable reads. It is stopped, and its logs are checked (and printed if
// the test failed), when the test ends.
func startServer(t testing.TB) *server {
	t.Helper()
	noteInputs()
	base := t.TempDir() // before Cleanup below: removed after the logs are read
	s := &server{
		t:       t,
		name:    "e2e",
		dataDir: filepath.Join(base, "data"),
		logDir:  base,
	}
	t.Cleanup(s.cleanup)
	// A port found free can be taken by another process (another test
	// package runs in parallel) before the server binds it: pick new ports
	// and try again, a bounded number of times.
	const attempts = 3
	for i := 1; ; i++ {
		s.pickPorts()
		err := s.tryStart()
		if err == nil {
			return s
		}
		if !errors.Is(err, errAddrInUse) || i == attempts {
			t.Fatal(err)
		}
		t.Logf("attempt %d: %v; retrying on other ports", i, err)
		require.NoError(t, os.RemoveAll(s.dataDir))
	}
}

// pickPorts chooses free client and peer ports and sets the server flags.
func (s *server) pickPorts() {
	clientPort, peerPort := freePort(s.t), freePort(s.t)
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
		"--initial-cluster", s.name + "=" + peerURL,
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	givenPorts.Lock()
	defer givenPorts.Unlock()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		port := l.Addr().(*net.TCPAddr).Port
		require.NoError(t, l.Close())
		// The kernel may hand a just-closed port out again: two members
		// of one cluster once got the same peer port.
		if !givenPorts.m[port] {
			givenPorts.m[port] = true
			return port
		}
	}
}

// givenPorts are the ports freePort has returned in this test binary.
var givenPorts = struct {
	sync.Mutex
	m map[int]bool
}{m: map[int]bool{}}

// clientURL is what --advertise-client-urls was given.
func (s *server) clientURL() string { return "http://" + s.endpoint }

// peerURL is what --initial-advertise-peer-urls was given.
func (s *server) peerURL() string {
	for i, a := range s.args {
		if a == "--initial-advertise-peer-urls" {
			return s.args[i+1]
		}
	}
	panic("no peer URL")
}

// errAddrInUse is returned by tryStart when the server could not bind a port.
var errAddrInUse = errors.New("address already in use")

// start runs the server process on the data directory (again) and waits
// until it is ready.
func (s *server) start() {
	s.t.Helper()
	if err := s.tryStart(); err != nil {
		s.t.Fatal(err)
	}
}

// tryStart runs the server process and waits until it serves linearizable
// reads.
func (s *server) tryStart() error {
	t := s.t
	t.Helper()
	require.Nil(t, s.proc, "server already running")
	logPath := filepath.Join(s.logDir, fmt.Sprintf("server-%d.log", len(s.logs)+1))
	f, err := os.Create(logPath)
	require.NoError(t, err)
	s.logs = append(s.logs, logPath)

	p := &process{ready: make(chan struct{}), exited: make(chan struct{})}
	w := testproc.NewLogWriter(f, p.ready)
	p.cmd = exec.Command(binaries.server, s.args...)
	p.cmd.Stdout = w
	p.cmd.Stderr = w
	p.cmd.WaitDelay = 5 * time.Second
	require.NoError(t, p.cmd.Start())
	s.proc = p
	go func() {
		p.waitErr = p.cmd.Wait()
		f.Close()
		close(p.exited)
	}()

	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	select {
	case <-p.ready:
	case <-p.exited:
		s.proc = nil
		b, _ := os.ReadFile(logPath)
		if bytes.Contains(b, []byte(errAddrInUse.Error())) {
			return fmt.Errorf("server exited before logging %q: %w (log %s)", readyLine, errAddrInUse, logPath)
		}
		return fmt.Errorf("server exited before logging %q: %v (log %s)", readyLine, p.waitErr, logPath)
	case <-deadline.C:
		return fmt.Errorf("server did not log %q within %v (log %s)", readyLine, startTimeout, logPath)
	}
	return s.waitServing(deadline.C)
}

// waitServing polls with linearizable reads until one succeeds.
func (s *server) waitServing(deadline <-chan time.Time) error {
	cli := s.newClient()
	defer cli.Close()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := cli.Get(ctx, "e2e-readiness-probe")
		cancel()
		if err == nil {
			return nil
		}
		retry := time.NewTimer(50 * time.Millisecond)
		select {
		case <-retry.C:
		case <-s.proc.exited:
			return fmt.Errorf("server exited while waiting for a linearizable read: %v", s.proc.waitErr)
		case <-deadline:
			retry.Stop()
			return fmt.Errorf("no successful linearizable read within %v: %v", startTimeout, err)
		}
	}
}

// stop sends SIGTERM and waits for the process to exit.
func (s *server) stop() {
	t := s.t
	t.Helper()
	p := s.proc
	require.NotNil(t, p, "server not running")
	s.proc = nil
	if s.exited(p) {
		t.Errorf("server exited on its own before SIGTERM: %v", p.waitErr)
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-p.exited:
	case <-timer.C:
		_ = p.cmd.Process.Kill()
		<-p.exited
		t.Errorf("server did not exit within %v of SIGTERM; killed it", stopTimeout)
	}
}

// kill sends SIGKILL (kill -9) and waits for the process to be gone.
func (s *server) kill() {
	t := s.t
	t.Helper()
	p := s.proc
	require.NotNil(t, p, "server not running")
	s.proc = nil
	if s.exited(p) {
		t.Fatalf("server exited on its own before kill -9: %v", p.waitErr)
	}
	require.NoError(t, p.cmd.Process.Kill())
	<-p.exited
}

// exited reports whether the process p has exited.
func (s *server) exited(p *process) bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

func (s *server) cleanup() {
	t := s.t
	if s.proc != nil {
		s.stop()
	}
	for _, path := range s.logs {
		for _, err := range testproc.CrashReports(path, 8<<10) {
			t.Errorf("server log %v", err)
		}
	}
	if !t.Failed() {
		return
	}
	const maxLog = 64 << 10
	for _, path := range s.logs {
		b, _ := os.ReadFile(path)
		if len(b) > maxLog {
			b = append([]byte("[... head cut ...]\n"), b[len(b)-maxLog:]...)
		}
		t.Logf("==== server log %s (%s) ====\n%s", filepath.Base(path), binaries.server, b)
	}
}

// newClient returns a clientv3 client for the server; the caller closes it.
func (s *server) newClient() *clientv3.Client {
	s.t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{s.endpoint},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	require.NoError(s.t, err)
	return cli
}

// client returns a clientv3 client closed at the end of the test.
func (s *server) client() *clientv3.Client {
	s.t.Helper()
	cli := s.newClient()
	s.t.Cleanup(func() { cli.Close() })
	return cli
}

// ctlResult is what one etcdctl run printed.
type ctlResult struct {
	stdout string
	stderr string
	code   int
}

// errLine is the last non-empty stderr line: etcdctl prints client retry
// warnings (with timestamps) before its final "Error: ..." line.
func (r ctlResult) errLine() string {
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	return lines[len(lines)-1]
}

// etcdctl runs etcdctl against the server with stdin as input.
func (s *server) etcdctl(t testing.TB, stdin string, args ...string) ctlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	full := append([]string{"--endpoints=" + s.endpoint, "--command-timeout=10s"}, args...)
	cmd := exec.CommandContext(ctx, binaries.etcdctl, full...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	r := ctlResult{stdout: stdout.String(), stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr) && ctx.Err() == nil:
		r.code = exitErr.ExitCode()
	default:
		t.Fatalf("etcdctl %s: %v\nstderr: %s", strings.Join(args, " "), err, r.stderr)
	}
	return r
}

// testCtx is a context for a test's client calls.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	t.Cleanup(cancel)
	return ctx
}

// hexID formats a member ID the way etcdctl prints it.
func hexID(id uint64) string { return strconv.FormatUint(id, 16) }
