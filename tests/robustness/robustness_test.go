package robustness

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// scenario is one run: a cluster, a traffic mix, the faults to inject
// (in a random order, again and again until duration has passed; each at
// least once).
type scenario struct {
	name     string
	size     int
	traffic  trafficConfig
	faults   []fault
	duration time.Duration
}

// run is one scenario being executed.
type run struct {
	t       *testing.T
	sc      scenario
	dir     string
	seed    uint64
	rng     *rand.Rand
	c       *cluster
	tr      *traffic
	logMu   sync.Mutex
	logFile *os.File
	faults  int
	crashes int
	lin     porcupine.LinearizationInfo
	ops     []Op // the checked history (unknown writes settled where possible)
}

func (r *run) logf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.t.Log(msg)
	r.logMu.Lock()
	defer r.logMu.Unlock()
	if r.logFile != nil {
		fmt.Fprintf(r.logFile, "%s %s\n", time.Now().Format("15:04:05.000"), msg)
	}
}

// result is what one run counted.
type result struct {
	ops        int
	faults     int
	violations []string
}

// totals adds up every run of the test binary (printed by the long matrix).
var totals struct {
	mu                              sync.Mutex
	runs, ops, faults, crashes, bad int
}

func seedFor(name string) uint64 {
	if s := os.Getenv("ROBUSTNESS_SEED"); s != "" {
		if v, err := strconv.ParseUint(s, 10, 64); err == nil {
			return v
		}
	}
	return uint64(time.Now().UnixNano())
}

// runScenario runs sc and reports every violation as a test error, with
// the directory that keeps the evidence.
func runScenario(t *testing.T, sc scenario) result {
	seed := seedFor(sc.name)
	dir, err := os.MkdirTemp("", "cairn-robustness-"+strings.NewReplacer("/", "-", " ", "-").Replace(sc.name)+"-")
	if err != nil {
		t.Fatal(err)
	}
	r := &run{t: t, sc: sc, dir: dir, seed: seed, rng: rand.New(rand.NewPCG(seed, 0))}
	if r.logFile, err = os.Create(filepath.Join(dir, "run.log")); err != nil {
		t.Fatal(err)
	}
	var res result
	keep := os.Getenv("ROBUSTNESS_KEEP") != ""
	t.Cleanup(func() {
		r.logMu.Lock()
		r.logFile.Close()
		r.logFile = nil
		r.logMu.Unlock()
		if t.Failed() || len(res.violations) > 0 || keep {
			t.Logf("run %s (seed %d): history, visualisation and member logs kept in %s", sc.name, seed, dir)
			return
		}
		os.RemoveAll(dir)
	})
	var names []string
	for _, f := range sc.faults {
		names = append(names, f.name)
	}
	r.logf("run %s: %d member(s), traffic %s, faults %s, %v, seed %d (ROBUSTNESS_SEED=%d reproduces the choices), server %s",
		sc.name, sc.size, sc.traffic.name, strings.Join(names, ","), sc.duration, seed, seed, binaries.server)

	cfg := clusterConfig{size: sc.size, snapshotCount: 100, catchUp: 20, heartbeatMs: 50, electionMs: 500}
	r.c, err = startCluster(t, dir, cfg, r.logf)
	if err != nil {
		t.Fatalf("start cluster: %v (logs in %s)", err, dir)
	}
	r.tr = newTraffic(sc.traffic, r.c.endpoints(), seed, r.logf)
	// The history's call and return times count from here, not from the
	// run's first line: say so, to line operations up with member logs.
	r.logf("traffic: history.jsonl call/return times are nanoseconds since %s", r.tr.h.start.Format("15:04:05.000000"))
	ctx, stopTraffic := context.WithCancel(context.Background())
	defer stopTraffic()
	if err := r.tr.start(ctx); err != nil {
		t.Fatal(err)
	}
	var violations []string
	violations = append(violations, r.nemesis(ctx)...)
	stopTraffic()
	r.tr.wait()
	r.c.proxy.healAll()
	violations = append(violations, r.finish()...)
	res = result{ops: len(r.tr.h.ops), faults: r.faults, violations: violations}
	r.logf("run %s: %d operations, %d faults (%d crash points fired), %d violations", sc.name, res.ops, res.faults, r.crashes, len(violations))
	if len(violations) > 0 {
		r.saveEvidence()
		for _, v := range violations {
			t.Errorf("violation: %s", v)
		}
		t.Errorf("run %s (seed %d): %d violations; evidence kept in %s", sc.name, seed, len(violations), dir)
	}
	totals.mu.Lock()
	totals.runs++
	totals.ops += res.ops
	totals.faults += res.faults
	totals.crashes += r.crashes
	totals.bad += len(violations)
	totals.mu.Unlock()
	return res
}

