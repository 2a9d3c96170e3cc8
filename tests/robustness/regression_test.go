package robustness

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Regression: a member removed from the cluster under read traffic closed
// its Pebble DB while the gRPC server still ran Range handlers, and
// crashed with "panic: pebble: closed" (found by the long matrix,
// 3m/kv-lease/member-replace). A removed member must stop serving first,
// then close its DB, and exit with status 0 (as etcd does).
func TestRemovedMemberUnderReads(t *testing.T) {
	skipShort(t)
	for i := range 2 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			dir := t.TempDir()
			logf := func(format string, args ...any) { t.Logf(format, args...) }
			c, err := startCluster(t, dir, clusterConfig{size: 3, snapshotCount: 100, catchUp: 20, heartbeatMs: 50, electionMs: 500}, logf)
			if err != nil {
				t.Fatal(err)
			}
			victim := c.members[2]
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			cli, err := clientv3.New(clientv3.Config{Endpoints: []string{victim.clientAddr}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			if _, err := c.admin[0].Put(ctx, "kv/0", "v"); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					for ctx.Err() == nil {
						rctx, rcancel := context.WithTimeout(ctx, time.Second)
						_, _ = cli.Get(rctx, "kv/", clientv3.WithPrefix(), clientv3.WithSerializable())
						rcancel()
					}
				})
			}
			defer wg.Wait()
			st := c.status(ctx, victim)
			if st.err != nil {
				t.Fatal(st.err)
			}
			if err := retryReconfig(ctx, func(ctx context.Context) error {
				_, err := c.admin[0].MemberRemove(ctx, st.id)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			timer := time.NewTimer(30 * time.Second)
			defer timer.Stop()
			select {
			case <-victim.proc.exited:
			case <-timer.C:
				t.Fatal("the removed member did not stop within 30s")
			}
			cancel()
			if rc := victim.proc.exitCode(); rc != 0 {
				b, _ := os.ReadFile(victim.logs[len(victim.logs)-1])
				t.Errorf("the removed member exited with %d, want 0; log tail:\n%s", rc, b[max(0, len(b)-4096):])
			}
			victim.proc = nil
			if err := c.crashReport(); err != nil {
				t.Error(err)
			}
		})
	}
}
