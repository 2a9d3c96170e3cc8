// Command watchbench drives the watch benchmarks of bench/watch.sh against
// any etcd-v3-compatible server (etcd or cairn) over raw gRPC, so that the
// client does exactly the same work for both servers.
//
//	watchbench latency -watchers 10000 -streams 100 -conns 10 -puts 50 -rate 5
//	watchbench idle -watchers 100000 -streams 100 -conns 10
//	watchbench slow -stalled 2 -slow 2 -slow-interval 100ms
//
// latency: N watchers on one key (spread over S streams on C connections,
// created pipelined, all confirmed before the first put), then P puts at R/s
// on another connection. Each put's value carries its sequence number; the
// latency of an event is the time from just before that put was sent to the
// moment the event was received. Prints one "RESULT" line.
//
// idle and slow create their watchers, print "READY" and hold them until
// SIGTERM/SIGINT (or stdin EOF with -stdin), then print a "RESULT" line.
// idle watches distinct keys that nothing writes (-prefix-watch: each as a
// prefix, i.e. range watchers). slow watches the whole key
// space on one stream per watcher and connection (64 KiB gRPC windows):
// "stalled" watchers never call Recv until the end, "slow" ones read one
// response per -slow-interval. At the end every watcher drains its stream
// until it has seen the server's current revision and the events are checked
// for order and gaps (every revision is expected: run it against puts only).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "latency":
		err = runLatency(os.Args[2:])
	case "idle":
		err = runIdle(os.Args[2:])
	case "slow":
		err = runSlow(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "watchbench:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: watchbench latency|idle|slow [flags] (see -h of each)")
	os.Exit(2)
}

func dial(ep string, window int32) (*grpc.ClientConn, error) {
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32)),
	}
	if window > 0 {
		// A fixed window also turns off gRPC's BDP-driven window growth.
		opts = append(opts, grpc.WithInitialWindowSize(window), grpc.WithInitialConnWindowSize(window))
	}
	return grpc.NewClient("passthrough:///"+ep, opts...)
}

func dialN(ep string, n int) ([]*grpc.ClientConn, error) {
	conns := make([]*grpc.ClientConn, n)
	for i := range conns {
		c, err := dial(ep, 0)
		if err != nil {
			return nil, err
		}
		conns[i] = c
	}
	return conns, nil
}

// stream is one Watch stream with its watchers.
type stream struct {
	wc       pb.Watch_WatchClient
	created  int
	canceled int
}

