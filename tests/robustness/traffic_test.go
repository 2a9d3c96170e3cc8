package robustness

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

const (
	keyPrefix   = "kv/"
	leasePrefix = "lease/"
	numKeys     = 10
	opTimeout   = 2 * time.Second
)

// trafficConfig says which kinds of requests a run sends.
type trafficConfig struct {
	name     string
	clients  int  // KV clients
	lease    bool // lease grant + attached keys + revoke
	watch    bool // watchers from random revisions, and one from revision 1
	compact  bool // periodic compactions
	watchers int
}

var trafficKinds = []trafficConfig{
	{name: "kv", clients: 6},
	{name: "kv-lease", clients: 5, lease: true},
	{name: "kv-watch-compact", clients: 5, watch: true, compact: true, watchers: 3},
}

var allTraffic = trafficConfig{name: "all", clients: 5, lease: true, watch: true, compact: true, watchers: 2}

func kvKey(i int) string { return fmt.Sprintf("%s%d", keyPrefix, i) }

// traffic drives a cluster and records every operation.
type traffic struct {
	cfg       trafficConfig
	h         *history
	endpoints []string
	seed      uint64
	log       func(string, ...any)
	lastRev   atomic.Int64 // highest revision seen in any response
	compacted atomic.Int64 // highest revision compacted with success

	mu         sync.Mutex
	violations []string
	notes      map[string]bool
	sessions   []*watchSession

	wg       sync.WaitGroup // request clients
	watchWG  sync.WaitGroup // watchers
	finalRev chan int64     // closed after the final revision is set, for watchers
	final    atomic.Int64
	clients  []*clientv3.Client
}

func newTraffic(cfg trafficConfig, endpoints []string, seed uint64, logf func(string, ...any)) *traffic {
	return &traffic{cfg: cfg, h: newHistory(), endpoints: endpoints, seed: seed, log: logf,
		notes: map[string]bool{}, finalRev: make(chan int64)}
}

func (tr *traffic) violation(format string, args ...any) {
	tr.mu.Lock()
	tr.violations = append(tr.violations, fmt.Sprintf(format, args...))
	tr.mu.Unlock()
}

// note logs a message once per run.
func (tr *traffic) note(msg string) {
	tr.mu.Lock()
	seen := tr.notes[msg]
	tr.notes[msg] = true
	tr.mu.Unlock()
	if !seen {
		tr.log("note: %s", msg)
	}
}

func (tr *traffic) seeRev(rev int64) {
	for {
		cur := tr.lastRev.Load()
		if rev <= cur || tr.lastRev.CompareAndSwap(cur, rev) {
			return
		}
	}
}

// client returns a new client: even ids over every endpoint, odd ids on
// one member only (so a fault on that member shows as unknown outcomes).
func (tr *traffic) client(id int) (*clientv3.Client, string, error) {
	eps := tr.endpoints
	member := ""
	if id%2 == 1 && len(eps) > 1 {
		member = eps[id%len(eps)]
		eps = []string{member}
	} else if len(eps) > 1 {
		eps = append(append([]string(nil), eps[id%len(eps):]...), eps[:id%len(eps)]...)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, "", err
	}
	tr.mu.Lock()
	tr.clients = append(tr.clients, cli)
	tr.mu.Unlock()
	return cli, member, nil
}

// start runs the traffic until ctx is done.
func (tr *traffic) start(ctx context.Context) error {
	for i := range tr.cfg.clients {
		cli, member, err := tr.client(i)
		if err != nil {
			return err
		}
		rng := rand.New(rand.NewPCG(tr.seed, uint64(i)))
		tr.wg.Go(func() { tr.kvClient(ctx, i, cli, member, rng) })
	}
	id := tr.cfg.clients
	if tr.cfg.lease {
		cli, _, err := tr.client(0)
		if err != nil {
			return err
		}
		rng := rand.New(rand.NewPCG(tr.seed, uint64(id)))
		cid := id
		tr.wg.Go(func() { tr.leaseClient(ctx, cid, cli, rng) })
		id++
	}
	if tr.cfg.compact {
		cli, _, err := tr.client(0)
		if err != nil {
			return err
		}
		rng := rand.New(rand.NewPCG(tr.seed, uint64(id)))
		cid := id
		tr.wg.Go(func() { tr.compactClient(ctx, cid, cli, rng) })
		id++
	}
	if tr.cfg.watch {
		// One watcher from revision 1 to the end: the revision log.
		cli, _, err := tr.client(0)
		if err != nil {
			return err
		}
		tr.watchWG.Go(func() { tr.watchFull(ctx, cli) })
		for w := range tr.cfg.watchers {
			cli, _, err := tr.client(w)
			if err != nil {
				return err
			}
			rng := rand.New(rand.NewPCG(tr.seed, uint64(id)))
			wid := w + 1
			tr.watchWG.Go(func() { tr.watchRandom(ctx, wid, cli, rng) })
			id++
		}
	}
	return nil
}

