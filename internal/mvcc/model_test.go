package mvcc

// TestModel checks the Store against a naive in-memory model of etcd's MVCC
// semantics (a map from key to every version it ever had) with a seeded
// random operation generator, in the style of pebble's metamorphic tests.
//
// Every run logs its seed. Reproduce a failure with
//
//	go test ./internal/mvcc -run TestModel -seed=<seed> [-model.ops=N]
//
// or CAIRN_MVCC_SEED=<seed>. Without a seed, each run draws new random seeds.
//
// What is checked, each against the model, field by field:
//   - Put/DeleteRange results (previous KV, deleted KVs) and the revision
//     End returns; several changes in one WriteTxn share one revision.
//   - Range through the Store, a ReadView and a WriteTxn (which sees its own
//     staged changes at Rev()), at the head and at historical revisions, over
//     single keys, [a,b), prefixes, from-key and all-keys ranges, with Limit,
//     CountOnly and KeysOnly; ErrFutureRev and ErrCompacted.
//   - Staged writes (applier style: several WriteTxns and a Compact in one
//     indexed batch) stay invisible until Publish, even after the batch is
//     committed; Abandon forgets them.
//   - Compact: the logical cut (ErrCompacted below it), and after the
//     physical compaction finishes, the exact set of stored versions and
//     revision-log entries that may remain.
//   - Restart (close and reopen Pebble, NewStore): revision, compacted
//     revision and every readable version survive; an unfinished physical
//     compaction resumes.
//   - A concurrent reader always sees a published revision in full.
//   - The watch events an apply batch gathers equal the same revisions
//     replayed from the revision log (Events), paged at random sizes.

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"

	"github.com/cairnkv/cairn/internal/storage"
	"github.com/cairnkv/cairn/internal/storage/schema"
)

var (
	modelSeed = flag.Uint64("seed", 0, "TestModel: run only this seed (0: random seeds; env CAIRN_MVCC_SEED)")
	modelOps  = flag.Int("model.ops", 3000, "TestModel: operations per seed")
	modelRuns = flag.Int("model.seeds", 3, "TestModel: number of random seeds when -seed is not given")
)

// modelKeys is the key space: small, so that keys collide and get many
// versions, with 0x00 and 0xff bytes where the key encoding must escape or
// order them, and keys that are prefixes of each other.
var modelKeys = []string{
	"\x00", "\x00\x00", "\x00\x01", "\x00\xff", "\x01",
	"a", "a\x00", "a\x00\x00", "a\x00b", "a\x01",
	"a\xff", "ab", "abc", "b", "b\xff",
	"foo", "foo/", "foo/bar", "\xff", "\xff\xff",
}

// modelBounds are extra range boundaries that are not keys.
var modelBounds = []string{"\x00\x00\x00", "a\x00\x01", "aa", "c", "foo0", "\xff\x00", "\xff\xff\xff"}

// modelLeases are lease IDs stored with puts; the store does not interpret
// them, but they must round trip (MaxInt64 takes the longest varint).
var modelLeases = []int64{0, 0, 0, 1, 42, 1 << 40, math.MaxInt64}

func modelSeeds(t *testing.T) []uint64 {
	if *modelSeed != 0 {
		return []uint64{*modelSeed}
	}
	if s := os.Getenv("CAIRN_MVCC_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CAIRN_MVCC_SEED=%q: %v", s, err)
		}
		return []uint64{seed}
	}
	seeds := make([]uint64, *modelRuns)
	for i := range seeds {
		seeds[i] = rand.Uint64()
	}
	return seeds
}

func TestModel(t *testing.T) { testModel(t, false) }

// TestModelApplyPath runs the model with every write in an apply batch
// (BeginApply ... Publish) and with memtable flushes in between, so the
// latest-version lookups go through the recent index and the
// sstables-only iterator (see recentIndex) most of the time.
func TestModelApplyPath(t *testing.T) { testModel(t, true) }

func testModel(t *testing.T, applyPath bool) {
	ops := *modelOps
	if testing.Short() {
		ops /= 3
	}
	for _, seed := range modelSeeds(t) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Logf("seed %d (reproduce: go test ./internal/mvcc -run %s -seed=%d)", seed, t.Name()[:strings.Index(t.Name(), "/")], seed)
			h := newHarness(t, seed)
			h.applyPath = applyPath
			for i := 0; i < ops; i++ {
				h.step(i)
			}
			h.checkAllRevisions()
			h.restart()
			h.checkAllRevisions()
			if applyPath && h.durableBatches < ops/20 {
				t.Errorf("only %d of the apply batches used the sstables-only iterator", h.durableBatches)
			}
		})
	}
}

// --- model ---------------------------------------------------------------

type mversion struct {
	mod, create, ver, lease int64
	value                   []byte
	tomb                    bool
}

type mrevlog struct {
	main, sub int64
	key       string
}

// model is etcd's MVCC semantics spelled out naively. mu guards it against
// the concurrent reader; only the test goroutine writes.
type model struct {
	mu   sync.Mutex
	hist map[string][]mversion // every version of a key, ascending mod

	rev, pubRev         int64 // staged and published revision
	compact, pubCompact int64 // staged and published compacted revision
	revlog              []mrevlog
}

func newModel() *model {
	// Compat: an empty etcd store is at revision 1.
	return &model{hist: map[string][]mversion{}, rev: 1, pubRev: 1}
}