// openStreams opens nStreams Watch streams round-robin over conns and
// creates keyFn(i) watchers (i = 0..n-1) spread evenly over them, pipelined.
// It returns once every watcher is confirmed created; the created responses
// are consumed here, later responses are the caller's.
func openStreams(ctx context.Context, conns []*grpc.ClientConn, nStreams, n int, req func(i int) *pb.WatchCreateRequest) ([]*stream, error) {
	streams := make([]*stream, nStreams)
	for i := range streams {
		wc, err := pb.NewWatchClient(conns[i%len(conns)]).Watch(ctx)
		if err != nil {
			return nil, fmt.Errorf("open stream %d: %w", i, err)
		}
		streams[i] = &stream{wc: wc}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*nStreams)
	for si, s := range streams {
		mine := 0
		for i := si; i < n; i += nStreams {
			mine++
		}
		wg.Add(2)
		go func() { // sender
			defer wg.Done()
			for i := si; i < n; i += nStreams {
				r := &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: req(i)}}
				if err := s.wc.Send(r); err != nil {
					errs <- fmt.Errorf("create: %w", err)
					return
				}
			}
		}()
		go func() { // receiver of the created responses
			defer wg.Done()
			for s.created < mine {
				resp, err := s.wc.Recv()
				if err != nil {
					errs <- fmt.Errorf("created responses: %w", err)
					return
				}
				if resp.Created {
					s.created++
					if resp.Canceled {
						s.canceled++
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	for _, s := range streams {
		if s.canceled > 0 {
			return nil, fmt.Errorf("%d watch creations refused", s.canceled)
		}
	}
	return streams, nil
}

// ---- latency ------------------------------------------------------------------

func runLatency(args []string) error {
	fs := flag.NewFlagSet("latency", flag.ExitOnError)
	ep := fs.String("endpoint", "127.0.0.1:2379", "server")
	watchers := fs.Int("watchers", 1, "watchers on the key")
	nStreams := fs.Int("streams", 1, "watch streams (watchers spread evenly)")
	nConns := fs.Int("conns", 1, "gRPC connections for the streams (the putter has its own)")
	puts := fs.Int("puts", 100, "puts")
	rate := fs.Float64("rate", 10, "puts per second")
	valSize := fs.Int("val-size", 256, "value size (>= 12)")
	key := fs.String("key", "watchbench-latency-key", "watched key")
	timeout := fs.Duration("timeout", 30*time.Second, "wait for the last events after the last put")
	_ = fs.Parse(args)
	if *nStreams > *watchers {
		*nStreams = *watchers
	}
	if *valSize < 12 {
		*valSize = 12
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conns, err := dialN(*ep, *nConns)
	if err != nil {
		return err
	}
	t0 := time.Now()
	streams, err := openStreams(ctx, conns, *nStreams, *watchers, func(int) *pb.WatchCreateRequest {
		return &pb.WatchCreateRequest{Key: []byte(*key)}
	})
	if err != nil {
		return err
	}
	createS := time.Since(t0).Seconds()

	sent := make([]atomic.Int64, *puts) // unix nanos just before put i was sent
	var received, unexpected atomic.Int64
	done := make(chan struct{})
	expect := int64(*watchers) * int64(*puts)
	lats := make([][]time.Duration, len(streams))
	var wg sync.WaitGroup
	for si, s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := make([]time.Duration, 0, s.created**puts)
			defer func() { lats[si] = l }()
			for {
				resp, err := s.wc.Recv()
				if err != nil {
					return
				}
				now := time.Now().UnixNano()
				for _, ev := range resp.Events {
					v := ev.Kv.Value
					seq, err := strconv.Atoi(string(v[:10]))
					if err != nil || seq < 0 || seq >= len(sent) || sent[seq].Load() == 0 {
						unexpected.Add(1)
						continue
					}
					l = append(l, time.Duration(now-sent[seq].Load()))
					if received.Add(1) == expect {
						close(done)
					}
				}
			}
		}()
	}

	pc, err := dial(*ep, 0)
	if err != nil {
		return err
	}
	kv := pb.NewKVClient(pc)
	pad := make([]byte, *valSize-10)
	for i := range pad {
		pad[i] = 'x'
	}
	if _, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte(*key)}); err != nil { // warm the connection
		return fmt.Errorf("range: %w", err)
	}
	putLat := make([]time.Duration, 0, *puts)
	interval := time.Duration(float64(time.Second) / *rate)
	start := time.Now()
	for i := 0; i < *puts; i++ {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		val := append([]byte(fmt.Sprintf("%010d", i)), pad...)
		st := time.Now()
		sent[i].Store(st.UnixNano())
		if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte(*key), Value: val}); err != nil {
			return fmt.Errorf("put: %w", err)
		}
		putLat = append(putLat, time.Since(st))
	}
	putsS := time.Since(start).Seconds()
	select {
	case <-done:
	case <-time.After(*timeout):
	}
	cancel()
	wg.Wait()
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	fmt.Printf("RESULT watchers=%d streams=%d conns=%d puts=%d rate=%g create_s=%.2f puts_s=%.2f events=%d expected=%d unexpected=%d "+
		"p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f avg_ms=%.3f put_p50_ms=%.3f put_p99_ms=%.3f\n",
		*watchers, len(streams), *nConns, *puts, *rate, createS, putsS, len(all), expect, unexpected.Load(),
		pct(all, 50), pct(all, 90), pct(all, 99), pct(all, 99.9), pct(all, 100), avg(all), pct(putLat, 50), pct(putLat, 99))
	if int64(len(all)) != expect {
		return fmt.Errorf("received %d of %d events", len(all), expect)
	}
	return nil
}