// nemesis injects the scenario's faults until its duration has passed,
// waiting after each for the cluster to be healthy again.
func (r *run) nemesis(ctx context.Context) []string {
	start := time.Now()
	if pause(ctx, 500*time.Millisecond) != nil {
		return nil
	}
	pending := shuffled(r.rng, r.sc.faults)
	for len(r.sc.faults) > 0 && (len(pending) > 0 || time.Since(start) < r.sc.duration) {
		if len(pending) == 0 {
			pending = shuffled(r.rng, r.sc.faults)
		}
		f := pending[0]
		pending = pending[1:]
		r.faults++
		r.logf("fault %d: %s", r.faults, f.name)
		fctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err := f.inject(fctx, r)
		cancel()
		if err != nil {
			return []string{fmt.Sprintf("fault %s: %v", f.name, err)}
		}
		hctx, cancel := context.WithTimeout(ctx, healthWait)
		err = r.c.waitHealthy(hctx)
		cancel()
		if err != nil {
			return []string{fmt.Sprintf("the cluster did not recover within %v after %s: %v", healthWait, f.name, err)}
		}
		if pause(ctx, time.Duration(200+r.rng.IntN(600))*time.Millisecond) != nil {
			break
		}
	}
	if rest := r.sc.duration - time.Since(start); rest > 0 {
		_ = pause(ctx, rest)
	}
	return nil
}

// finish reads the final state, lets the watchers confirm it, checks that
// every member converged, and checks the history.
func (r *run) finish() []string {
	var out []string
	ctx, cancel := context.WithTimeout(context.Background(), 2*healthWait)
	defer cancel()
	if err := r.c.waitHealthy(ctx); err != nil {
		out = append(out, fmt.Sprintf("the cluster did not become healthy after the traffic: %v", err))
	}
	final, err := r.finalRead(ctx)
	if err != nil {
		out = append(out, fmt.Sprintf("final read: %v", err))
	}
	r.tr.finish(final.Rev)
	if final.Outcome == OK {
		out = append(out, r.checkMembers(ctx, final)...)
	}
	if err := r.c.unexpectedExit(); err != nil {
		out = append(out, err.Error())
	}
	if err := r.c.crashReport(); err != nil {
		out = append(out, err.Error())
	}
	ops := r.tr.h.snapshot()
	r.logStats(ops)
	out = append(out, r.tr.violations...)
	wv, log := checkWatches(r.tr.sessions, ops)
	out = append(out, wv...)
	if final.Outcome == OK {
		if n := resolveUnknown(ops, log, final.Rev); n > 0 {
			r.logf("settled %d writes of unknown outcome with the complete revision log", n)
		}
	}
	out = append(out, checkRevisionOrder(ops)...)
	out = append(out, checkLostWrites(ops)...)
	out = append(out, checkReadsAgainstLog(ops, log)...)
	if r.sc.traffic.watch && log.upTo > 0 {
		r.logf("revision log from the watcher at revision 1: complete to revision %d of %d", log.upTo, final.Rev)
	}
	res, info := checkLinearizable(ops, linearizabilityTimeout)
	r.lin, r.ops = info, ops
	switch res {
	case porcupine.Illegal:
		out = append(out, "porcupine: the KV history is not linearizable (see linearizability.html)")
	case porcupine.Unknown:
		r.logf("note: porcupine did not finish within %v; linearizability unknown (not counted as a violation)", linearizabilityTimeout)
	default:
		r.logf("porcupine: linearizable (%d operations)", len(ops))
	}
	kn, unk := r.c.proxy.identified()
	r.logf("proxy: %d peer connections from an identified member, %d from an unknown source", kn, unk)
	return out
}

var linearizabilityTimeout = time.Minute