// at returns the version of key visible at rev, and whether it is live.
func (m *model) at(key string, rev int64) (mversion, bool) {
	vs := m.hist[key]
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].mod <= rev {
			return vs[i], !vs[i].tomb
		}
	}
	return mversion{}, false
}

func (m *model) keys() []string {
	ks := make([]string, 0, len(m.hist))
	for k := range m.hist {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// inRange applies etcd's range rules: empty end = the single key, end "\x00"
// = every key >= key, otherwise [key, end).
func inRange(k, key, end string) bool {
	switch {
	case end == "":
		return k == key
	case end == "\x00":
		return k >= key
	}
	return k >= key && k < end
}

func (v mversion) kv(key string, withValue bool) *mvccpb.KeyValue {
	kv := &mvccpb.KeyValue{Key: []byte(key), CreateRevision: v.create, ModRevision: v.mod, Version: v.ver, Lease: v.lease}
	if withValue {
		kv.Value = v.value
	}
	return kv
}

// rangeAt is what Range must return for a reader whose current revision is
// cur and compacted revision is compact.
func (m *model) rangeAt(key, end []byte, o RangeOptions, cur, compact int64) (*RangeResult, error) {
	rev := o.Rev
	if rev <= 0 {
		rev = cur
	}
	if rev > cur {
		return nil, ErrFutureRev
	}
	if rev < compact {
		return nil, ErrCompacted
	}
	res := &RangeResult{Rev: cur}
	for _, k := range m.keys() {
		if !inRange(k, string(key), string(end)) {
			continue
		}
		v, live := m.at(k, rev)
		if !live {
			continue
		}
		res.Count++
		if o.CountOnly || (o.Limit > 0 && int64(len(res.KVs)) >= o.Limit) {
			continue
		}
		res.KVs = append(res.KVs, v.kv(k, !o.KeysOnly))
	}
	return res, nil
}

// mtxn mirrors a WriteTxn.
type mtxn struct {
	m       *model
	begin   int64
	changes int64
}

func (m *model) write() *mtxn { return &mtxn{m: m, begin: m.rev} }

func (x *mtxn) rev() int64 {
	if x.changes > 0 {
		return x.begin + 1
	}
	return x.begin
}

// stage appends a version. A key written twice in one txn gets two
// versions with the same mod revision; the later one (higher sub revision)
// wins, and compaction must keep exactly that one.
func (x *mtxn) stage(key string, v mversion) {
	x.m.hist[key] = append(x.m.hist[key], v)
	x.m.revlog = append(x.m.revlog, mrevlog{main: v.mod, sub: x.changes, key: key})
	x.changes++
}

func (x *mtxn) put(key string, value []byte, lease int64) *mvccpb.KeyValue {
	x.m.mu.Lock()
	defer x.m.mu.Unlock()
	rev := x.begin + 1
	prev, live := x.m.at(key, rev)
	v := mversion{mod: rev, create: rev, ver: 1, lease: lease, value: value}
	var prevKV *mvccpb.KeyValue
	if live {
		v.create, v.ver = prev.create, prev.ver+1
		prevKV = prev.kv(key, true)
	}
	x.stage(key, v)
	return prevKV
}

func (x *mtxn) deleteRange(key, end []byte) []*mvccpb.KeyValue {
	x.m.mu.Lock()
	defer x.m.mu.Unlock()
	rev := x.begin + 1
	var out []*mvccpb.KeyValue
	for _, k := range x.m.keys() {
		if !inRange(k, string(key), string(end)) {
			continue
		}
		if v, live := x.m.at(k, rev); live {
			out = append(out, v.kv(k, true))
			x.stage(k, mversion{mod: rev, tomb: true})
		}
	}
	return out
}

func (x *mtxn) end() int64 {
	x.m.mu.Lock()
	defer x.m.mu.Unlock()
	if x.changes > 0 {
		x.m.rev = x.begin + 1
	}
	return x.m.rev
}

func (m *model) compactTo(rev int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if rev <= m.compact {
		return ErrCompacted
	}
	if rev > m.rev {
		return ErrFutureRev
	}
	m.compact = rev
	return nil
}

func (m *model) publish() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pubRev, m.pubCompact = m.rev, m.compact
}

// retained lists the mod revisions of key that may remain stored once the
// compaction at c is physical: every version above c, and the newest at or
// below c unless it is a tombstone strictly below c. Newest first, as stored.
func (m *model) retained(key string, c int64) []int64 {
	vs := m.hist[key]
	var out []int64
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].mod > c {
			out = append(out, vs[i].mod)
			continue
		}
		if !(vs[i].tomb && vs[i].mod < c) {
			out = append(out, vs[i].mod)
		}
		break
	}
	return out
}

// --- harness -------------------------------------------------------------

type harness struct {
	t    *testing.T
	seed uint64
	rng  *rand.Rand
	dir  string
	m    *model

	// dbMu is held for writing while the DB is closed and reopened; the
	// concurrent reader holds it for reading.
	dbMu sync.RWMutex
	db   *pebble.DB
	s    *Store

	stopCompactor func()
	noCompactor   bool            // open without running the compactor
	physical      <-chan struct{} // closed when the latest compaction is physical
	physicalRev   int64

	views []modelView

	readerKick chan struct{}
	stopReader func()

	op    int
	trail []string

	// applyPath: every write goes through an apply batch, and memtables
	// are flushed now and then (TestModelApplyPath).
	applyPath bool
	// durableBatches counts apply batches that had the recent index on.
	durableBatches int
}

