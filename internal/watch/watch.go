// Package watch owns the fan-out of MVCC change events to watchers: the
// registry of every watcher of a member, the delivery of each applied
// batch's events to the watchers that are caught up ("synced"), and the
// catch-up of the others from the revision log.
//
// Guarantees (etcd's): a watcher receives the events of its range in
// revision order, each exactly once, with no gap, and all events of one
// revision in one response. A watcher whose start revision has been
// compacted, or that fell behind compaction, is canceled with the compacted
// revision.
//
// This package must never block the applier: Notify only appends to bounded
// per-stream queues, and a watcher whose stream queue is full is moved to
// catch-up, which replays the revision log from its next revision once the
// client reads again. Memory therefore does not grow with a slow reader.
// It never writes to storage.
package watch

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

// Source is the revision log the hub replays for catching-up watchers
// (implemented by mvcc.Store).
type Source interface {
	Events(from, to int64, maxEvents, maxBytes int, prevKV bool) ([]*mvccpb.Event, int64, error)
	CompactRev() int64
}

// Cancel reasons etcd sends (server/storage/mvcc and v3rpc).
var (
	reasonCompacted   = rpctypes.ErrCompacted.Error()
	reasonEmptyRange  = "mvcc: watcher range is empty"
	reasonDuplicateID = "mvcc: duplicate watch ID provided on the WatchStream"
)

// Config tunes a Hub.
type Config struct {
	// ProgressInterval is how often watchers that asked for progress
	// notifications get one while idle (etcd: 10 minutes).
	ProgressInterval time.Duration
	// MaxPending and MaxPendingBytes bound the events (and their approximate
	// size) queued per stream; beyond them the stream's watchers fall back
	// to catch-up, which refills the queue only once the client has read
	// half of it. One revision's events are queued whole even when they
	// alone exceed the bounds (if the queue holds no events). Defaults
	// 1024 events, 4 MiB.
	MaxPending      int
	MaxPendingBytes int
	// CatchUpEvents bounds the events read from the revision log in one
	// catch-up step. Default 1000.
	CatchUpEvents int
	// FragmentBytes is the size beyond which a watcher that asked for
	// fragmentation gets a revision's events split over several responses
	// (etcd: the max request size). Default 1.5 MiB.
	FragmentBytes int
	// IsCompacted tells whether err from Source means "compacted".
	IsCompacted func(error) bool
}

// Hub is the watcher registry of one member.
type Hub struct {
	lg  *zap.Logger
	src Source
	cfg Config

	mu struct {
		sync.Mutex
		rev int64 // highest revision handed to Notify
		// Synced watchers, indexed so that an event finds its watchers
		// without scanning them all: single-key watchers by key, prefix
		// watchers by prefix (with the set of prefix lengths in use),
		// other ranges in a list.
		keyed      map[string]map[*watcher]struct{}
		prefixed   map[string]map[*watcher]struct{}
		prefixLens map[int]int // prefix length -> distinct prefixes of that length
		ranged     map[*watcher]struct{}
		unsynced   map[*watcher]struct{}
		streams    map[*Stream]struct{}
	}
	watchers atomic.Int64
	// prevWatchers counts the watchers that asked for prev_kv.
	prevWatchers atomic.Int64
	kick         chan struct{}
	metrics      metrics
}

