package watch

// TestProperty drives a real mvcc.Store the way the applier does (batches
// of puts, deletes, txns and compactions, events gathered only while
// someone watches) with many watchers created at random revisions over
// random ranges, on streams whose queues are tiny and read at random
// moments, so watchers keep falling behind and catching up from the
// revision log. Each watcher's received stream must equal an independent
// model's history filtered to its range from its start revision: ordered,
// no gap, no duplicate, every revision in one response (unless fragmented),
// or a prefix of it ending in a compaction cancel.
//
// Reproduce a failure with go test ./internal/watch -run TestProperty -watch.seed=N.

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"

	"github.com/cairnkv/cairn/internal/mvcc"
	"github.com/cairnkv/cairn/internal/storage"
)

var (
	propSeed = flag.Uint64("watch.seed", 0, "TestProperty: run only this seed")
	propOps  = flag.Int("watch.ops", 600, "TestProperty: steps per seed")
)

func TestProperty(t *testing.T) {
	seeds := []uint64{*propSeed}
	if *propSeed == 0 {
		seeds = []uint64{rand.Uint64(), rand.Uint64(), rand.Uint64(), rand.Uint64()}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Logf("seed %d", seed)
			newProp(t, seed).run(*propOps)
		})
	}
}

var propKeys = []string{"a", "a/1", "a/2", "a/2/x", "b", "b/1", "c", "\x00", "z", "\xff", "\xff\xff"}

type version struct {
	create, mod, ver int64
	value            string
}

type prop struct {
	t     *testing.T
	rng   *rand.Rand
	db    *pebble.DB
	s     *mvcc.Store
	h     *Hub
	live  map[string]version
	hist  []*mvccpb.Event // every event ever, in order (the model)
	ws    []*propWatcher
	strms []*Stream
	stop  func()
	// holders maps each stream's watch IDs to the watcher holding them.
	holders map[*Stream]map[int64]*propWatcher
}

type propWatcher struct {
	stream    *Stream
	req       *pb.WatchCreateRequest
	id        int64
	from      int64 // first revision it must see
	created   bool
	refused   bool
	canceled  bool // by the test
	compacted int64
	got       []*mvccpb.Event
	partial   bool // inside a fragmented revision
}

func newProp(t *testing.T, seed uint64) *prop {
	lg := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	db, err := storage.Open(lg, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s, err := mvcc.NewStore(lg, db)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.RunCompactor(ctx) }()
	p := &prop{t: t, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b9)), db: db.DB, s: s, live: map[string]version{}}
	p.h = New(lg, s, s.Rev(), Config{
		MaxPending:      1 + p.rng.IntN(6),
		MaxPendingBytes: 1 + p.rng.IntN(400),
		CatchUpEvents:   1 + p.rng.IntN(8),
		FragmentBytes:   40,
		IsCompacted:     func(err error) bool { return err == mvcc.ErrCompacted },
	})
	p.stop = func() { cancel(); <-done; s.Close(); _ = db.Close() }
	t.Cleanup(p.stop)
	return p
}

func (p *prop) run(steps int) {
	for range 3 {
		p.strms = append(p.strms, p.h.NewStream())
	}
	for i := 0; i < steps; i++ {
		switch r := p.rng.IntN(20); {
		case r < 8:
			p.batch()
		case r < 12:
			p.newWatcher()
		case r < 13:
			p.cancelOne()
		case r < 14:
			p.compact()
		case r < 17:
			p.drain(p.strms[p.rng.IntN(len(p.strms))], 1+p.rng.IntN(4))
		default:
			p.catchUp(1 + p.rng.IntN(3))
		}
	}
	// Let everyone catch up completely.
	for range 10000 {
		for _, s := range p.strms {
			p.drain(s, 1<<30)
		}
		if !p.h.catchUp() && p.allSynced() {
			break
		}
	}
	for _, s := range p.strms {
		p.drain(s, 1<<30)
	}
	if !p.allSynced() {
		p.t.Fatalf("watchers still unsynced after draining everything")
	}
	p.check()
}