type modelView struct {
	v            *ReadView
	rev, compact int64
}

func newHarness(t *testing.T, seed uint64) *harness {
	h := &harness{
		t:    t,
		seed: seed,
		rng:  rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		dir:  t.TempDir(),
		m:    newModel(),
	}
	h.open()
	h.startReader()
	t.Cleanup(h.close)
	return h
}

func (h *harness) logger() *zap.Logger {
	return zaptest.NewLogger(h.t, zaptest.Level(zap.WarnLevel))
}

func (h *harness) open() {
	db, err := storage.Open(h.logger(), h.dir)
	if err != nil {
		h.fatalf("open: %v", err)
	}
	s, err := NewStore(h.logger(), db)
	if err != nil {
		h.fatalf("NewStore: %v", err)
	}
	h.db, h.s = db.DB, s
	h.physical, h.physicalRev = nil, 0
	if h.noCompactor {
		h.stopCompactor = func() {}
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.RunCompactor(ctx)
	}()
	h.stopCompactor = func() { cancel(); <-done }
	if c := h.m.pubCompact; c > 0 {
		h.physical, h.physicalRev = s.compactor.wait(c), c
	}
}

func (h *harness) shut() {
	for _, v := range h.views {
		v.v.Close()
	}
	h.views = nil
	h.stopCompactor()
	h.s.Close()
	if err := h.db.Close(); err != nil {
		h.fatalf("close db: %v", err)
	}
	h.db, h.s = nil, nil
}

func (h *harness) close() {
	h.stopReader()
	if h.db != nil {
		h.shut()
	}
}

func (h *harness) restart() {
	h.note("restart")
	h.dbMu.Lock()
	h.shut()
	h.open()
	h.dbMu.Unlock()
	if got, want := h.s.Rev(), h.m.pubRev; got != want {
		h.fatalf("after restart: Rev() = %d, want %d", got, want)
	}
	if got, want := h.s.CompactRev(), h.m.pubCompact; got != want {
		h.fatalf("after restart: CompactRev() = %d, want %d", got, want)
	}
	h.checkSomeRevisions(8)
}

// startReader runs a reader concurrently with the test goroutine: after
// each kick it reads every key, at the head or at a readable historical
// revision, and checks the result against the model at the revision the
// store reports. A torn (half-published) write, or a version removed by
// the compactor while still readable, would show up here.
func (h *harness) startReader() {
	h.readerKick = make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	rng := rand.New(rand.NewPCG(h.seed, 1))
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-h.readerKick:
			}
			if err := h.concurrentRead(rng); err != nil {
				h.t.Errorf("concurrent reader (seed %d): %v", h.seed, err)
				return
			}
		}
	}()
	h.stopReader = func() { cancel(); <-done }
}

func (h *harness) concurrentRead(rng *rand.Rand) error {
	h.dbMu.RLock()
	defer h.dbMu.RUnlock()
	if h.s == nil {
		return nil
	}
	// Alternate between the head and a revision the store says is
	// readable; a compaction published meanwhile may make the latter
	// ErrCompacted, nothing else.
	var o RangeOptions
	if rng.IntN(2) == 0 {
		lo, hi := max(h.s.CompactRev(), 1), h.s.Rev()
		o.Rev = lo + rng.Int64N(hi-lo+1)
	}
	got, err := h.s.Range([]byte{0}, []byte{0}, o)
	if errors.Is(err, ErrCompacted) && o.Rev < h.s.CompactRev() {
		return nil
	}
	if err != nil {
		return fmt.Errorf("range all %+v: %w", o, err)
	}
	h.m.mu.Lock()
	// The model's history is append-only, so the expectation at a
	// published revision does not change under us.
	want, _ := h.m.rangeAt([]byte{0}, []byte{0}, o, got.Rev, 0)
	h.m.mu.Unlock()
	if err := diffRange(got, want); err != nil {
		return fmt.Errorf("range all %+v: %w", o, err)
	}
	return nil
}

func (h *harness) note(format string, args ...any) {
	const keep = 40
	h.trail = append(h.trail, fmt.Sprintf("op %d: ", h.op)+fmt.Sprintf(format, args...))
	if len(h.trail) > keep {
		h.trail = h.trail[len(h.trail)-keep:]
	}
}

func (h *harness) fatalf(format string, args ...any) {
	h.t.Helper()
	h.t.Fatalf("seed %d, op %d: %s\nrecent ops:\n  %s\nreproduce: go test ./internal/mvcc -run TestModel -seed=%d",
		h.seed, h.op, fmt.Sprintf(format, args...), strings.Join(h.trail, "\n  "), h.seed)
}

// --- generators ----------------------------------------------------------

func (h *harness) key() []byte { return []byte(modelKeys[h.rng.IntN(len(modelKeys))]) }

func (h *harness) bound() []byte {
	if h.rng.IntN(4) == 0 {
		return []byte(modelBounds[h.rng.IntN(len(modelBounds))])
	}
	return h.key()
}

func (h *harness) value() []byte {
	if h.rng.IntN(5) == 0 {
		return nil // Compat: etcd stores and returns empty values
	}
	v := make([]byte, 1+h.rng.IntN(8))
	for i := range v {
		v[i] = byte(h.rng.IntN(256))
	}
	return v
}

func (h *harness) lease() int64 { return modelLeases[h.rng.IntN(len(modelLeases))] }