func pct(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return math.NaN()
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	i := int(math.Ceil(p/100*float64(len(d)))) - 1
	if i < 0 {
		i = 0
	}
	return float64(d[i]) / 1e6
}

func avg(d []time.Duration) float64 {
	if len(d) == 0 {
		return math.NaN()
	}
	var s time.Duration
	for _, x := range d {
		s += x
	}
	return float64(s) / float64(len(d)) / 1e6
}

// ---- idle / slow: hold watchers until told to stop -----------------------------

func waitStop(useStdin bool) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	eof := make(chan struct{})
	if useStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			close(eof)
		}()
	}
	select {
	case <-sig:
	case <-eof:
	}
	signal.Stop(sig)
}

func runIdle(args []string) error {
	fs := flag.NewFlagSet("idle", flag.ExitOnError)
	ep := fs.String("endpoint", "127.0.0.1:2379", "server")
	watchers := fs.Int("watchers", 100000, "watchers, one per distinct key")
	nStreams := fs.Int("streams", 100, "watch streams")
	nConns := fs.Int("conns", 10, "gRPC connections")
	prefix := fs.String("prefix", "/watchbench-idle/", "key prefix (keys are prefix + %07d)")
	ranged := fs.Bool("prefix-watch", false, "watch each key as a prefix (a range watcher) instead of a single key")
	useStdin := fs.Bool("stdin", false, "also stop at stdin EOF")
	_ = fs.Parse(args)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conns, err := dialN(*ep, *nConns)
	if err != nil {
		return err
	}
	t0 := time.Now()
	streams, err := openStreams(ctx, conns, *nStreams, *watchers, func(i int) *pb.WatchCreateRequest {
		key := []byte(fmt.Sprintf("%s%07d", *prefix, i))
		r := &pb.WatchCreateRequest{Key: key}
		if *ranged {
			end := append([]byte(nil), key...)
			end[len(end)-1]++ // the key's digits never end in 0xff
			r.RangeEnd = end
		}
		return r
	})
	if err != nil {
		return err
	}
	fmt.Printf("READY watchers=%d streams=%d create_s=%.2f\n", *watchers, len(streams), time.Since(t0).Seconds())
	var events atomic.Int64
	for _, s := range streams {
		go func() {
			for {
				resp, err := s.wc.Recv()
				if err != nil {
					return
				}
				events.Add(int64(len(resp.Events)))
			}
		}()
	}
	waitStop(*useStdin)
	fmt.Printf("RESULT watchers=%d events=%d\n", *watchers, events.Load())
	return nil
}

// slowWatcher is one whole-keyspace watcher on its own connection.
type slowWatcher struct {
	kind    string // "stalled" or "slow"
	s       *stream
	first   int64 // revision of the first event seen
	last    int64 // revision of the last event seen
	events  int64
	gaps    int64 // revisions skipped or repeated
	resps   int64
	drained bool
	err     error
}

func (w *slowWatcher) take(resp *pb.WatchResponse) {
	w.resps++
	for _, ev := range resp.Events {
		r := ev.Kv.ModRevision
		if w.first == 0 {
			w.first = r
		} else if r != w.last+1 {
			w.gaps++
		}
		w.last = r
		w.events++
	}
}