func (p *prop) allSynced() bool {
	p.h.mu.Lock()
	defer p.h.mu.Unlock()
	return len(p.h.mu.unsynced) == 0 || func() bool {
		for w := range p.h.mu.unsynced {
			if w.next <= p.h.mu.rev {
				return false
			}
		}
		return true
	}()
}

func (p *prop) key() string { return propKeys[p.rng.IntN(len(propKeys))] }

// batch applies 1-3 requests in one batch, as the applier does.
func (p *prop) batch() {
	b := p.db.NewIndexedBatch()
	defer b.Close()
	events, prev := p.h.Wants()
	if p.rng.IntN(4) == 0 {
		// As if a prev_kv watcher arrived after Wants: the batch lacks
		// previous versions and such watchers must catch up for them.
		prev = false
	}
	if err := p.s.BeginApply(events, prev); err != nil {
		p.t.Fatal(err)
	}
	defer p.s.EndApply()
	for range 1 + p.rng.IntN(3) {
		w := p.s.Write(b)
		rev := w.Rev() + 1
		switch r := p.rng.IntN(6); {
		case r < 3:
			p.put(w, rev, p.key())
		case r < 4:
			k := p.key()
			p.del(w, rev, k, "")
		case r < 5:
			k, end := p.key(), p.key()
			p.del(w, rev, k, end)
		default:
			// A txn: distinct keys, puts and deletes at one revision.
			keys := slices.Clone(propKeys)
			p.rng.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
			for _, k := range keys[:1+p.rng.IntN(3)] {
				if p.rng.IntN(3) == 0 {
					p.del(w, rev, k, "")
				} else {
					p.put(w, rev, k)
				}
			}
		}
		w.End()
	}
	p.s.StageRev(b)
	if err := b.Commit(pebble.NoSync); err != nil {
		p.t.Fatal(err)
	}
	p.s.Publish()
	evs, ok, withPrev := p.s.TakeEvents()
	p.h.Notify(p.s.Rev(), evs, ok, withPrev)
}

func (p *prop) put(w *mvcc.WriteTxn, rev int64, k string) {
	val := fmt.Sprintf("v%d-%d", rev, p.rng.IntN(1000))
	if _, err := w.Put([]byte(k), []byte(val), 0); err != nil {
		p.t.Fatal(err)
	}
	prev, ok := p.live[k]
	nv := version{create: rev, mod: rev, ver: 1, value: val}
	ev := &mvccpb.Event{Type: mvccpb.Event_PUT}
	if ok {
		nv.create, nv.ver = prev.create, prev.ver+1
		ev.PrevKv = prev.kv(k)
	}
	p.live[k] = nv
	ev.Kv = nv.kv(k)
	p.hist = append(p.hist, ev)
}

func (p *prop) del(w *mvcc.WriteTxn, rev int64, k, end string) {
	var e []byte
	if end != "" {
		e = []byte(end)
	}
	if _, err := w.DeleteRange([]byte(k), e); err != nil {
		p.t.Fatal(err)
	}
	var keys []string
	for lk := range p.live {
		var in bool
		switch {
		case end == "":
			in = lk == k
		case end == "\x00":
			in = lk >= k
		default:
			in = lk >= k && lk < end
		}
		if in {
			keys = append(keys, lk)
		}
	}
	sort.Strings(keys)
	for _, lk := range keys {
		p.hist = append(p.hist, &mvccpb.Event{Type: mvccpb.Event_DELETE, Kv: &mvccpb.KeyValue{Key: []byte(lk), ModRevision: rev}, PrevKv: p.live[lk].kv(lk)})
		delete(p.live, lk)
	}
}

func (v version) kv(k string) *mvccpb.KeyValue {
	kv := &mvccpb.KeyValue{Key: []byte(k), CreateRevision: v.create, ModRevision: v.mod, Version: v.ver}
	if v.value != "" {
		kv.Value = []byte(v.value)
	}
	return kv
}