// wait waits until every request client has stopped (after ctx ended).
func (tr *traffic) wait() { tr.wg.Wait() }

// finish sets the final revision for the watchers, waits for them and
// closes every client.
func (tr *traffic) finish(finalRev int64) {
	tr.final.Store(finalRev)
	close(tr.finalRev)
	tr.watchWG.Wait()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, c := range tr.clients {
		c.Close()
	}
}

// kvClient sends one request at a time: puts, linearizable and
// serializable gets and ranges, deletes and compare-and-set txns over a
// few keys, with unique values.
func (tr *traffic) kvClient(ctx context.Context, id int, cli *clientv3.Client, member string, rng *rand.Rand) {
	seq := 0
	known := map[string]string{} // last value this client saw per key
	for ctx.Err() == nil {
		key := kvKey(rng.IntN(numKeys))
		o := Op{Client: id, Key: key, Member: member}
		r := rng.IntN(100)
		opCtx, cancel := context.WithTimeout(ctx, opTimeout)
		o.Call = tr.h.now()
		var err error
		switch {
		case r < 30:
			seq++
			o.Kind, o.Value = opPut, fmt.Sprintf("c%d-%d", id, seq)
			var resp *clientv3.PutResponse
			if resp, err = cli.Put(opCtx, key, o.Value); err == nil {
				o.Rev = resp.Header.Revision
				known[key] = o.Value
			}
		case r < 45, r < 55:
			o.Kind = opGet
			var opts []clientv3.OpOption
			if r >= 45 {
				o.Kind = opSGet
				opts = append(opts, clientv3.WithSerializable())
			}
			var resp *clientv3.GetResponse
			if resp, err = cli.Get(opCtx, key, opts...); err == nil {
				o.Rev = resp.Header.Revision
				if len(resp.Kvs) > 0 {
					o.Found, o.ReadValue, o.ModRev = true, string(resp.Kvs[0].Value), resp.Kvs[0].ModRevision
					known[key] = o.ReadValue
				}
			}
		case r < 65:
			o.Kind, o.Key = opRange, keyPrefix
			opts := []clientv3.OpOption{clientv3.WithPrefix()}
			if r >= 61 {
				o.Kind = opSRange
				opts = append(opts, clientv3.WithSerializable())
			}
			var resp *clientv3.GetResponse
			if resp, err = cli.Get(opCtx, keyPrefix, opts...); err == nil {
				o.Rev = resp.Header.Revision
				for _, kv := range resp.Kvs {
					o.KVs = append(o.KVs, KV{Key: string(kv.Key), Value: string(kv.Value), ModRev: kv.ModRevision})
				}
			}
		case r < 75:
			o.Kind = opDelete
			var resp *clientv3.DeleteResponse
			if resp, err = cli.Delete(opCtx, key); err == nil {
				o.Rev, o.Deleted = resp.Header.Revision, resp.Deleted
				delete(known, key)
			}
		default:
			seq++
			o.Kind, o.Value = opCAS, fmt.Sprintf("c%d-%d", id, seq)
			o.Expect = known[key]
			if o.Expect == "" {
				o.Expect = "never-written"
			}
			var resp *clientv3.TxnResponse
			resp, err = cli.Txn(opCtx).
				If(clientv3.Compare(clientv3.Value(key), "=", o.Expect)).
				Then(clientv3.OpPut(key, o.Value)).
				Else(clientv3.OpGet(key)).Commit()
			if err == nil {
				o.Rev, o.Succeeded = resp.Header.Revision, resp.Succeeded
				if resp.Succeeded {
					known[key] = o.Value
				} else if len(resp.Responses) == 1 {
					if rr := resp.Responses[0].GetResponseRange(); rr != nil && len(rr.Kvs) > 0 {
						o.Found, o.ReadValue, o.ModRev = true, string(rr.Kvs[0].Value), rr.Kvs[0].ModRevision
						known[key] = o.ReadValue
					}
				}
			}
		}
		cancel()
		o.Return = tr.h.now()
		o.Outcome = classify(err)
		if err != nil {
			o.Err = err.Error()
		} else {
			tr.seeRev(o.Rev)
		}
		tr.h.add(o)
		if err != nil {
			// Back off as a real client would: a member without a leader
			// answers at once, and a tight loop of unknown writes makes
			// the linearizability check explode.
			_ = pause(ctx, time.Duration(100+rng.IntN(200))*time.Millisecond)
		}
	}
}