// New returns a hub whose watchers start at revisions after rev.
func New(lg *zap.Logger, src Source, rev int64, cfg Config) *Hub {
	if lg == nil {
		lg = zap.NewNop()
	}
	if cfg.ProgressInterval <= 0 {
		cfg.ProgressInterval = 10 * time.Minute
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 1024
	}
	if cfg.MaxPendingBytes <= 0 {
		cfg.MaxPendingBytes = 4 << 20
	}
	if cfg.CatchUpEvents <= 0 {
		cfg.CatchUpEvents = 1000
	}
	if cfg.FragmentBytes <= 0 {
		cfg.FragmentBytes = 3 << 19
	}
	if cfg.IsCompacted == nil {
		cfg.IsCompacted = func(error) bool { return false }
	}
	h := &Hub{lg: lg, src: src, cfg: cfg, kick: make(chan struct{}, 1)}
	h.mu.rev = rev
	h.mu.keyed = make(map[string]map[*watcher]struct{})
	h.mu.prefixed = make(map[string]map[*watcher]struct{})
	h.mu.prefixLens = make(map[int]int)
	h.mu.ranged = make(map[*watcher]struct{})
	h.mu.unsynced = make(map[*watcher]struct{})
	h.mu.streams = make(map[*Stream]struct{})
	h.metrics = newMetrics()
	return h
}

// Wants tells the applier what to gather for the next Notify: events only
// while anyone watches, and PUT events' previous versions only while a
// watcher asked for prev_kv (reading them is the expensive part of a
// write). A watcher created between Wants and Notify is caught up from the
// revision log where the batch lacks what it needs, so a false answer is
// never unsafe.
func (h *Hub) Wants() (events, prevKV bool) {
	return h.watchers.Load() > 0, h.prevWatchers.Load() > 0
}

// Rev is the highest revision notified.
func (h *Hub) Rev() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.mu.rev
}

// watcher is one watch. Fields other than next and the flags set at
// creation are guarded by Hub.mu.
type watcher struct {
	id       int64
	key, end []byte // end: nil = one key, "\x00" = every key >= key
	noPut    bool
	noDelete bool
	prevKV   bool
	fragment bool
	progress bool
	stream   *Stream

	// prefix: the range is exactly the keys starting with key.
	prefix bool

	synced bool
	// next is the next revision to deliver while unsynced; a synced
	// watcher's next revision is the hub's rev+1.
	next int64
	// sent records an event response since the last progress tick.
	sent bool
}

func (w *watcher) single() bool { return w.end == nil }

func (w *watcher) contains(key []byte) bool {
	if w.single() {
		return bytes.Equal(key, w.key)
	}
	if bytes.Compare(key, w.key) < 0 {
		return false
	}
	return len(w.end) == 1 && w.end[0] == 0 || bytes.Compare(key, w.end) < 0
}

// filter returns the events of evs this watcher wants, in order, shaped as
// it asked (without prev_kv unless requested). from bounds the revisions.
func (w *watcher) filter(evs []*mvccpb.Event, from int64) []*mvccpb.Event {
	var out []*mvccpb.Event
	for _, ev := range evs {
		if ev.Kv.ModRevision < from || !w.contains(ev.Kv.Key) {
			continue
		}
		if ev.Type == mvccpb.Event_PUT && w.noPut || ev.Type == mvccpb.Event_DELETE && w.noDelete {
			continue
		}
		if !w.prevKV && ev.PrevKv != nil {
			ev = &mvccpb.Event{Type: ev.Type, Kv: ev.Kv}
		}
		out = append(out, ev)
	}
	return out
}

// addSynced indexes w for Notify. h.mu held.
func (h *Hub) addSynced(w *watcher) {
	w.synced, w.next = true, 0
	switch {
	case w.single():
		addTo(h.mu.keyed, string(w.key), w)
	case w.prefix:
		if addTo(h.mu.prefixed, string(w.key), w) {
			h.mu.prefixLens[len(w.key)]++
		}
	default:
		h.mu.ranged[w] = struct{}{}
	}
}

// prefixEnd is the end of the range of keys starting with p (clientv3's
// GetPrefixRangeEnd), or nil if there is none (p is all 0xff).
func prefixEnd(p []byte) []byte {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] < 0xff {
			end := append([]byte(nil), p[:i+1]...)
			end[i]++
			return end
		}
	}
	return nil
}

// addTo adds w to idx[k] and reports whether the set is new.
func addTo(idx map[string]map[*watcher]struct{}, k string, w *watcher) bool {
	set := idx[k]
	if set == nil {
		set = make(map[*watcher]struct{})
		idx[k] = set
	}
	set[w] = struct{}{}
	return len(set) == 1
}