func (p *prop) compact() {
	rev := p.s.CompactRev() + 1 + p.rng.Int64N(max(1, p.s.Rev()-p.s.CompactRev()))
	if rev > p.s.Rev() {
		return
	}
	b := p.db.NewIndexedBatch()
	defer b.Close()
	if _, err := p.s.Compact(b, rev); err != nil {
		p.t.Fatal(err)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		p.t.Fatal(err)
	}
	p.s.Publish()
}

func (p *prop) newWatcher() {
	s := p.strms[p.rng.IntN(len(p.strms))]
	req := &pb.WatchCreateRequest{Key: []byte(p.key()), PrevKv: p.rng.IntN(2) == 0, Fragment: p.rng.IntN(4) == 0}
	switch p.rng.IntN(6) {
	case 1:
		req.RangeEnd = []byte{0}
	case 2:
		req.RangeEnd = append(slices.Clone(req.Key), 0xff)
	case 3:
		req.RangeEnd = []byte(p.key())
	case 4, 5: // a prefix watch (indexed by prefix)
		req.RangeEnd = prefixEnd(req.Key)
	}
	switch p.rng.IntN(6) {
	case 0:
		req.Filters = []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NOPUT}
	case 1:
		req.Filters = []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NODELETE}
	}
	rev := p.h.Rev()
	from := rev + 1
	if p.rng.IntN(2) == 0 {
		lo := max(1, p.s.CompactRev()-1)
		req.StartRevision = lo + p.rng.Int64N(rev+3-lo)
		from = req.StartRevision
	}
	if p.rng.IntN(5) == 0 {
		req.WatchId = 100 + p.rng.Int64N(5) // maybe a duplicate
	}
	w := &propWatcher{stream: s, req: req, from: from, id: -2}
	p.ws = append(p.ws, w)
	s.Create(req)
}

func (p *prop) cancelOne() {
	var open []*propWatcher
	for _, w := range p.ws {
		if w.created && !w.refused && !w.canceled && w.compacted == 0 && !p.reusePending(w) {
			open = append(open, w)
		}
	}
	if len(open) == 0 {
		return
	}
	w := open[p.rng.IntN(len(open))]
	w.canceled = true
	w.stream.Cancel(w.id)
}

// reusePending reports whether a watcher asked for w's ID on w's stream
// and is not answered yet: w may be gone on the server already (compacted)
// and its ID taken by the new one, which a cancel would then hit.
func (p *prop) reusePending(w *propWatcher) bool {
	for _, o := range p.ws {
		if o.stream == w.stream && !o.created && o.req.WatchId == w.id {
			return true
		}
	}
	return false
}

func (p *prop) catchUp(n int) {
	for range n {
		if !p.h.catchUp() {
			return
		}
	}
}

// drain reads up to n queued responses of s without blocking.
func (p *prop) drain(s *Stream, n int) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for i := 0; i < n; i++ {
		resp, rev, err := s.Next(ctx)
		if err != nil {
			return
		}
		p.receive(s, resp, rev)
	}
}