// prefixEnd is clientv3.GetPrefixRangeEnd: the key after the prefix, or
// "\x00" (every key >= prefix) when the prefix is all 0xff.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return []byte{0}
}

// keyRange returns an etcd-style [key, end) of a random kind.
func (h *harness) keyRange() (key, end []byte, kind string) {
	switch h.rng.IntN(6) {
	case 0:
		return h.key(), nil, "single"
	case 1, 2:
		a, b := h.bound(), h.bound()
		if h.rng.IntN(4) != 0 && bytes.Compare(a, b) > 0 {
			a, b = b, a // mostly well-formed; sometimes end <= key (empty)
		}
		return a, b, "range"
	case 3:
		k := h.key()
		return k, prefixEnd(k), "prefix"
	case 4:
		return h.bound(), []byte{0}, "from-key"
	}
	return []byte{0}, []byte{0}, "all"
}

// readRev picks a read revision: mostly the head, else a historical one,
// sometimes a compacted or future one.
func (h *harness) readRev(cur, compact int64) int64 {
	switch h.rng.IntN(10) {
	case 0, 1, 2, 3:
		return 0
	case 4:
		return -1 // <= 0 means the head
	case 5:
		return cur + 1 + int64(h.rng.IntN(3)) // future
	case 6:
		if compact > 1 {
			return 1 + h.rng.Int64N(compact-1) // compacted
		}
	}
	lo := max(compact, 1)
	return lo + h.rng.Int64N(cur-lo+1)
}

func (h *harness) rangeOpts(cur, compact int64) RangeOptions {
	o := RangeOptions{Rev: h.readRev(cur, compact)}
	if h.rng.IntN(3) == 0 {
		o.Limit = int64(1 + h.rng.IntN(4))
	}
	o.CountOnly = h.rng.IntN(8) == 0
	o.KeysOnly = h.rng.IntN(5) == 0
	return o
}

// --- comparisons ---------------------------------------------------------

func kvString(kv *mvccpb.KeyValue) string {
	if kv == nil {
		return "<nil>"
	}
	return fmt.Sprintf("{key=%q create=%d mod=%d ver=%d lease=%d value=%q}",
		kv.Key, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease, kv.Value)
}

func diffKV(got, want *mvccpb.KeyValue) error {
	if (got == nil) != (want == nil) ||
		got != nil && (!bytes.Equal(got.Key, want.Key) ||
			got.CreateRevision != want.CreateRevision ||
			got.ModRevision != want.ModRevision ||
			got.Version != want.Version ||
			got.Lease != want.Lease ||
			// Compat: gRPC does not tell a nil value from an empty one.
			!bytes.Equal(got.Value, want.Value)) {
		return fmt.Errorf("got %s, want %s", kvString(got), kvString(want))
	}
	return nil
}

func diffKVs(got, want []*mvccpb.KeyValue) error {
	for i := 0; i < max(len(got), len(want)); i++ {
		var g, w *mvccpb.KeyValue
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if err := diffKV(g, w); err != nil {
			return fmt.Errorf("kv %d of (got %d, want %d): %w", i, len(got), len(want), err)
		}
	}
	return nil
}

func diffRange(got, want *RangeResult) error {
	if got.Rev != want.Rev {
		return fmt.Errorf("Rev = %d, want %d", got.Rev, want.Rev)
	}
	if got.Count != want.Count {
		return fmt.Errorf("Count = %d, want %d", got.Count, want.Count)
	}
	return diffKVs(got.KVs, want.KVs)
}

func (h *harness) checkRange(what string, key, end []byte, o RangeOptions, got *RangeResult, gotErr error, want *RangeResult, wantErr error) {
	h.t.Helper()
	desc := fmt.Sprintf("%s [%q, %q) %+v", what, key, end, o)
	if wantErr != nil || gotErr != nil {
		if !errors.Is(gotErr, wantErr) || (wantErr == nil) != (gotErr == nil) {
			h.fatalf("%s: error %v, want %v", desc, gotErr, wantErr)
		}
		return
	}
	if err := diffRange(got, want); err != nil {
		h.fatalf("%s: %v", desc, err)
	}
	// Compat: etcd sets More when a limited range has more keys than
	// returned (apply asks for limit+1); KVs must be a prefix of Count.
	if o.Limit > 0 && !o.CountOnly && int64(len(got.KVs)) != min(o.Limit, got.Count) {
		h.fatalf("%s: %d KVs with limit %d and count %d", desc, len(got.KVs), o.Limit, got.Count)
	}
}

// readStore compares one Store.Range with the published model.
func (h *harness) readStore(key, end []byte, o RangeOptions) {
	h.t.Helper()
	got, gotErr := h.s.Range(key, end, o)
	want, wantErr := h.m.rangeAt(key, end, o, h.m.pubRev, h.m.pubCompact)
	h.checkRange("Store.Range", key, end, o, got, gotErr, want, wantErr)
}

// checkSomeRevisions reads everything at n random readable revisions and
// at the head and the compacted revision.
func (h *harness) checkSomeRevisions(n int) {
	h.t.Helper()
	lo, hi := max(h.m.pubCompact, 1), h.m.pubRev
	revs := []int64{0, lo, hi}
	for range n {
		revs = append(revs, lo+h.rng.Int64N(hi-lo+1))
	}
	for _, rev := range revs {
		h.readStore([]byte{0}, []byte{0}, RangeOptions{Rev: rev})
	}
}