// removeFrom removes w from idx[k] and reports whether the set is gone.
func removeFrom(idx map[string]map[*watcher]struct{}, k string, w *watcher) bool {
	set := idx[k]
	if set == nil {
		return false
	}
	delete(set, w)
	if len(set) == 0 {
		delete(idx, k)
		return true
	}
	return false
}

// removeSynced drops w from the Notify index. h.mu held.
func (h *Hub) removeSynced(w *watcher) {
	switch {
	case w.single():
		removeFrom(h.mu.keyed, string(w.key), w)
	case w.prefix:
		if removeFrom(h.mu.prefixed, string(w.key), w) {
			if h.mu.prefixLens[len(w.key)]--; h.mu.prefixLens[len(w.key)] == 0 {
				delete(h.mu.prefixLens, len(w.key))
			}
		}
	default:
		delete(h.mu.ranged, w)
	}
	w.synced = false
}

// unsync moves w to catch-up from revision next. h.mu held.
func (h *Hub) unsync(w *watcher, next int64) {
	if w.synced {
		h.removeSynced(w)
	}
	w.next = next
	h.mu.unsynced[w] = struct{}{}
	h.metrics.slow.Set(float64(len(h.mu.unsynced)))
}

// remove forgets w entirely. h.mu held.
func (h *Hub) remove(w *watcher) {
	if w.synced {
		h.removeSynced(w)
	} else {
		delete(h.mu.unsynced, w)
		h.metrics.slow.Set(float64(len(h.mu.unsynced)))
	}
	h.watchers.Add(-1)
	if w.prevKV {
		h.prevWatchers.Add(-1)
	}
	h.metrics.watchers.Dec()
}

func (h *Hub) kickCatchUp() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// Notify delivers the changes of the revisions after the previous Notify up
// to rev. collected tells whether evs holds them; when it does not (nobody
// watched when the batch began, or the state was replaced by a snapshot),
// every synced watcher falls back to catch-up. withPrev tells whether PUT
// events carry their previous versions; when they do not, a prev_kv
// watcher with events in the batch falls back to catch-up, which reads
// them. Applier goroutine only; it never blocks on a watcher.
func (h *Hub) Notify(rev int64, evs []*mvccpb.Event, collected, withPrev bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	prev := h.mu.rev
	if rev <= prev {
		return
	}
	h.mu.rev = rev
	h.metrics.events.Add(float64(len(evs)))
	if !collected {
		var all []*watcher
		for _, idx := range []map[string]map[*watcher]struct{}{h.mu.keyed, h.mu.prefixed} {
			for _, set := range idx {
				for w := range set {
					all = append(all, w)
				}
			}
		}
		for w := range h.mu.ranged {
			all = append(all, w)
		}
		for _, w := range all {
			h.unsync(w, prev+1)
		}
		if len(h.mu.unsynced) > 0 {
			h.kickCatchUp()
		}
		return
	}
	if len(evs) > 0 {
		h.deliverKeyed(evs, prev, rev, withPrev)
		for w := range h.mu.ranged {
			if mine := w.filter(evs, prev+1); len(mine) > 0 {
				h.deliver(w, mine, prev, rev, withPrev)
			}
		}
	}
	if len(h.mu.unsynced) > 0 {
		h.kickCatchUp()
	}
}