// logStats logs what the traffic did, by kind and outcome.
func (r *run) logStats(ops []Op) {
	counts := map[string]map[Outcome]int{}
	var kinds []string
	for _, o := range ops {
		if counts[o.Kind] == nil {
			counts[o.Kind] = map[Outcome]int{}
			kinds = append(kinds, o.Kind)
		}
		counts[o.Kind][o.Outcome]++
	}
	slices.Sort(kinds)
	var parts []string
	for _, k := range kinds {
		c := counts[k]
		parts = append(parts, fmt.Sprintf("%s %d/%d/%d", k, c[OK], c[Failed], c[Unknown]))
	}
	events := 0
	for _, s := range r.tr.sessions {
		events += len(s.Events)
	}
	r.logf("operations (ok/failed/unknown): %s; watch: %d sessions, %d events", strings.Join(parts, ", "), len(r.tr.sessions), events)
}

// finalRead reads every key with a linearizable range, retried until it
// succeeds, and records it in the history.
func (r *run) finalRead(ctx context.Context) (Op, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: r.c.endpoints(), DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return Op{}, err
	}
	defer cli.Close()
	for {
		o := Op{Client: 999, Kind: opFinalRead, Key: keyPrefix, Call: r.tr.h.now()}
		rctx, cancel := context.WithTimeout(ctx, opTimeout)
		resp, err := cli.Get(rctx, keyPrefix, clientv3.WithPrefix())
		cancel()
		o.Return = r.tr.h.now()
		if err == nil {
			o.Outcome, o.Rev = OK, resp.Header.Revision
			for _, kv := range resp.Kvs {
				o.KVs = append(o.KVs, KV{Key: string(kv.Key), Value: string(kv.Value), ModRev: kv.ModRevision})
			}
			r.tr.h.add(o)
			return o, nil
		}
		if perr := pause(ctx, 200*time.Millisecond); perr != nil {
			return Op{Outcome: Failed}, fmt.Errorf("no successful final read: %w", err)
		}
	}
}

// checkMembers waits until every member has applied the final revision
// and they agree on the newest one (a lease that a failed lease round left
// behind may expire after the final read and add a revision), then
// compares, at the final revision, compact revision, HashKV and the keys
// they serve.
func (r *run) checkMembers(ctx context.Context, final Op) []string {
	ms := r.c.running()
	var last string
	for {
		var revs []string
		same := true
		var first int64 = -1
		for _, m := range ms {
			st := r.c.status(ctx, m)
			revs = append(revs, fmt.Sprintf("%s:%d", m.name, st.revision))
			if first < 0 {
				first = st.revision
			}
			if st.err != nil || st.revision < final.Rev || st.revision != first {
				same = false
			}
		}
		last = strings.Join(revs, " ")
		if same {
			break
		}
		if err := pause(ctx, 100*time.Millisecond); err != nil {
			return []string{fmt.Sprintf("members did not reach the final revision %d: %s", final.Rev, last)}
		}
	}
	var out []string
	type hk struct {
		hash    uint32
		compact int64
	}
	var first *hk
	var firstName string
	for _, m := range ms {
		hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := r.c.admin[m.idx-1].HashKV(hctx, m.clientAddr, final.Rev)
		cancel()
		if err != nil {
			out = append(out, fmt.Sprintf("HashKV on %s: %v", m.name, err))
			continue
		}
		h := &hk{resp.Hash, resp.CompactRevision}
		if first == nil {
			first, firstName = h, m.name
		} else if *h != *first {
			out = append(out, fmt.Sprintf("members differ at revision %d: %s has HashKV %d compact revision %d, %s has %d, %d",
				final.Rev, firstName, first.hash, first.compact, m.name, h.hash, h.compact))
		}
	}
	for _, m := range ms {
		rctx, cancel := context.WithTimeout(ctx, opTimeout)
		resp, err := r.c.admin[m.idx-1].Get(rctx, keyPrefix, clientv3.WithPrefix(), clientv3.WithSerializable(), clientv3.WithRev(final.Rev))
		cancel()
		if err != nil {
			out = append(out, fmt.Sprintf("serializable read on %s: %v", m.name, err))
			continue
		}
		var kvs []KV
		for _, kv := range resp.Kvs {
			kvs = append(kvs, KV{Key: string(kv.Key), Value: string(kv.Value), ModRev: kv.ModRevision})
		}
		if !slices.Equal(kvs, final.KVs) {
			out = append(out, fmt.Sprintf("%s serves %v at revision %d, the final read found %v", m.name, kvs, final.Rev, final.KVs))
		}
	}
	return out
}