// receive matches a response to its watcher. Created responses come in
// creation order per stream, so the first uncreated watcher of the stream
// is the one answered; later responses go to the current holder of their
// watch ID on the stream (an ID is reused only after its cancel response).
func (p *prop) receive(s *Stream, r *pb.WatchResponse, rev int64) {
	t := p.t
	if p.holders == nil {
		p.holders = map[*Stream]map[int64]*propWatcher{}
	}
	held := p.holders[s]
	if held == nil {
		held = map[int64]*propWatcher{}
		p.holders[s] = held
	}
	if r.Created {
		for _, w := range p.ws {
			if w.stream == s && !w.created {
				w.created = true
				if r.Canceled {
					w.refused = true
					if r.WatchId != -1 || r.CancelReason == "" {
						t.Fatalf("refusal %v", r)
					}
				} else {
					if held[r.WatchId] != nil {
						t.Fatalf("watch ID %d handed out while in use", r.WatchId)
					}
					w.id = r.WatchId
					held[w.id] = w
				}
				return
			}
		}
		t.Fatalf("created response with no watcher waiting: %v", r)
	}
	if r.WatchId == -1 {
		return // progress
	}
	w := held[r.WatchId]
	if w == nil {
		t.Fatalf("response for unknown watch %d: %v", r.WatchId, r)
	}
	if r.CompactRevision != 0 {
		if !r.Canceled || rev != 0 {
			t.Fatalf("compaction response %v at header revision %d", r, rev)
		}
		w.compacted = r.CompactRevision
		delete(held, w.id)
		return
	}
	if r.Canceled {
		if !w.canceled {
			t.Fatalf("watch %d canceled without a request: %v", w.id, r)
		}
		delete(held, w.id)
		return
	}
	for i, ev := range r.Events {
		if ev.Kv.ModRevision > rev {
			t.Fatalf("watch %d: event at %d in a response with header revision %d", w.id, ev.Kv.ModRevision, rev)
		}
		if i == 0 && len(w.got) > 0 && !w.partial && w.got[len(w.got)-1].Kv.ModRevision == ev.Kv.ModRevision {
			t.Fatalf("watch %d: revision %d split across responses without fragment", w.id, ev.Kv.ModRevision)
		}
	}
	w.partial = r.Fragment
	w.got = append(w.got, r.Events...)
}

func (p *prop) check() {
	t := p.t
	compact := p.s.CompactRev()
	for _, w := range p.ws {
		if !w.created {
			t.Fatalf("watch %v never got its created response", w.req)
		}
		if w.refused {
			continue
		}
		want := p.expect(w)
		got := w.got
		if w.canceled || w.compacted != 0 {
			if len(got) > len(want) {
				t.Fatalf("watch %d (%v): got %d events, more than the %d expected", w.id, w.req, len(got), len(want))
			}
			want = want[:len(got)]
		}
		if w.compacted != 0 {
			if next := w.from; len(got) > 0 {
				next = got[len(got)-1].Kv.ModRevision + 1
				if next >= w.compacted {
					t.Fatalf("watch %d canceled as compacted at %d though it had reached %d", w.id, w.compacted, next)
				}
			} else if next >= w.compacted {
				t.Fatalf("watch %d from %d canceled as compacted at %d", w.id, w.from, w.compacted)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("watch %d (%+v from %d): got %d events, want %d\ngot  %v\nwant %v", w.id, w.req, w.from, len(got), len(want), got, want)
		}
		for i := range got {
			g, e := got[i], want[i]
			if g.Kv.ModRevision <= compact && g.PrevKv == nil && e.PrevKv != nil {
				// The previous version may be compacted away.
				e = &mvccpb.Event{Type: e.Type, Kv: e.Kv}
			}
			if !proto.Equal(g, e) {
				t.Fatalf("watch %d (%+v from %d): event %d = %v, want %v", w.id, w.req, w.from, i, g, e)
			}
		}
	}
}

// expect is the model's answer for w: its range and filters over the
// history from its start revision.
func (p *prop) expect(w *propWatcher) []*mvccpb.Event {
	key, end := w.req.Key, w.req.RangeEnd
	if len(key) == 0 {
		key = []byte{0}
	}
	in := func(k []byte) bool {
		switch {
		case len(end) == 0:
			return bytes.Equal(k, key)
		case len(end) == 1 && end[0] == 0:
			return bytes.Compare(k, key) >= 0
		default:
			return bytes.Compare(k, key) >= 0 && bytes.Compare(k, end) < 0
		}
	}
	var out []*mvccpb.Event
	for _, ev := range p.hist {
		if ev.Kv.ModRevision < w.from || !in(ev.Kv.Key) {
			continue
		}
		if slices.Contains(w.req.Filters, pb.WatchCreateRequest_NOPUT) && ev.Type == mvccpb.Event_PUT ||
			slices.Contains(w.req.Filters, pb.WatchCreateRequest_NODELETE) && ev.Type == mvccpb.Event_DELETE {
			continue
		}
		if !w.req.PrevKv {
			ev = &mvccpb.Event{Type: ev.Type, Kv: ev.Kv}
		}
		out = append(out, ev)
	}
	return out
}