// deliverKeyed hands evs to the synced single-key and prefix watchers. The
// events of one key (or prefix) are selected once and shared by every
// watcher of it that has no filters: 10,000 watchers on one key cost one
// response each, nothing more, and an event finds its prefix watchers with
// one map lookup per prefix length in use. h.mu held.
func (h *Hub) deliverKeyed(evs []*mvccpb.Event, prev, rev int64, withPrev bool) {
	type shared struct {
		set              map[*watcher]struct{}
		withPrev, noPrev []*mvccpb.Event
	}
	if len(h.mu.keyed) == 0 && len(h.mu.prefixed) == 0 {
		return
	}
	var order []*shared // in first-event order
	byKey := make(map[string]*shared)
	byPrefix := make(map[string]*shared)
	for _, ev := range evs {
		k := ev.Kv.Key
		if set := h.mu.keyed[string(k)]; len(set) > 0 {
			sh := byKey[string(k)]
			if sh == nil {
				sh = &shared{set: set}
				byKey[string(k)] = sh
				order = append(order, sh)
			}
			sh.withPrev = append(sh.withPrev, ev)
		}
		for l := range h.mu.prefixLens {
			if l > len(k) {
				continue
			}
			if set := h.mu.prefixed[string(k[:l])]; len(set) > 0 {
				sh := byPrefix[string(k[:l])]
				if sh == nil {
					sh = &shared{set: set}
					byPrefix[string(k[:l])] = sh
					order = append(order, sh)
				}
				sh.withPrev = append(sh.withPrev, ev)
			}
		}
	}
	for _, sh := range order {
		for w := range sh.set {
			var mine []*mvccpb.Event
			switch {
			case w.noPut || w.noDelete:
				mine = w.filter(sh.withPrev, prev+1)
			case w.prevKV:
				mine = sh.withPrev
			default:
				if sh.noPrev == nil {
					sh.noPrev = w.filter(sh.withPrev, prev+1)
				}
				mine = sh.noPrev
			}
			if len(mine) > 0 {
				h.deliver(w, mine, prev, rev, withPrev)
			}
		}
	}
}

// deliver queues a synced watcher's events of the revisions after prev up
// to rev, or moves it to catch-up when its queue is full or it needs
// previous versions the batch did not gather. h.mu held.
func (h *Hub) deliver(w *watcher, mine []*mvccpb.Event, prev, rev int64, withPrev bool) {
	if w.prevKV && !withPrev || !w.stream.out.pushEvents(w, mine, rev, h.cfg.FragmentBytes) {
		h.unsync(w, prev+1)
	}
}

// Run catches up unsynced watchers and sends progress notifications until
// ctx is done. The member owns the goroutine that calls it.
func (h *Hub) Run(ctx context.Context) {
	tick := time.NewTicker(h.cfg.ProgressInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.kick:
			for h.catchUp() {
				if ctx.Err() != nil {
					return
				}
			}
		case <-tick.C:
			h.progressTick()
		}
	}
}