func (h *harness) checkAllRevisions() {
	h.t.Helper()
	for rev := max(h.m.pubCompact, 1); rev <= h.m.pubRev; rev++ {
		h.readStore([]byte{0}, []byte{0}, RangeOptions{Rev: rev})
	}
	h.readStore([]byte{0}, []byte{0}, RangeOptions{Rev: h.m.pubRev + 1})
	if h.m.pubCompact > 1 {
		h.readStore([]byte{0}, []byte{0}, RangeOptions{Rev: h.m.pubCompact - 1})
	}
}

// --- operations ----------------------------------------------------------

func (h *harness) step(i int) {
	h.op = i
	switch r := h.rng.IntN(100); {
	case r < 25:
		h.opWrite(1)
	case r < 32:
		h.opWrite(2 + h.rng.IntN(4)) // a multi-op txn
	case r < 62:
		h.opRead()
	case r < 70:
		h.opBatch()
	case r < 74:
		h.opCompact()
	case r < 76:
		h.opWaitPhysical()
	case r < 82:
		h.opView()
	case r < 84:
		h.opAbandon()
	case r < 85:
		h.restart()
	case h.applyPath && r < 90:
		h.opFlush()
	default:
		h.opWrite(1)
	}
	select {
	case h.readerKick <- struct{}{}:
	default:
	}
}

func (h *harness) opRead() {
	key, end, kind := h.keyRange()
	o := h.rangeOpts(h.m.pubRev, h.m.pubCompact)
	h.note("read %s [%q, %q) %+v", kind, key, end, o)
	h.readStore(key, end, o)
}

// writeTxn stages n random changes (puts, deletes and reads) into t and the
// model txn x, checking each result. Mostly no key is written twice and no
// put key lies inside a delete range, as txn validation guarantees; one txn
// in four breaks that rule (a delete-and-recreate in one revision, which
// etcd's validation lets through for from-key deletes, etcd-io/etcd#22376):
// the store must still be right.
func (h *harness) writeTxn(t *WriteTxn, x *mtxn, n int) {
	h.t.Helper()
	var puts [][]byte
	var dels [][2][]byte
	relaxed := h.rng.IntN(4) == 0
	touched := func(k []byte) bool {
		if relaxed {
			return false
		}
		for _, p := range puts {
			if bytes.Equal(p, k) {
				return true
			}
		}
		for _, d := range dels {
			if inRange(string(k), string(d[0]), string(d[1])) {
				return true
			}
		}
		return false
	}
	for len(puts)+len(dels) < n {
		switch h.rng.IntN(5) {
		case 0, 1, 2:
			k := h.key()
			if touched(k) {
				continue
			}
			v, l := h.value(), h.lease()
			h.note("  put %q=%q lease=%d", k, v, l)
			meta := h.rng.IntN(2) == 0
			put := t.Put
			if meta {
				put = t.PutMeta
			}
			got, err := put(k, v, l)
			if err != nil {
				h.fatalf("Put(%q): %v", k, err)
			}
			want := x.put(string(k), v, l)
			if meta && got != nil && want != nil && got.Value == nil {
				// PutMeta may leave out the previous value.
				want = proto.Clone(want).(*mvccpb.KeyValue)
				want.Value = nil
			}
			if err := diffKV(got, want); err != nil {
				h.fatalf("Put(%q) prev (PutMeta %v): %v", k, meta, err)
			}
			puts = append(puts, k)
		case 3:
			key, end, kind := h.keyRange()
			if !relaxed && slices.ContainsFunc(puts, func(p []byte) bool { return inRange(string(p), string(key), string(end)) }) {
				continue
			}
			h.note("  delete %s [%q, %q)", kind, key, end)
			got, err := t.DeleteRange(key, end)
			if err != nil {
				h.fatalf("DeleteRange(%q, %q): %v", key, end, err)
			}
			if err := diffKVs(got, x.deleteRange(key, end)); err != nil {
				h.fatalf("DeleteRange(%q, %q): %v", key, end, err)
			}
			dels = append(dels, [2][]byte{key, end})
		case 4:
			// A read inside the txn sees its own changes at Rev().
			if got, want := t.Rev(), x.rev(); got != want {
				h.fatalf("WriteTxn.Rev() = %d, want %d", got, want)
			}
			key, end, kind := h.keyRange()
			o := h.rangeOpts(x.rev(), h.m.compact)
			h.note("  txn read %s [%q, %q) %+v", kind, key, end, o)
			got, gotErr := t.Range(key, end, o)
			h.m.mu.Lock()
			want, wantErr := h.m.rangeAt(key, end, o, x.rev(), h.m.compact)
			h.m.mu.Unlock()
			h.checkRange("WriteTxn.Range", key, end, o, got, gotErr, want, wantErr)
		}
	}
}

// opWrite runs one WriteTxn of n changes in its own batch.
func (h *harness) opWrite(n int) {
	h.note("write txn of %d", n)
	b := h.db.NewIndexedBatch()
	defer b.Close()
	if h.applyPath {
		h.beginApply()
		defer h.s.EndApply()
	}
	t, x := h.s.Write(b), h.m.write()
	h.writeTxn(t, x, n)
	if got, want := t.End(), x.end(); got != want {
		h.fatalf("End() = %d, want %d", got, want)
	}
	h.commit(b)
}