// saveEvidence writes the history, the watch sessions and the porcupine
// visualisation next to the member logs.
func (r *run) saveEvidence() {
	if err := saveOps(r.ops, filepath.Join(r.dir, "history.jsonl")); err != nil {
		r.logf("save history: %v", err)
	}
	if b, err := json.MarshalIndent(r.tr.sessions, "", " "); err == nil {
		_ = os.WriteFile(filepath.Join(r.dir, "watch.json"), b, 0o644)
	}
	if err := porcupine.VisualizePath(kvModel, r.lin, filepath.Join(r.dir, "linearizability.html")); err != nil {
		r.logf("porcupine visualisation: %v", err)
	}
}

// TestRobustness is the short suite CI runs on every change: a few fault
// kinds on 3 members and on 1, all traffic kinds at once.
func TestRobustness(t *testing.T) {
	skipShort(t)
	if os.Getenv("ROBUSTNESS_LONG") != "" {
		t.Skip("ROBUSTNESS_LONG is set: TestRobustnessLong runs the matrix")
	}
	d := 4 * time.Second
	runs := []struct {
		name   string
		size   int
		faults []string
	}{
		{"3m-kill", 3, []string{"kill-leader", "kill-random"}},
		{"3m-partition", 3, []string{"partition-leader", "partition-ring", "pause-leader"}},
		{"3m-network", 3, []string{"network-latency", "network-drop", "partition-minority"}},
		{"3m-membership-snapshot", 3, []string{"member-replace", "snapshot-catchup"}},
		{"3m-crash", 3, []string{"crash-raft-after-sync", "crash-apply-after-commit", "crash-snapshot-after-state"}},
		{"1m-kill-crash", 1, []string{"kill-random", "crash-raft-before-sync", "crash-compact-after-batch"}},
	}
	for _, rc := range runs {
		t.Run(rc.name, func(t *testing.T) {
			sc := scenario{name: rc.name, size: rc.size, traffic: allTraffic, duration: d}
			for _, name := range rc.faults {
				f, ok := faultByName(name)
				if !ok {
					t.Fatalf("no fault %s", name)
				}
				if f.cairnOnly && !binaries.cairn {
					t.Logf("fault %s skipped: it needs cairn (crash points or source-identified links)", name)
					continue
				}
				sc.faults = append(sc.faults, f)
			}
			runScenario(t, sc)
		})
	}
}

// TestRobustnessLong is `make robustness`: every fault kind x every
// traffic kind (on 3 members, and on 1 where the fault applies), each for
// ROBUSTNESS_DURATION (default 10s). Select with ROBUSTNESS_FAULTS and
// ROBUSTNESS_TRAFFIC (comma-separated names).
func TestRobustnessLong(t *testing.T) {
	skipShort(t)
	if os.Getenv("ROBUSTNESS_LONG") == "" {
		t.Skip("set ROBUSTNESS_LONG=1 (make robustness)")
	}
	d := 10 * time.Second
	if s := os.Getenv("ROBUSTNESS_DURATION"); s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			t.Fatalf("ROBUSTNESS_DURATION: %v", err)
		}
	}
	linearizabilityTimeout = 5 * time.Minute
	pick := func(env, name string) bool {
		v := os.Getenv(env)
		return v == "" || slices.Contains(strings.Split(v, ","), name)
	}
	start := time.Now()
	defer func() {
		totals.mu.Lock()
		defer totals.mu.Unlock()
		msg := fmt.Sprintf("robustness matrix: %d runs, %d operations, %d faults (%d crash points fired), %d violations in %v (server %s)",
			totals.runs, totals.ops, totals.faults, totals.crashes, totals.bad, time.Since(start).Round(time.Second), binaries.server)
		t.Log(msg)
		fmt.Println(msg)
	}()
	for _, tc := range trafficKinds {
		for _, f := range allFaults {
			if !pick("ROBUSTNESS_TRAFFIC", tc.name) || !pick("ROBUSTNESS_FAULTS", f.name) {
				continue
			}
			for _, size := range []int{3, 1} {
				if size == 1 && (f.multi || strings.HasPrefix(f.name, "kill-leader")) {
					continue
				}
				name := fmt.Sprintf("%dm/%s/%s", size, tc.name, f.name)
				t.Run(name, func(t *testing.T) {
					if f.cairnOnly && !binaries.cairn {
						t.Skipf("fault %s needs cairn", f.name)
					}
					runScenario(t, scenario{name: name, size: size, traffic: tc, faults: []fault{f}, duration: d})
				})
			}
		}
	}
}