// catchUp runs one catch-up step for the unsynced watchers whose streams
// have room and reports whether another step may make progress.
func (h *Hub) catchUp() bool {
	h.mu.Lock()
	target := h.mu.rev
	compact := h.src.CompactRev()
	var (
		ready  []*watcher
		from   int64
		prevKV bool
	)
	for w := range h.mu.unsynced {
		if w.next < compact {
			// etcd: the compacted response has no header revision.
			w.stream.out.pushControl(&pb.WatchResponse{WatchId: w.id, Canceled: true, CompactRevision: compact}, 0)
			w.stream.mu.Lock()
			delete(w.stream.mu.watchers, w.id)
			w.stream.mu.Unlock()
			h.remove(w)
			continue
		}
		if w.next > target {
			if w.next == target+1 {
				delete(h.mu.unsynced, w)
				h.addSynced(w)
			}
			continue // a future start revision waits
		}
		if !w.stream.out.hasRoom() {
			continue // the stream kicks catch-up again once drained
		}
		if from == 0 || w.next < from {
			from = w.next
		}
		prevKV = prevKV || w.prevKV
		ready = append(ready, w)
	}
	h.metrics.slow.Set(float64(len(h.mu.unsynced)))
	h.mu.Unlock()
	if len(ready) == 0 {
		return false
	}

	// A step reads no more than fits in a half-empty queue, so that what it
	// reads is queued, not read again.
	evs, last, err := h.src.Events(from, target, max(1, min(h.cfg.CatchUpEvents, h.cfg.MaxPending/2)), max(1, h.cfg.MaxPendingBytes/2), prevKV)
	if err != nil {
		if h.cfg.IsCompacted(err) {
			return true // compaction moved on: the next step cancels
		}
		h.lg.Error("watch catch-up cannot read the revision log", zap.Int64("from", from), zap.Int64("to", target), zap.Error(err))
		return false
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	more := false
	for _, w := range ready {
		if _, ok := h.mu.unsynced[w]; !ok {
			continue // canceled meanwhile
		}
		if w.next > last {
			more = true // the step stopped short of it
			continue
		}
		if mine := w.filter(evs, w.next); len(mine) > 0 {
			if !w.stream.out.pushEvents(w, mine, last, h.cfg.FragmentBytes) {
				// Only a revision larger than half the queue gets here:
				// wait for the queue to empty rather than read it again
				// at every response the client reads.
				w.stream.out.needEmpty()
				continue
			}
		}
		w.next = last + 1
		if w.next == h.mu.rev+1 {
			delete(h.mu.unsynced, w)
			h.addSynced(w)
		} else {
			more = true
		}
	}
	h.metrics.slow.Set(float64(len(h.mu.unsynced)))
	return more
}

// progressTick sends a progress notification to every synced watcher that
// asked for them and received no event since the previous tick.
func (h *Hub) progressTick() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.mu.streams {
		s.mu.Lock()
		for _, w := range s.mu.watchers {
			if w.progress && w.synced && !w.sent {
				s.out.pushControl(&pb.WatchResponse{WatchId: w.id}, h.mu.rev)
			}
			w.sent = false
		}
		s.mu.Unlock()
	}
}

// ErrClosed is returned by Stream.Next after Close.
var ErrClosed = errors.New("watch: stream closed")

// Stream is one client watch stream: its watchers share one ordered,
// bounded queue of responses.
type Stream struct {
	h   *Hub
	out *outbox
	mu  struct {
		sync.Mutex
		watchers map[int64]*watcher
		nextID   int64
	}
}

// NewStream opens a stream. Close it when the client goes away.
func (h *Hub) NewStream() *Stream {
	s := &Stream{h: h, out: newOutbox(h)}
	s.mu.watchers = make(map[int64]*watcher)
	h.mu.Lock()
	h.mu.streams[s] = struct{}{}
	h.mu.Unlock()
	h.metrics.streams.Inc()
	return s
}

// Create handles a WatchCreateRequest: the created response (or etcd's
// refusal) is queued before any event of the new watcher.
func (s *Stream) Create(r *pb.WatchCreateRequest) {
	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	rev := h.mu.rev
	refuse := func(reason string) {
		s.out.pushControl(&pb.WatchResponse{WatchId: -1, Created: true, Canceled: true, CancelReason: reason}, rev)
	}
	key, end := r.Key, r.RangeEnd
	if len(key) == 0 {
		key = []byte{0} // compat: etcd watches "\x00" for an empty key
	}
	if len(end) == 0 {
		end = nil
	} else if !(len(end) == 1 && end[0] == 0) && bytes.Compare(key, end) >= 0 {
		refuse(reasonEmptyRange)
		return
	}
	if r.StartRevision < 0 {
		refuse(reasonCompacted)
		return
	}
	id := r.WatchId
	if id != 0 {
		if _, taken := s.mu.watchers[id]; taken {
			refuse(reasonDuplicateID)
			return
		}
	} else {
		for {
			id = s.mu.nextID
			s.mu.nextID++
			if _, taken := s.mu.watchers[id]; !taken {
				break
			}
		}
	}
	w := &watcher{id: id, key: key, end: end, prevKV: r.PrevKv, fragment: r.Fragment, progress: r.ProgressNotify, stream: s}
	w.prefix = end != nil && bytes.Equal(end, prefixEnd(key))
	for _, f := range r.Filters {
		switch f {
		case pb.WatchCreateRequest_NOPUT:
			w.noPut = true
		case pb.WatchCreateRequest_NODELETE:
			w.noDelete = true
		}
	}
	s.mu.watchers[id] = w
	h.watchers.Add(1)
	if w.prevKV {
		h.prevWatchers.Add(1)
	}
	h.metrics.watchers.Inc()
	s.out.pushControl(&pb.WatchResponse{WatchId: id, Created: true}, rev)
	switch start := r.StartRevision; {
	case start == 0 || start == rev+1:
		h.addSynced(w)
	default:
		h.unsync(w, start)
		h.kickCatchUp()
	}
}