// beginApply starts an apply batch, with or without watch events.
func (h *harness) beginApply() {
	if err := h.s.BeginApply(h.rng.IntN(2) == 0, h.rng.IntN(2) == 0); err != nil {
		h.fatalf("BeginApply: %v", err)
	}
	if h.s.apply.durable != nil {
		h.durableBatches++
	}
}

// opFlush moves the memtables into sstables, which retires entries of
// the recent index.
func (h *harness) opFlush() {
	h.note("flush")
	if h.rng.IntN(2) == 0 {
		if err := h.db.Flush(); err != nil {
			h.fatalf("flush: %v", err)
		}
		return
	}
	if _, err := h.db.AsyncFlush(); err != nil {
		h.fatalf("async flush: %v", err)
	}
}

func (h *harness) commit(b *pebble.Batch) {
	h.t.Helper()
	h.s.StageRev(b) // a no-op outside an apply batch
	if err := b.Commit(pebble.NoSync); err != nil {
		h.fatalf("commit: %v", err)
	}
	h.s.Publish()
	h.m.publish()
	if got, want := h.s.Rev(), h.m.pubRev; got != want {
		h.fatalf("Rev() = %d after publish, want %d", got, want)
	}
	if got, want := h.s.CompactRev(), h.m.pubCompact; got != want {
		h.fatalf("CompactRev() = %d after publish, want %d", got, want)
	}
}

// opBatch stages several WriteTxns (and maybe a Compact) in one batch as the
// applier does; readers must see none of it until Publish.
func (h *harness) opBatch() {
	n := 2 + h.rng.IntN(3)
	// Half the batches go through the applier's fast latest-version path
	// (BeginApply: one DB iterator plus an overlay of the batch's writes).
	fast := h.applyPath || h.rng.IntN(2) == 0
	withPrev := h.rng.IntN(2) == 0
	h.note("batch of %d txns (fast path %v, events with prev %v)", n, fast, withPrev)
	b := h.db.NewIndexedBatch()
	defer b.Close()
	if fast {
		if err := h.s.BeginApply(true, withPrev); err != nil {
			h.fatalf("BeginApply: %v", err)
		}
		if h.s.apply.durable != nil {
			h.durableBatches++
		}
		defer h.s.EndApply()
	}
	for range n {
		if h.rng.IntN(6) == 0 {
			h.compactIn(b)
			continue
		}
		t, x := h.s.Write(b), h.m.write()
		h.writeTxn(t, x, 1+h.rng.IntN(3))
		if got, want := t.End(), x.end(); got != want {
			h.fatalf("End() = %d, want %d", got, want)
		}
		h.readStore([]byte{0}, []byte{0}, RangeOptions{}) // staged: invisible
	}
	h.s.StageRev(b)
	if err := b.Commit(pebble.NoSync); err != nil {
		h.fatalf("commit: %v", err)
	}
	// Committed but not published: still invisible, including at the
	// revisions the batch wrote.
	h.readStore([]byte{0}, []byte{0}, RangeOptions{})
	h.readStore([]byte{0}, []byte{0}, RangeOptions{Rev: h.m.pubRev + 1})
	before := h.s.Rev()
	h.s.Publish()
	h.m.publish()
	h.readStore([]byte{0}, []byte{0}, RangeOptions{})
	if fast {
		evs, ok, gotPrev := h.s.TakeEvents()
		if !ok || gotPrev != withPrev {
			h.fatalf("TakeEvents after BeginApply(true, %v): collected %v, with prev %v", withPrev, ok, gotPrev)
		}
		h.checkEvents(before+1, evs, withPrev)
	}
}

// checkEvents compares the events the apply batch gathered (revisions from
// and up) with the same revisions replayed from the revision log. Without
// withPrev, PUT events must carry no previous version and DELETE events
// still must.
func (h *harness) checkEvents(from int64, collected []*mvccpb.Event, withPrev bool) {
	h.t.Helper()
	// Revisions at or below the compacted one may have lost their previous
	// versions to compaction; compare the rest.
	from = max(from, h.s.CompactRev()+1)
	to := h.s.Rev()
	var want []*mvccpb.Event
	for _, ev := range collected {
		if ev.Kv.ModRevision >= from {
			want = append(want, ev)
		}
	}
	// A small maxEvents pages through the log as a catching-up watcher does.
	var got []*mvccpb.Event
	for at := from; at <= to; {
		evs, last, err := h.s.Events(at, to, 1+h.rng.IntN(3), 1+h.rng.IntN(64), true)
		if err != nil {
			h.fatalf("Events(%d, %d): %v", at, to, err)
		}
		if last < at && len(evs) > 0 || last < at-1 {
			h.fatalf("Events(%d, %d) returned last %d", at, to, last)
		}
		got = append(got, evs...)
		at = last + 1
	}
	if len(got) != len(want) {
		h.fatalf("revisions %d..%d: replayed %d events, apply gathered %d\nreplayed %v\ngathered %v", from, to, len(got), len(want), got, want)
	}
	for i := range got {
		if !withPrev && got[i].Type == mvccpb.Event_PUT {
			if want[i].PrevKv != nil {
				h.fatalf("event %d of revisions %d..%d: gathered without prev, but carries %v", i, from, to, want[i].PrevKv)
			}
			got[i] = proto.CloneOf(got[i])
			got[i].PrevKv = nil
		}
		if !proto.Equal(got[i], want[i]) {
			h.fatalf("event %d of revisions %d..%d: replayed %v, apply gathered %v", i, from, to, got[i], want[i])
		}
	}
}

