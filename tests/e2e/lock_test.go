package e2e

import (
	"context"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// ctlProc is an etcdctl process running in the background.
type ctlProc struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{} // closed when the process exited; then err is set
	err  error
}

func startCtl(t *testing.T, s *server, args ...string) *ctlProc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, binaries.etcdctl, append([]string{"--endpoints=" + s.endpoint}, args...)...)
	b := &ctlProc{cmd: cmd, out: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout = b.out
	cmd.Stderr = b.out
	require.NoError(t, cmd.Start())
	go func() { b.err = cmd.Wait(); close(b.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-b.done
	})
	return b
}

// waitOutput polls until the output matches re.
func (b *ctlProc) waitOutput(t *testing.T, re *regexp.Regexp) string {
	t.Helper()
	deadline := time.Now().Add(opTimeout)
	for !re.MatchString(b.out.String()) {
		require.True(t, time.Now().Before(deadline), "output %q does not match %s", b.out.String(), re)
		time.Sleep(20 * time.Millisecond)
	}
	return b.out.String()
}

func (b *ctlProc) interrupt(t *testing.T) {
	t.Helper()
	require.NoError(t, b.cmd.Process.Signal(syscall.SIGINT))
	select {
	case <-b.done:
	case <-time.After(opTimeout):
		t.Fatal("etcdctl did not exit after SIGINT")
	}
}

// waitKeys polls until prefix holds n keys.
func waitKeys(t *testing.T, s *server, prefix string, n int) {
	t.Helper()
	deadline := time.Now().Add(opTimeout)
	for {
		r := s.etcdctl(t, "", "get", prefix, "--prefix", "--count-only", "-w", "fields")
		if strings.Contains(r.stdout, "\"Count\" : "+itoa(n)+"\n") {
			return
		}
		require.True(t, time.Now().Before(deadline), "%s has not %d keys: %s", prefix, n, r.stdout)
		time.Sleep(20 * time.Millisecond)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestEtcdctlLock: etcdctl lock, built on leases, revisions and watch
// (clientv3 concurrency.Mutex): a waiter queues behind the holder and gets
// the lock when the holder releases it. Compat: outputs as etcd v3.7.3.
func TestEtcdctlLock(t *testing.T) {
	s := startServer(t)
	// The lock key's revision is the fencing token (ETCD_LOCK_REV).
	r := s.etcdctl(t, "", "lock", "mylock", "--", "sh", "-c", "echo key=${ETCD_LOCK_KEY%/*} rev=$ETCD_LOCK_REV")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "key=mylock rev=2\n", r.stdout)

	holder := startCtl(t, s, "lock", "mylock2")
	holder.waitOutput(t, regexp.MustCompile(`^mylock2/[0-9a-f]+\n\n$`))
	waiter := startCtl(t, s, "lock", "mylock2", "--", "echo", "acquired")
	waitKeys(t, s, "mylock2/", 2) // queued behind the holder
	require.Empty(t, waiter.out.String())
	holder.interrupt(t)
	select {
	case <-waiter.done:
		require.NoError(t, waiter.err)
	case <-time.After(opTimeout):
		t.Fatal("waiter did not get the lock")
	}
	require.Equal(t, "acquired\n", waiter.out.String())
	waitKeys(t, s, "mylock2/", 0)
}

// TestEtcdctlElect: etcdctl elect (clientv3 concurrency.Election): a
// second candidate waits; observers see each leader's proposal.
func TestEtcdctlElect(t *testing.T) {
	s := startServer(t)
	first := startCtl(t, s, "elect", "myelect", "val1")
	first.waitOutput(t, regexp.MustCompile(`^myelect/[0-9a-f]+\nval1\n$`))
	observer := startCtl(t, s, "elect", "-l", "myelect")
	observer.waitOutput(t, regexp.MustCompile(`^myelect/[0-9a-f]+\nval1\n$`))
	second := startCtl(t, s, "elect", "myelect", "val2")
	waitKeys(t, s, "myelect/", 2)
	require.Empty(t, second.out.String())
	first.interrupt(t)
	second.waitOutput(t, regexp.MustCompile(`^myelect/[0-9a-f]+\nval2\n$`))
	observer.waitOutput(t, regexp.MustCompile(`^myelect/[0-9a-f]+\nval1\nmyelect/[0-9a-f]+\nval2\n$`))
}