// Cancel cancels watch id; an unknown id is ignored, as etcd does.
func (s *Stream) Cancel(id int64) {
	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	w, ok := s.mu.watchers[id]
	if !ok {
		return
	}
	delete(s.mu.watchers, id)
	h.remove(w)
	s.out.pushControl(&pb.WatchResponse{WatchId: id, Canceled: true}, h.mu.rev)
}

// RequestProgress answers a progress request: if every watcher of the
// stream is synced, a response with watch ID -1 at the current revision
// (every later event of the stream has a higher revision); otherwise
// nothing, as etcd does (the client asks again).
func (s *Stream) RequestProgress() {
	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.mu.watchers) == 0 {
		return
	}
	for _, w := range s.mu.watchers {
		if !w.synced {
			return
		}
	}
	s.out.pushControl(&pb.WatchResponse{WatchId: -1}, h.mu.rev)
}

// Next returns the next response to send and the revision for its header
// (0: none). It blocks until one is queued, ctx is done or the stream is
// closed.
func (s *Stream) Next(ctx context.Context) (*pb.WatchResponse, int64, error) {
	return s.out.next(ctx)
}

// WaitRoom blocks while the stream's queue is over its hard limit, so that
// a client that sends requests without reading responses is slowed down
// instead of growing the queue.
func (s *Stream) WaitRoom(ctx context.Context) error { return s.out.waitRoom(ctx) }

// Close cancels every watcher of the stream.
func (s *Stream) Close() {
	h := s.h
	h.mu.Lock()
	s.mu.Lock()
	for id, w := range s.mu.watchers {
		delete(s.mu.watchers, id)
		h.remove(w)
	}
	s.mu.Unlock()
	if _, ok := h.mu.streams[s]; ok {
		delete(h.mu.streams, s)
		h.metrics.streams.Dec()
	}
	h.mu.Unlock()
	s.out.close()
}

// outbox is a stream's FIFO of responses. Event responses are bounded by
// MaxPending; control responses (created, canceled, progress) always fit,
// and the stream's reader applies back-pressure through waitRoom.
type outbox struct {
	h      *Hub
	mu     sync.Mutex
	q      []item
	events int  // events queued
	bytes  int  // their approximate size
	stall  bool // a push was refused: kick catch-up once drained
	empty  bool // ... and only once no event is queued
	closed bool
	ready  chan struct{} // signalled when q becomes non-empty or closed
	room   chan struct{} // signalled when q drops below the hard limit
}

type item struct {
	resp *pb.WatchResponse
	rev  int64
	size int // approxSize of the events
}

func newOutbox(h *Hub) *outbox {
	return &outbox{h: h, ready: make(chan struct{}, 1), room: make(chan struct{}, 1)}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// hasRoom reports whether event responses fit; if not, the outbox kicks
// catch-up once the reader has drained it.
func (o *outbox) hasRoom() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return false
	}
	if !o.halfEmptyLocked() {
		o.stall = true
		return false
	}
	return true
}

// halfEmptyLocked reports whether the queue holds at most half its bounds
// (no event at all after needEmpty).
func (o *outbox) halfEmptyLocked() bool {
	if o.events == 0 {
		o.empty = false
		return true
	}
	return !o.empty && o.events <= o.h.cfg.MaxPending/2 && o.bytes <= o.h.cfg.MaxPendingBytes/2
}

func (o *outbox) needEmpty() {
	o.mu.Lock()
	o.stall, o.empty = true, true
	o.mu.Unlock()
}