// compactIn stages a Compact at a random revision, valid or not.
func (h *harness) compactIn(b *pebble.Batch) {
	lo, hi := h.m.compact-1, h.m.rev+1
	rev := lo + h.rng.Int64N(hi-lo+1)
	if h.rng.IntN(3) != 0 && h.m.rev > h.m.compact {
		rev = h.m.compact + 1 + h.rng.Int64N(h.m.rev-h.m.compact) // valid
	}
	h.compactAt(b, rev)
}

func (h *harness) compactAt(b *pebble.Batch, rev int64) {
	h.note("  compact %d (compacted %d, rev %d)", rev, h.m.compact, h.m.rev)
	ch, err := h.s.Compact(b, rev)
	wantErr := h.m.compactTo(rev)
	if !errors.Is(err, wantErr) || (err == nil) != (wantErr == nil) {
		h.fatalf("Compact(%d): error %v, want %v", rev, err, wantErr)
	}
	if err == nil {
		if ch == nil {
			h.fatalf("Compact(%d): nil channel", rev)
		}
		h.physical, h.physicalRev = ch, rev
	}
}

func (h *harness) opCompact() {
	b := h.db.NewIndexedBatch()
	defer b.Close()
	h.compactIn(b)
	h.commit(b)
	// Reads below the compacted revision fail; at and above, they work.
	h.checkSomeRevisions(2)
	if c := h.m.pubCompact; c > 1 {
		h.readStore([]byte{0}, []byte{0}, RangeOptions{Rev: c - 1})
	}
}

// opWaitPhysical waits until the latest compaction is physical, then checks
// that exactly the versions a read at or above it may need remain stored,
// and that reads are unaffected.
func (h *harness) opWaitPhysical() {
	if h.physical == nil {
		return
	}
	c := h.physicalRev
	h.note("wait for physical compaction at %d", c)
	select {
	case <-h.physical:
	case <-time.After(30 * time.Second): // a deadline, not a synchronisation sleep
		h.fatalf("physical compaction at %d not finished after 30s", c)
	}
	h.physical = nil
	h.checkStored(c)
	h.checkSomeRevisions(6)
	for _, v := range h.views {
		h.checkView(v)
	}
}

