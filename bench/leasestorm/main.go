// Command leasestorm measures how an etcd-compatible server takes a lease
// expiry storm: it grants many leases (each with one key) in a burst, so
// that they expire within a few seconds of each other, measures client put
// throughput before the expiry (steady) and while the leases are being
// revoked (storm), and how long the revocations take. bench/run.sh runs it
// against etcd and cairn (test lease-storm).
//
//	go run ./bench/leasestorm --endpoints=127.0.0.1:2379 --leases=100000
//
// It prints key=value lines (see the end of main).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func main() {
	var (
		endpoints = flag.String("endpoints", "127.0.0.1:2379", "comma-separated client endpoints")
		leases    = flag.Int("leases", 100000, "leases to grant (one key each)")
		ttl       = flag.Int64("ttl", 90, "lease TTL in seconds; must outlast the grants, the settle time and the steady phase")
		settle    = flag.Duration("settle", 3*time.Second, "least pause between the grants and the steady phase")
		granters  = flag.Int("granters", 200, "concurrent grant+put workers")
		writers   = flag.Int("writers", 100, "concurrent put workers during the steady and storm phases")
		conns     = flag.Int("conns", 10, "gRPC connections (clients) shared by the workers")
		phase     = flag.Duration("phase", 10*time.Second, "length of the steady and of the measured storm phase")
		maxDrain  = flag.Duration("max-drain", 300*time.Second, "give up waiting for the revocations after this long")
	)
	flag.Parse()
	eps := strings.Split(*endpoints, ",")
	clis := make([]*clientv3.Client, *conns)
	for i := range clis {
		c, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			log.Fatal(err)
		}
		defer c.Close()
		clis[i] = c
	}
	ctx := context.Background()

	// 1. Grant the leases, each with one key, as fast as the server goes.
	grantStart := time.Now()
	var next atomic.Int64
	var grantErrs atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < *granters; w++ {
		cli := clis[w%len(clis)]
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(*leases) {
					return
				}
				l, err := cli.Grant(ctx, *ttl)
				if err == nil {
					_, err = cli.Put(ctx, fmt.Sprintf("lease-storm/%07d", i), "x", clientv3.WithLease(l.ID))
				}
				if err != nil {
					grantErrs.Add(1)
				}
			}
		})
	}
	wg.Wait()
	grantDur := time.Since(grantStart)
	log.Printf("granted %d leases (+1 key each) in %v (%d errors)", *leases, grantDur, grantErrs.Load())
	firstExpiry := grantStart.Add(time.Duration(*ttl) * time.Second)
	if time.Until(firstExpiry) < *settle+*phase+2*time.Second {
		log.Fatalf("the grants took %v: no time left for a %v steady phase before the first lease expires; raise --ttl", grantDur, *phase)
	}
	// The steady phase ends 2 s before the first expiry, so that the
	// server has digested the grant burst (flushes, compactions) as it has
	// when the storm starts.
	time.Sleep(time.Until(firstExpiry.Add(-*phase - 2*time.Second)))

	// 2. Steady: puts while no lease expires.
	steady := runWriters(clis, *writers, *phase, "steady", nil)
	log.Printf("steady: %.0f puts/s, p99 %.1f ms", steady.qps(), steady.p99())

	// 3. Wait for the storm: the first key to disappear.
	count := func() int64 {
		r, err := clis[0].Get(ctx, "lease-storm/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return -1
		}
		return r.Count
	}
	for c := count(); c == int64(*leases)-grantErrs.Load() || c < 0; c = count() {
		time.Sleep(100 * time.Millisecond)
	}
	stormStart := time.Now()
	log.Printf("first expiries %v after the first grant", stormStart.Sub(grantStart).Round(time.Millisecond))

	// 4. Storm: puts while the leases are revoked. The remaining keys are
	// counted only before and after (a count scans them all, which would
	// load the server during the measurement).
	before := count()
	storm := runWriters(clis, *writers, *phase, "storm", nil)
	after := count()
	log.Printf("storm: %.0f puts/s, p99 %.1f ms; %d leases revoked during it (%.0f/s)",
		storm.qps(), storm.p99(), before-after, float64(before-after)/storm.dur.Seconds())

	// 5. Drain: until every lease's key is gone.
	left := count()
	for left != 0 && time.Since(stormStart) < *maxDrain {
		time.Sleep(250 * time.Millisecond)
		left = count()
	}
	drain := time.Since(stormStart)
	fmt.Printf("leases=%d\nttl_s=%d\ngrant_s=%.2f\ngrant_errors=%d\n", *leases, *ttl, grantDur.Seconds(), grantErrs.Load())
	fmt.Printf("steady_qps=%.0f\nsteady_p99_ms=%.2f\nsteady_errors=%d\n", steady.qps(), steady.p99(), steady.errs)
	fmt.Printf("storm_qps=%.0f\nstorm_p99_ms=%.2f\nstorm_errors=%d\n", storm.qps(), storm.p99(), storm.errs)
	fmt.Printf("storm_over_steady=%.2f\n", storm.qps()/steady.qps())
	fmt.Printf("drain_s=%.1f\nleft_after_drain=%d\nrevoke_rate=%.0f\n", drain.Seconds(), left, float64(int64(*leases)-left)/drain.Seconds())
	if left != 0 {
		os.Exit(3)
	}
}

type result struct {
	n    int
	errs int
	dur  time.Duration
	lats []time.Duration
}

func (r result) qps() float64 { return float64(r.n) / r.dur.Seconds() }
func (r result) p99() float64 {
	if len(r.lats) == 0 {
		return 0
	}
	slices.Sort(r.lats)
	return float64(r.lats[len(r.lats)*99/100]) / float64(time.Millisecond)
}

// runWriters runs n put workers for d and calls tick about every 500 ms.
func runWriters(clis []*clientv3.Client, n int, d time.Duration, prefix string, tick func()) result {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	val := strings.Repeat("v", 256)
	var mu sync.Mutex
	var res result
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < n; w++ {
		cli := clis[w%len(clis)]
		wg.Go(func() {
			var lats []time.Duration
			errs := 0
			for i := 0; ctx.Err() == nil; i++ {
				t0 := time.Now()
				_, err := cli.Put(ctx, fmt.Sprintf("w-%s/%03d/%06d", prefix, w, i%100000), val)
				if ctx.Err() != nil {
					break
				}
				if err != nil {
					errs++
					continue
				}
				lats = append(lats, time.Since(t0))
			}
			mu.Lock()
			res.n += len(lats)
			res.errs += errs
			res.lats = append(res.lats, lats...)
			mu.Unlock()
		})
	}
	if tick != nil {
		t := time.NewTicker(500 * time.Millisecond)
	loop:
		for {
			select {
			case <-t.C:
				tick()
			case <-ctx.Done():
				break loop
			}
		}
		t.Stop()
	}
	wg.Wait()
	res.dur = time.Since(start)
	return res
}