// approxSize is the approximate encoded size of evs.
func approxSize(evs []*mvccpb.Event) int {
	n := 0
	for _, ev := range evs {
		n += 32 + len(ev.Kv.Key) + len(ev.Kv.Value)
		if ev.PrevKv != nil {
			n += 32 + len(ev.PrevKv.Key) + len(ev.PrevKv.Value)
		}
	}
	return n
}

// pushEvents queues the events of w at header revision rev, split into
// fragments when w asked for it, unless the queue is full.
func (o *outbox) pushEvents(w *watcher, evs []*mvccpb.Event, rev int64, fragBytes int) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return true // nobody reads: dropping is correct
	}
	size := approxSize(evs)
	if o.events > 0 && (o.events+len(evs) > o.h.cfg.MaxPending || o.bytes+size > o.h.cfg.MaxPendingBytes) {
		o.stall = true
		return false
	}
	w.sent = true
	if w.fragment {
		for _, r := range fragment(w.id, evs, fragBytes) {
			o.q = append(o.q, item{resp: r, rev: rev, size: approxSize(r.Events)})
		}
	} else {
		o.q = append(o.q, item{resp: &pb.WatchResponse{WatchId: w.id, Events: evs}, rev: rev, size: size})
	}
	o.events += len(evs)
	o.bytes += size
	o.h.metrics.pending.Add(float64(len(evs)))
	signal(o.ready)
	return true
}

// fragment splits evs into responses of at most limit bytes of events (at
// least one event each); all but the last are marked as fragments.
func fragment(id int64, evs []*mvccpb.Event, limit int) []*pb.WatchResponse {
	var (
		out  []*pb.WatchResponse
		cur  []*mvccpb.Event
		size int
	)
	for _, ev := range evs {
		n := proto.Size(ev)
		if len(cur) > 0 && size+n > limit {
			out = append(out, &pb.WatchResponse{WatchId: id, Events: cur, Fragment: true})
			cur, size = nil, 0
		}
		cur = append(cur, ev)
		size += n
	}
	return append(out, &pb.WatchResponse{WatchId: id, Events: cur})
}

func (o *outbox) pushControl(r *pb.WatchResponse, rev int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	o.q = append(o.q, item{resp: r, rev: rev})
	signal(o.ready)
}

func (o *outbox) next(ctx context.Context) (*pb.WatchResponse, int64, error) {
	for {
		o.mu.Lock()
		if o.closed {
			o.mu.Unlock()
			return nil, 0, ErrClosed
		}
		if len(o.q) > 0 {
			it := o.q[0]
			o.q[0] = item{}
			o.q = o.q[1:]
			if len(it.resp.Events) > 0 {
				o.events -= len(it.resp.Events)
				o.bytes -= it.size
				o.h.metrics.pending.Sub(float64(len(it.resp.Events)))
			}
			kick := o.stall && o.halfEmptyLocked()
			if kick {
				o.stall = false
			}
			if len(o.q) < o.hardLimit() {
				signal(o.room)
			}
			if len(o.q) > 0 {
				signal(o.ready)
			}
			o.mu.Unlock()
			if kick {
				o.h.kickCatchUp()
			}
			return it.resp, it.rev, nil
		}
		o.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-o.ready:
		}
	}
}

// hardLimit bounds the responses queued (control responses included)
// before the stream stops reading client requests.
func (o *outbox) hardLimit() int { return 4 * o.h.cfg.MaxPending }

func (o *outbox) waitRoom(ctx context.Context) error {
	for {
		o.mu.Lock()
		ok := o.closed || len(o.q) < o.hardLimit()
		o.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-o.room:
		}
	}
}

func (o *outbox) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.closed {
		o.closed = true
		for _, it := range o.q {
			o.h.metrics.pending.Sub(float64(len(it.resp.Events)))
		}
		o.q = nil
		signal(o.ready)
		signal(o.room)
	}
}