// checkStored compares the raw MVCC and revision-log keyspaces with what
// must remain after the compaction at c.
func (h *harness) checkStored(c int64) {
	h.t.Helper()
	got := map[string][]int64{}
	it, err := h.db.NewIter(&pebble.IterOptions{LowerBound: []byte{schema.MVCC}, UpperBound: []byte{schema.MVCC + 1}})
	if err != nil {
		h.fatalf("iter: %v", err)
	}
	for valid := it.First(); valid; valid = it.Next() {
		enc, main, _, err := splitVersionKey(it.Key())
		if err != nil {
			h.fatalf("stored key %x: %v", it.Key(), err)
		}
		key, err := decodeKey(enc)
		if err != nil {
			h.fatalf("stored key %x: %v", it.Key(), err)
		}
		got[string(key)] = append(got[string(key)], main)
	}
	if err := it.Close(); err != nil {
		h.fatalf("iter: %v", err)
	}
	h.m.mu.Lock()
	defer h.m.mu.Unlock()
	keys := h.m.keys()
	for k := range got {
		if _, ok := h.m.hist[k]; !ok {
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		if want := h.m.retained(k, c); !slices.Equal(got[k], want) {
			h.fatalf("after physical compaction at %d, key %q has stored versions %v, want %v", c, k, got[k], want)
		}
	}

	var gotLog, wantLog []string
	it, err = h.db.NewIter(&pebble.IterOptions{LowerBound: []byte{schema.RevLog}, UpperBound: []byte{schema.RevLog + 1}})
	if err != nil {
		h.fatalf("iter: %v", err)
	}
	for valid := it.First(); valid; valid = it.Next() {
		main, sub, err := splitRevLogKey(it.Key())
		if err != nil {
			h.fatalf("revision log key %x: %v", it.Key(), err)
		}
		gotLog = append(gotLog, fmt.Sprintf("%d.%d=%q", main, sub, it.Value()))
	}
	if err := it.Close(); err != nil {
		h.fatalf("iter: %v", err)
	}
	for _, e := range h.m.revlog {
		// The entry at the compacted revision itself stays: a watch may
		// start there.
		if e.main >= c {
			wantLog = append(wantLog, fmt.Sprintf("%d.%d=%q", e.main, e.sub, e.key))
		}
	}
	if !slices.Equal(gotLog, wantLog) {
		h.fatalf("after physical compaction at %d, revision log\n  %v\nwant\n  %v", c, gotLog, wantLog)
	}
}

// opView opens a ReadView, or checks and maybe closes an open one. Views
// must keep reading their revision across later writes and compactions.
func (h *harness) opView() {
	if len(h.views) < 3 && h.rng.IntN(2) == 0 {
		v, err := h.s.View()
		if err != nil {
			h.fatalf("View: %v", err)
		}
		if v.Rev() != h.m.pubRev {
			h.fatalf("View().Rev() = %d, want %d", v.Rev(), h.m.pubRev)
		}
		h.note("open view at %d", v.Rev())
		h.views = append(h.views, modelView{v: v, rev: h.m.pubRev, compact: h.m.pubCompact})
		return
	}
	if len(h.views) == 0 {
		return
	}
	i := h.rng.IntN(len(h.views))
	h.note("check view at %d", h.views[i].rev)
	h.checkView(h.views[i])
	if h.rng.IntN(2) == 0 {
		h.views[i].v.Close()
		h.views = slices.Delete(h.views, i, i+1)
	}
}

func (h *harness) checkView(v modelView) {
	h.t.Helper()
	for range 3 {
		key, end, _ := h.keyRange()
		o := h.rangeOpts(v.rev, v.compact)
		got, gotErr := v.v.Range(key, end, o)
		h.m.mu.Lock()
		want, wantErr := h.m.rangeAt(key, end, o, v.rev, v.compact)
		h.m.mu.Unlock()
		h.checkRange(fmt.Sprintf("ReadView(%d).Range", v.rev), key, end, o, got, gotErr, want, wantErr)
	}
}

// opAbandon stages writes and a compaction, discards the batch and calls
// Abandon: nothing of it may remain, and the next write gets the next
// revision.
func (h *harness) opAbandon() {
	h.note("abandon")
	b := h.db.NewIndexedBatch()
	t := h.s.Write(b)
	for range 1 + h.rng.IntN(3) {
		if _, err := t.Put(h.key(), h.value(), 0); err != nil {
			h.fatalf("Put: %v", err)
		}
	}
	t.End()
	if h.m.rev > h.m.compact {
		if _, err := h.s.Compact(b, h.m.rev); err != nil {
			h.fatalf("Compact(%d): %v", h.m.rev, err)
		}
	}
	if err := b.Close(); err != nil {
		h.fatalf("close batch: %v", err)
	}
	h.s.Abandon()
	if got, want := h.s.Rev(), h.m.pubRev; got != want {
		h.fatalf("Rev() = %d after Abandon, want %d", got, want)
	}
	if got, want := h.s.CompactRev(), h.m.pubCompact; got != want {
		h.fatalf("CompactRev() = %d after Abandon, want %d", got, want)
	}
	h.readStore([]byte{0}, []byte{0}, RangeOptions{})
	h.opWrite(1)
}

// TestCompactManyBatches makes the compactor work through more revision-log
// entries than one compaction batch holds (compactBatchKeys), over more
// distinct keys than one batch names, with the model checking exactly what
// remains.
func TestCompactManyBatches(t *testing.T) {
	h := newHarness(t, 1)
	write := func(fn func(t *WriteTxn, x *mtxn)) {
		h.op++
		b := h.db.NewIndexedBatch()
		defer b.Close()
		t, x := h.s.Write(b), h.m.write()
		fn(t, x)
		if got, want := t.End(), x.end(); got != want {
			h.fatalf("End() = %d, want %d", got, want)
		}
		h.commit(b)
	}
	compact := func(rev int64) {
		b := h.db.NewIndexedBatch()
		defer b.Close()
		h.compactAt(b, rev)
		h.commit(b)
		h.opWaitPhysical()
		h.checkSomeRevisions(20)
	}
	// Keys k0000.. and j0000.. get one or more versions each, some end
	// deleted; the revision log runs through several compaction batches,
	// and keys late in it appear nowhere in the first batch.
	n := 3 * compactBatchKeys / 2
	for round := 0; round < 2; round++ {
		for i := range n {
			k := []byte(fmt.Sprintf("k%04d", i))
			write(func(t *WriteTxn, x *mtxn) {
				v := []byte(fmt.Sprint(round))
				if _, err := t.Put(k, v, 0); err != nil {
					h.fatalf("Put: %v", err)
				}
				x.put(string(k), v, 0)
				if i%3 == 0 {
					k2 := []byte(fmt.Sprintf("j%04d", i/3))
					if _, err := t.Put(k2, v, 1); err != nil {
						h.fatalf("Put: %v", err)
					}
					x.put(string(k2), v, 1)
				}
			})
			if i%5 == 4 {
				write(func(t *WriteTxn, x *mtxn) {
					if _, err := t.DeleteRange(k, nil); err != nil {
						h.fatalf("DeleteRange: %v", err)
					}
					x.deleteRange(k, nil)
				})
			}
		}
		compact(h.m.rev - int64(round*3+1))
	}
	compact(h.m.rev)
	h.restart()
	h.checkStored(h.m.pubCompact)
}

// TestCompactResumesAfterRestart: a compaction that was scheduled (and is
// logically in force) but never physically run before the store closed is
// carried out after a restart.
func TestCompactResumesAfterRestart(t *testing.T) {
	h := newHarness(t, 2)
	h.noCompactor = true
	h.restart()
	for h.op = 0; h.op < 400; h.op++ {
		h.opWrite(1 + h.op%3)
		if h.op%100 == 99 {
			b := h.db.NewIndexedBatch()
			h.compactAt(b, h.m.rev-5)
			h.commit(b)
			b.Close()
			h.checkSomeRevisions(5)
		}
	}
	before := h.countStored()
	h.noCompactor = false
	h.restart()
	h.opWaitPhysical()
	if after := h.countStored(); after >= before {
		h.fatalf("%d versions stored after the resumed compaction, %d before", after, before)
	}
	h.checkAllRevisions()
}

func (h *harness) countStored() int {
	it, err := h.db.NewIter(&pebble.IterOptions{LowerBound: []byte{schema.MVCC}, UpperBound: []byte{schema.MVCC + 1}})
	if err != nil {
		h.fatalf("iter: %v", err)
	}
	defer it.Close()
	n := 0
	for valid := it.First(); valid; valid = it.Next() {
		n++
	}
	return n
}