func runSlow(args []string) error {
	fs := flag.NewFlagSet("slow", flag.ExitOnError)
	ep := fs.String("endpoint", "127.0.0.1:2379", "server")
	stalled := fs.Int("stalled", 2, "watchers that never read until the end")
	slow := fs.Int("slow", 2, "watchers that read one response per -slow-interval")
	interval := fs.Duration("slow-interval", 100*time.Millisecond, "")
	window := fs.Int("window", 64<<10, "gRPC stream and connection window of the watchers' connections, bytes")
	drain := fs.Duration("drain-timeout", 60*time.Second, "at the end, how long to wait for every watcher to catch up")
	useStdin := fs.Bool("stdin", false, "also stop at stdin EOF")
	_ = fs.Parse(args)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var ws []*slowWatcher
	for i := 0; i < *stalled+*slow; i++ {
		c, err := dial(*ep, int32(*window))
		if err != nil {
			return err
		}
		ss, err := openStreams(ctx, []*grpc.ClientConn{c}, 1, 1, func(int) *pb.WatchCreateRequest {
			return &pb.WatchCreateRequest{Key: []byte{0}, RangeEnd: []byte{0}}
		})
		if err != nil {
			return err
		}
		kind := "stalled"
		if i >= *stalled {
			kind = "slow"
		}
		ws = append(ws, &slowWatcher{kind: kind, s: ss[0]})
	}
	fmt.Printf("READY stalled=%d slow=%d\n", *stalled, *slow)
	stop := make(chan struct{})
	var mu sync.Mutex // guards the slowWatchers while the slow readers run
	var wg sync.WaitGroup
	for _, w := range ws {
		if w.kind != "slow" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(*interval)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
				}
				resp, err := w.s.wc.Recv()
				mu.Lock()
				if err != nil {
					w.err = err
					mu.Unlock()
					return
				}
				w.take(resp)
				mu.Unlock()
			}
		}()
	}
	waitStop(*useStdin)
	close(stop)
	wg.Wait()
	mu.Lock()
	snap := make([]slowWatcher, len(ws))
	for i, w := range ws {
		snap[i] = *w
	}
	mu.Unlock()

	// Drain: every watcher reads as fast as it can until it has seen the
	// revision the server reports now.
	c, err := dial(*ep, 0)
	if err != nil {
		return err
	}
	rr, err := pb.NewKVClient(c).Range(ctx, &pb.RangeRequest{Key: []byte("watchbench-drain-probe")})
	if err != nil {
		return fmt.Errorf("range: %w", err)
	}
	target := rr.Header.Revision
	t0 := time.Now()
	dctx, dcancel := context.WithTimeout(ctx, *drain)
	defer dcancel()
	for _, w := range ws {
		if w.err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for w.last < target {
				type res struct {
					r   *pb.WatchResponse
					err error
				}
				ch := make(chan res, 1)
				go func() {
					r, err := w.s.wc.Recv()
					ch <- res{r, err}
				}()
				select {
				case <-dctx.Done():
					w.err = errors.New("drain timeout")
					return
				case x := <-ch:
					if x.err != nil {
						w.err = x.err
						return
					}
					w.take(x.r)
				}
			}
			w.drained = true
		}()
	}
	wg.Wait()
	drainS := time.Since(t0).Seconds()
	for i, w := range ws {
		errS := "none"
		if w.err != nil {
			errS = strconv.Quote(w.err.Error())
		}
		fmt.Printf("WATCHER %d kind=%s during_run_events=%d during_run_resps=%d final_events=%d first_rev=%d last_rev=%d target_rev=%d gaps=%d drained=%v err=%s\n",
			i, w.kind, snap[i].events, snap[i].resps, w.events, w.first, w.last, target, w.gaps, w.drained, errS)
	}
	bad := 0
	for _, w := range ws {
		if !w.drained || w.gaps > 0 {
			bad++
		}
	}
	fmt.Printf("RESULT watchers=%d target_rev=%d drain_s=%.2f bad=%d\n", len(ws), target, drainS, bad)
	if bad > 0 {
		return fmt.Errorf("%d watchers did not catch up without gaps", bad)
	}
	return nil
}