// leaseClient grants a lease, attaches two keys, revokes it and checks
// with a linearizable read that the keys are gone.
func (tr *traffic) leaseClient(ctx context.Context, id int, cli *clientv3.Client, rng *rand.Rand) {
	seq := 0
	for ctx.Err() == nil {
		seq++
		o := Op{Client: id, Kind: opLease, Key: fmt.Sprintf("%s%d-%d/", leasePrefix, id, seq), Call: tr.h.now()}
		err := tr.leaseRound(ctx, cli, o.Key, rng.IntN(3)+1)
		o.Return = tr.h.now()
		o.Outcome = classify(err)
		if err != nil {
			o.Err = err.Error()
			if isUnimplemented(err) {
				// Both cairn and etcd serve Lease: a missing service is a
				// regression, not a reason to check less.
				tr.violation("lease traffic: the server answers Unimplemented (%v)", err)
				return
			}
		}
		tr.h.add(o)
	}
}

func (tr *traffic) leaseRound(ctx context.Context, c *clientv3.Client, prefix string, keys int) error {
	opCtx, cancel := context.WithTimeout(ctx, 2*opTimeout)
	defer cancel()
	lease, err := c.Grant(opCtx, 60)
	if err != nil {
		return fmt.Errorf("grant: %w", err)
	}
	for i := range keys {
		if _, err := c.Put(opCtx, fmt.Sprintf("%s%d", prefix, i), "leased", clientv3.WithLease(lease.ID)); err != nil {
			return fmt.Errorf("put with lease: %w", err)
		}
	}
	if _, err := c.Revoke(opCtx, lease.ID); err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	resp, err := c.Get(opCtx, prefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("get after revoke: %w", err)
	}
	if len(resp.Kvs) > 0 {
		tr.violation("lease %x revoked with success, but a linearizable read at revision %d still finds %d of its keys (%s...)",
			lease.ID, resp.Header.Revision, len(resp.Kvs), resp.Kvs[0].Key)
	}
	return nil
}

// compactClient compacts a little behind the newest revision now and then.
func (tr *traffic) compactClient(ctx context.Context, id int, cli *clientv3.Client, rng *rand.Rand) {
	for {
		if pause(ctx, time.Duration(300+rng.IntN(700))*time.Millisecond) != nil {
			return
		}
		rev := tr.lastRev.Load() - int64(10+rng.IntN(40))
		if rev <= tr.compacted.Load() || rev < 2 {
			continue
		}
		o := Op{Client: id, Kind: opCompact, Rev: rev, Call: tr.h.now()}
		opCtx, cancel := context.WithTimeout(ctx, opTimeout)
		_, err := cli.Compact(opCtx, rev)
		cancel()
		o.Return = tr.h.now()
		o.Outcome = classify(err)
		if err != nil {
			o.Err = err.Error()
		} else {
			for {
				cur := tr.compacted.Load()
				if rev <= cur || tr.compacted.CompareAndSwap(cur, rev) {
					break
				}
			}
		}
		tr.h.add(o)
	}
}

// watchSession is one Watch call and everything it received.
type watchSession struct {
	Watcher   int     `json:"watcher"` // 0: the full watcher from revision 1
	Start     int64   `json:"start"`
	Events    []Event `json:"events"`
	Progress  int64   `json:"progress"`  // highest progress-notify revision
	Compacted int64   `json:"compacted"` // CompactRevision of a compacted error
	Err       string  `json:"err,omitempty"`
}

// Event is one watch event.
type Event struct {
	Rev    int64  `json:"rev"`
	Key    string `json:"k"`
	Delete bool   `json:"del,omitempty"`
	Value  string `json:"v,omitempty"`
	ModRev int64  `json:"mod"`
}

// end is the highest revision up to which the session saw every event.
func (s *watchSession) end() int64 {
	e := s.Progress
	if n := len(s.Events); n > 0 && s.Events[n-1].Rev > e {
		e = s.Events[n-1].Rev
	}
	return e
}

