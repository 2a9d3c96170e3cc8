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
)

const (
	// readyLine is logged by etcd (embed/serve.go) and by cairn once the
	// client port serves requests.
	readyLine = "ready to serve client requests"
	// raceReport is what a -race binary prints when it finds a data race.
	raceReport = "WARNING: DATA RACE"

	startTimeout = 60 * time.Second // a -race server on a busy 2-core box
	stopTimeout  = 30 * time.Second
	opTimeout    = 30 * time.Second
)

// binaries are built (or taken from the environment) once by TestMain.
var binaries struct {
	server  string // cairn, or E2E_SERVER_BINARY
	etcdctl string
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
	root, err := repoRoot()
	if err != nil {
		return err
	}
	binaries.server = os.Getenv("E2E_SERVER_BINARY")
	if binaries.server == "" {
		binaries.server = filepath.Join(dir, "cairn")
		if err := goBuild(root, "-race", "-o", binaries.server, "./cmd/cairn"); err != nil {
			return err
		}
	}
	binaries.etcdctl = os.Getenv("E2E_ETCDCTL_BINARY")
	if binaries.etcdctl == "" {
		binaries.etcdctl = filepath.Join(dir, "etcdctl")
		// etcdctl is pinned in go.mod as a tool dependency.
		if err := goBuild(root, "-o", binaries.etcdctl, "go.etcd.io/etcd/etcdctl/v3"); err != nil {
			return err
		}
	}
	return nil
}

func goBuild(root string, args ...string) error {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("go tool not found: %w", err)
	}
	cmd := exec.Command(gobin, append([]string{"build"}, args...)...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// repoRoot walks up from the test's working directory to the go.mod of the
// cairn module.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/cairnkv/cairn\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of github.com/cairnkv/cairn above the working directory")
		}
		dir = parent
	}
}

// server is one single-member cluster whose process can be stopped, killed
// and restarted on the same data directory and ports.
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
	base := t.TempDir() // before Cleanup below: removed after the logs are read
	clientPort, peerPort := freePort(t), freePort(t)
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", clientPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	s := &server{
		t:        t,
		name:     "e2e",
		dataDir:  filepath.Join(base, "data"),
		logDir:   base,
		endpoint: fmt.Sprintf("127.0.0.1:%d", clientPort),
	}
	s.args = []string{
		"--name", s.name,
		"--data-dir", s.dataDir,
		"--listen-client-urls", clientURL,
		"--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL,
		"--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", s.name + "=" + peerURL,
	}
	t.Cleanup(s.cleanup)
	s.start()
	return s
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

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

// start runs the server process on the data directory and waits until it is
// ready.
func (s *server) start() {
	t := s.t
	t.Helper()
	require.Nil(t, s.proc, "server already running")
	logPath := filepath.Join(s.logDir, fmt.Sprintf("server-%d.log", len(s.logs)+1))
	f, err := os.Create(logPath)
	require.NoError(t, err)
	s.logs = append(s.logs, logPath)

	p := &process{ready: make(chan struct{}), exited: make(chan struct{})}
	w := &logWriter{f: f, ready: p.ready}
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
		t.Fatalf("server exited before logging %q: %v (log %s)", readyLine, p.waitErr, logPath)
	case <-deadline.C:
		t.Fatalf("server did not log %q within %v (log %s)", readyLine, startTimeout, logPath)
	}
	s.waitServing(deadline.C)
}

// waitServing polls with linearizable reads until one succeeds.
func (s *server) waitServing(deadline <-chan time.Time) {
	t := s.t
	t.Helper()
	cli := s.newClient()
	defer cli.Close()
	var lastErr error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, lastErr = cli.Get(ctx, "e2e-readiness-probe")
		cancel()
		if lastErr == nil {
			return
		}
		retry := time.NewTimer(50 * time.Millisecond)
		select {
		case <-retry.C:
		case <-s.proc.exited:
			t.Fatalf("server exited while waiting for a linearizable read: %v", s.proc.waitErr)
		case <-deadline:
			retry.Stop()
			t.Fatalf("no successful linearizable read within %v: %v", startTimeout, lastErr)
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
	select {
	case <-p.exited:
		t.Fatalf("server exited on its own before kill -9: %v", p.waitErr)
	default:
	}
	require.NoError(t, p.cmd.Process.Kill())
	<-p.exited
}

func (s *server) cleanup() {
	t := s.t
	if s.proc != nil {
		s.stop()
	}
	for _, path := range s.logs {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("read server log: %v", err)
			continue
		}
		if i := bytes.Index(b, []byte(raceReport)); i >= 0 {
			t.Errorf("server log %s reports a data race:\n%s", filepath.Base(path), b[i:min(len(b), i+8<<10)])
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
func (s *server) etcdctl(stdin string, args ...string) ctlResult {
	t := s.t
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

// logWriter copies server output to a file and closes ready at the first
// line that contains readyLine.
type logWriter struct {
	mu      sync.Mutex
	f       *os.File
	partial []byte // an unterminated last line
	ready   chan struct{}
	seen    bool
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := w.f.Write(p); err != nil {
		return 0, err
	}
	if w.seen {
		return len(p), nil
	}
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		if bytes.Contains(w.partial[:i], []byte(readyLine)) {
			w.seen = true
			close(w.ready)
			w.partial = nil
			return len(p), nil
		}
		w.partial = w.partial[i+1:]
	}
	w.partial = bytes.Clone(w.partial)
	return len(p), nil
}

// hexID formats a member ID the way etcdctl prints it.
func hexID(id uint64) string { return strconv.FormatUint(id, 16) }