func (tr *traffic) addSession(s *watchSession) {
	tr.mu.Lock()
	tr.sessions = append(tr.sessions, s)
	tr.mu.Unlock()
}

// watch runs one session from start until wctx ends, the channel closes,
// or (after the traffic stopped) a progress notification confirms the
// final revision.
// It reports whether the server has no Watch service (a violation: both
// cairn and etcd serve it), after which the caller stops.
func (tr *traffic) watch(wctx context.Context, cli *clientv3.Client, s *watchSession) (missing bool) {
	tr.addSession(s)
	wctx = clientv3.WithRequireLeader(wctx)
	wctx, cancel := context.WithCancel(wctx)
	defer cancel()
	ch := cli.Watch(wctx, "", clientv3.WithPrefix(), clientv3.WithRev(s.Start), clientv3.WithProgressNotify())
	finalc := tr.finalRev
	var progressTick <-chan time.Time
	var deadline <-chan time.Time
	for {
		select {
		case resp, ok := <-ch:
			if !ok {
				return false
			}
			if err := resp.Err(); err != nil {
				tr.mu.Lock()
				s.Err = err.Error()
				s.Compacted = resp.CompactRevision
				tr.mu.Unlock()
				if isUnimplemented(err) {
					tr.violation("watch traffic: the server answers Unimplemented (%s)", s.Err)
					return true
				}
				return false
			}
			tr.mu.Lock()
			if resp.IsProgressNotify() && resp.Header.Revision > s.Progress {
				s.Progress = resp.Header.Revision
			}
			for _, ev := range resp.Events {
				e := Event{Rev: ev.Kv.ModRevision, Key: string(ev.Kv.Key), ModRev: ev.Kv.ModRevision}
				if ev.Type == mvccpb.DELETE {
					e.Delete = true
				} else {
					e.Value = string(ev.Kv.Value)
				}
				s.Events = append(s.Events, e)
			}
			done := finalc == nil && s.end() >= tr.final.Load()
			tr.mu.Unlock()
			if len(resp.Events) > 0 {
				tr.seeRev(resp.Events[len(resp.Events)-1].Kv.ModRevision)
			}
			if done {
				return false
			}
		case <-finalc:
			// The traffic stopped: ask for progress until the final
			// revision is confirmed (bounded).
			finalc = nil
			t := time.NewTicker(300 * time.Millisecond)
			defer t.Stop()
			progressTick = t.C
			dt := time.NewTimer(15 * time.Second)
			defer dt.Stop()
			deadline = dt.C
			tr.mu.Lock()
			done := s.end() >= tr.final.Load()
			tr.mu.Unlock()
			if done {
				return false
			}
			_ = cli.RequestProgress(wctx)
		case <-progressTick:
			_ = cli.RequestProgress(wctx)
		case <-deadline:
			tr.note("a watcher did not confirm the final revision within 15s; its window ends at the last event it saw")
			return false
		}
	}
}

// watchFull watches every key from revision 1 until the end: the revision
// log the other checks replay. A session that ends early (its member lost
// the leader, say) is continued by a new one from the next revision.
func (tr *traffic) watchFull(ctx context.Context, cli *clientv3.Client) {
	start := int64(1)
	for {
		s := &watchSession{Watcher: 0, Start: start}
		if tr.watch(context.WithoutCancel(ctx), cli, s) {
			return
		}
		tr.mu.Lock()
		end, compacted := s.end(), s.Compacted
		tr.mu.Unlock()
		select {
		case <-tr.finalRev:
			return
		default:
		}
		if compacted > 0 {
			tr.note("the watcher from revision 1 fell behind a compaction; the revision log ends there")
			return
		}
		start = max(start, end+1)
		if pause(context.WithoutCancel(ctx), 100*time.Millisecond) != nil {
			return
		}
	}
}

// watchRandom opens watches from random revisions around the newest one,
// each for a random time.
func (tr *traffic) watchRandom(ctx context.Context, id int, cli *clientv3.Client, rng *rand.Rand) {
	for ctx.Err() == nil {
		last := tr.lastRev.Load()
		start := max(1, last-int64(rng.IntN(60))+5)
		s := &watchSession{Watcher: id, Start: start}
		d := time.Duration(500+rng.IntN(2500)) * time.Millisecond
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d)
		missing := tr.watch(wctx, cli, s)
		cancel()
		if missing {
			return
		}
	}
}
