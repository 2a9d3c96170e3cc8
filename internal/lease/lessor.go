package lease

import (
	"bytes"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/zap"

	"github.com/cairnkv/cairn/internal/clock"
	"github.com/cairnkv/cairn/internal/storage/schema"
)

// MaxTTL is etcd's largest lease TTL, in seconds.
const MaxTTL = 9_000_000_000

// Defaults, as etcd's lessor.
const (
	// DefaultRevokeRate is how many expired leases the primary revokes per
	// second at most, so an expiry storm cannot starve client writes.
	DefaultRevokeRate = 1000
	// DefaultCheckpointInterval is the longest interval at which the
	// primary records a lease's remaining TTL through raft (etcd: 5
	// minutes, only for leases longer than that, behind a feature gate;
	// Cairn always checkpoints, every lease: see checkpointInterval).
	DefaultCheckpointInterval = 5 * time.Minute
	// MinCheckpointInterval is the shortest interval at which one lease is
	// checkpointed, whatever its TTL.
	MinCheckpointInterval = time.Second
	// DefaultCheckpointRate is how many leases the primary checkpoints per
	// second at most (the member's lease loop enforces it): 10 raft
	// entries of MaxCheckpointBatch, about 20 KB each. With more leases
	// due, checkpoints are late, which loosens the bound (docs/design.md).
	DefaultCheckpointRate = 10_000
	// ExpiredRetryInterval is how long the primary waits before it offers
	// an expired lease for revocation again, should the first revoke be
	// lost (etcd: 3 s).
	ExpiredRetryInterval = 3 * time.Second
	// MaxCheckpointBatch caps the checkpoints of one raft entry.
	MaxCheckpointBatch = 1000
)

// Errors; package api maps them to etcd's rpctypes.
var (
	ErrNotFound    = errors.New("lease: lease not found")
	ErrExists      = errors.New("lease: lease already exists")
	ErrTTLTooLarge = errors.New("lease: too large lease TTL")
	// ErrNotPrimary: only the primary (leader) renews leases and knows
	// their remaining TTLs; the caller forwards to the leader.
	ErrNotPrimary = errors.New("lease: not the primary lessor")
	// ErrNeedsClear: the lease has a checkpointed remaining TTL that a
	// renewal must clear through raft first (see Member.renewLocal).
	ErrNeedsClear = errors.New("lease: checkpoint to clear before renewal")
	// ErrCheckpointPending: a checkpoint of the lease is on its way
	// through raft; renew once it is applied (CheckpointPending).
	ErrCheckpointPending = errors.New("lease: checkpoint in flight")
)

// Config configures a Lessor.
type Config struct {
	// Clock drives expiry and checkpoints (clock.Real{} if nil).
	Clock clock.Clock
	// CheckpointInterval caps the interval at which a lease that is not
	// kept alive gets its remaining TTL checkpointed
	// (DefaultCheckpointInterval if 0); see checkpointInterval.
	CheckpointInterval time.Duration
	// RevokeRate is the number of expired leases revoked per second at most
	// (DefaultRevokeRate if 0). Promote spreads expiries piled into one
	// second over later seconds to stay within it.
	RevokeRate int
}

// Lessor is the lease table of one member.
type Lessor struct {
	lg    *zap.Logger
	db    *pebble.DB
	clock clock.Clock
	cfg   Config
	met   *metrics

	// batchAttached holds the keys attached during the current apply batch
	// (applier goroutine only; cleared by EndBatch), so that a revocation
	// finds them without reading the batch (see AttachedKeys).
	batchAttached map[int64]map[string]struct{}

	mu struct {
		sync.Mutex
		leases map[int64]*lease
		// primary is set between Promote and Demote; expiry and
		// checkpoints are only kept while it is.
		primary     bool
		expiry      expiryHeap
		checkpoints checkpointHeap
		// cpSeq numbers the checkpoint batches handed out by
		// DueCheckpoints.
		cpSeq uint64
		// cpSettled, when not nil, is closed (and cleared) the next time
		// an in-flight checkpoint is applied or given up (see
		// CheckpointPending).
		cpSettled chan struct{}
	}
}

// lease is one lease in memory: 136 bytes plus its map entry.
type lease struct {
	id  int64
	ttl int64 // granted TTL in seconds (already raised to the minimum)
	// remaining is the last checkpointed remaining TTL in seconds; 0 means
	// none (a new leader counts the full TTL).
	remaining int64
	// expiry is when the lease expires (primary only).
	expiry time.Time
	// due orders the expiry heap: expiry, or a retry time once the lease
	// was handed out for revocation.
	due time.Time
	idx int // index in the expiry heap, -1 if not in it
	// Checkpoint schedule (primary only). renewedAt is the last renewal
	// on this primary (zero: none since promotion or grant); cpAt is when
	// the lease's next checkpoint is due (zero: none planned; heap entries
	// with another time are stale); cpSeq is the batch of the checkpoint
	// in flight through raft (0: none).
	renewedAt time.Time
	cpAt      time.Time
	cpSeq     uint64
}

// New loads the lease table from db.
func New(lg *zap.Logger, db *pebble.DB, cfg Config) (*Lessor, error) {
	if lg == nil {
		lg = zap.NewNop()
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.CheckpointInterval <= 0 {
		cfg.CheckpointInterval = DefaultCheckpointInterval
	}
	if cfg.RevokeRate <= 0 {
		cfg.RevokeRate = DefaultRevokeRate
	}
	l := &Lessor{lg: lg, db: db, clock: cfg.Clock, cfg: cfg, met: newMetrics()}
	if err := l.Reload(); err != nil {
		return nil, err
	}
	return l, nil
}

// Reload replaces the table with what the DB holds (at start, and after a
// snapshot replaced the state). It demotes the lessor; the member promotes
// it again if it leads.
func (l *Lessor) Reload() error {
	leases := make(map[int64]*lease)
	it, err := l.db.NewIter(&pebble.IterOptions{LowerBound: []byte{schema.Lease}, UpperBound: []byte{schema.Lease + 1}})
	if err != nil {
		return fmt.Errorf("lease: load: %w", err)
	}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != 9 {
			_ = it.Close()
			return fmt.Errorf("lease: record key %x has %d bytes, want 9", k, len(k))
		}
		id := int64(binary.BigEndian.Uint64(k[1:]))
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return fmt.Errorf("lease: load %x: %w", id, err)
		}
		ls, err := decodeRecord(id, v)
		if err != nil {
			_ = it.Close()
			return err
		}
		leases[id] = ls
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("lease: load: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mu.leases = leases
	l.demoteLocked()
	return nil
}

func recordKey(id int64) []byte {
	return binary.BigEndian.AppendUint64([]byte{schema.Lease}, uint64(id))
}

func keyPrefix(id int64) []byte {
	return binary.BigEndian.AppendUint64([]byte{schema.LeaseKey}, uint64(id))
}

func attachKey(id int64, key []byte) []byte {
	return append(keyPrefix(id), key...)
}

const recordVersion = 1

func encodeRecord(ls *lease) []byte {
	b := []byte{recordVersion}
	b = binary.BigEndian.AppendUint64(b, uint64(ls.ttl))
	return binary.BigEndian.AppendUint64(b, uint64(ls.remaining))
}

func decodeRecord(id int64, v []byte) (*lease, error) {
	if len(v) != 17 || v[0] != recordVersion {
		return nil, fmt.Errorf("lease: record of lease %x is corrupt (%d bytes, version %d)", id, len(v), firstByte(v))
	}
	return &lease{id: id, ttl: int64(binary.BigEndian.Uint64(v[1:])), remaining: int64(binary.BigEndian.Uint64(v[9:])), idx: -1}, nil
}

func firstByte(v []byte) int {
	if len(v) == 0 {
		return -1
	}
	return int(v[0])
}

// must panics on a batch staging error: staging into an in-memory batch
// fails only on a broken invariant.
func must(err error) {
	if err != nil {
		panic(fmt.Sprintf("lease: staging into batch: %v", err))
	}
}

// ---- applier side ----

// Exists reports whether lease id is granted and not revoked.
func (l *Lessor) Exists(id int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.mu.leases[id]
	return ok
}

// StageGrant grants lease id with ttl seconds in batch b and returns the
// granted TTL. The proposer raised ttl to the minimum already, so every
// member grants the same TTL whatever its own election timeout.
func (l *Lessor) StageGrant(b *pebble.Batch, id, ttl int64) (int64, error) {
	if id == 0 {
		return 0, ErrNotFound // Compat: etcd's lessor refuses ID 0 so
	}
	if ttl > MaxTTL {
		return 0, ErrTTLTooLarge
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.mu.leases[id]; ok {
		return 0, ErrExists
	}
	ls := &lease{id: id, ttl: ttl, idx: -1}
	must(b.Set(recordKey(id), encodeRecord(ls), nil))
	l.mu.leases[id] = ls
	if l.mu.primary {
		l.refreshLocked(ls, 0)
		l.scheduleCheckpointLocked(ls, l.clock.Now().Add(l.checkpointInterval(ls)))
	}
	l.met.granted.Inc()
	l.met.ttl.Observe(float64(ttl))
	return ttl, nil
}

// Keys returns the keys attached to lease id, in key order, as r (the
// applier's indexed batch, or the DB) holds them.
func Keys(r pebble.Reader, id int64) ([][]byte, error) {
	prefix := keyPrefix(id)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: schema.PrefixEnd(prefix)})
	if err != nil {
		return nil, fmt.Errorf("lease: keys of %x: %w", id, err)
	}
	var keys [][]byte
	for it.First(); it.Valid(); it.Next() {
		keys = append(keys, slices.Clone(it.Key()[len(prefix):]))
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("lease: keys of %x: %w", id, err)
	}
	return keys, nil
}

// StageRevoke removes lease id's record from batch b. The caller deletes
// the attached keys (Keys) in the same batch, which detaches them.
func (l *Lessor) StageRevoke(b *pebble.Batch, id int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	ls, ok := l.mu.leases[id]
	if !ok {
		return ErrNotFound
	}
	must(b.Delete(recordKey(id), nil))
	delete(l.mu.leases, id)
	if ls.idx >= 0 {
		heap.Remove(&l.mu.expiry, ls.idx)
	}
	l.met.revoked.Inc()
	return nil
}

// StageAttach records in b that key belongs to lease id.
func (l *Lessor) StageAttach(b *pebble.Batch, id int64, key []byte) {
	must(b.Set(attachKey(id, key), nil, nil))
	if l.batchAttached == nil {
		l.batchAttached = make(map[int64]map[string]struct{})
	}
	ks := l.batchAttached[id]
	if ks == nil {
		ks = make(map[string]struct{})
		l.batchAttached[id] = ks
	}
	ks[string(key)] = struct{}{}
}

// StageDetach records in b that key no longer belongs to lease id.
func (l *Lessor) StageDetach(b *pebble.Batch, id int64, key []byte) {
	must(b.Delete(attachKey(id, key), nil))
	delete(l.batchAttached[id], string(key))
}

// EndBatch forgets the keys attached in the apply batch that was just
// committed (they are in the DB now).
func (l *Lessor) EndBatch() {
	clear(l.batchAttached)
}

// AttachedKeys returns, in key order, the keys that may be attached to
// lease id: those in db (as of the start of the apply batch) and those
// attached during it. A caller that must be exact checks each key's live
// version: one detached during the batch carries another lease, or none.
// Unlike Keys on the batch, this works on an unindexed batch.
func (l *Lessor) AttachedKeys(db pebble.Reader, id int64) ([][]byte, error) {
	keys, err := Keys(db, id)
	if err != nil {
		return nil, err
	}
	if extra := l.batchAttached[id]; len(extra) > 0 {
		seen := make(map[string]bool, len(keys))
		for _, k := range keys {
			seen[string(k)] = true
		}
		for k := range extra {
			if !seen[k] {
				keys = append(keys, []byte(k))
			}
		}
		slices.SortFunc(keys, func(a, b []byte) int { return bytes.Compare(a, b) })
	}
	return keys, nil
}

// StageCheckpoint records lease id's remaining TTL (0: the full TTL, as a
// renewal clears it). A checkpoint of a lease that is gone is ignored.
func (l *Lessor) StageCheckpoint(b *pebble.Batch, id, remaining int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ls, ok := l.mu.leases[id]
	if !ok {
		return
	}
	ls.remaining = max(remaining, 0)
	must(b.Set(recordKey(id), encodeRecord(ls), nil))
	if !l.mu.primary {
		return
	}
	if ls.cpSeq != 0 {
		ls.cpSeq = 0
		l.settledLocked()
	}
	now := l.clock.Now()
	if ls.remaining > 0 && ls.expiry.Sub(now) > time.Duration(ls.remaining+1)*time.Second {
		// Renewed after this checkpoint was taken (possible only if it
		// was handed out in an earlier term of this member: renewals wait
		// for checkpoints in flight): the recorded remaining TTL is stale
		// and would make a new leader expire the lease early. Record the
		// current one at once.
		l.scheduleCheckpointLocked(ls, now)
		return
	}
	l.scheduleCheckpointLocked(ls, now.Add(l.checkpointInterval(ls)))
}

// settledLocked wakes the renewals waiting for a checkpoint in flight.
func (l *Lessor) settledLocked() {
	if l.mu.cpSettled != nil {
		close(l.mu.cpSettled)
		l.mu.cpSettled = nil
	}
}

// ---- reads ----

// Info is what LeaseTimeToLive reports.
type Info struct {
	ID         int64
	GrantedTTL int64
	// TTL is the remaining TTL in seconds (primary only).
	TTL int64
}

// Leases returns the IDs of every lease, ascending.
func (l *Lessor) Leases() []int64 {
	l.mu.Lock()
	ids := make([]int64, 0, len(l.mu.leases))
	for id := range l.mu.leases {
		ids = append(ids, id)
	}
	l.mu.Unlock()
	slices.Sort(ids)
	return ids
}

// Len returns the number of leases.
func (l *Lessor) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.mu.leases)
}

// TimeToLive returns lease id's granted and remaining TTL. Only the
// primary knows the remaining TTL: elsewhere it returns ErrNotPrimary.
func (l *Lessor) TimeToLive(id int64) (Info, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.mu.primary {
		return Info{}, ErrNotPrimary
	}
	ls, ok := l.mu.leases[id]
	if !ok {
		return Info{}, ErrNotFound
	}
	// Compat: etcd truncates the remaining duration to whole seconds.
	rem := int64(ls.expiry.Sub(l.clock.Now()).Seconds())
	return Info{ID: id, GrantedTTL: ls.ttl, TTL: rem}, nil
}

// ---- primary side ----

// IsPrimary reports whether the lessor is promoted.
func (l *Lessor) IsPrimary() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.primary
}

// NeedsClear reports whether lease id has a checkpointed remaining TTL that
// a renewal must clear through raft first (so that a later leader does not
// take the stale, shorter remaining TTL).
func (l *Lessor) NeedsClear(id int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	ls, ok := l.mu.leases[id]
	return ok && ls.remaining > 0
}

// CheckpointPending returns nil if lease id has no checkpoint in flight,
// else a channel that is closed once some checkpoint in flight is applied
// or given up (the caller checks again).
func (l *Lessor) CheckpointPending(id int64) <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	ls, ok := l.mu.leases[id]
	if !ok || ls.cpSeq == 0 {
		return nil
	}
	if l.mu.cpSettled == nil {
		l.mu.cpSettled = make(chan struct{})
	}
	return l.mu.cpSettled
}

// Renew restarts lease id's countdown at its full TTL and returns the TTL.
// Only the primary renews. A lease past its expiry is as good as revoked:
// its revocation is on its way, so it is not found.
//
// A renewal must never be undone by a checkpoint on the next leader, which
// knows only what went through raft. So Renew refuses while a checkpoint
// of the lease is in flight (ErrCheckpointPending: it would record the
// pre-renewal remaining TTL after the renewal) or recorded
// (ErrNeedsClear): the caller clears it through raft first.
func (l *Lessor) Renew(id int64) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.mu.primary {
		return -1, ErrNotPrimary
	}
	ls, ok := l.mu.leases[id]
	now := l.clock.Now()
	if !ok || !now.Before(ls.expiry) {
		return -1, ErrNotFound
	}
	switch {
	case ls.cpSeq != 0:
		return -1, ErrCheckpointPending
	case ls.remaining > 0:
		return -1, ErrNeedsClear
	}
	l.renewLocked(ls, now)
	return ls.ttl, nil
}

func (l *Lessor) renewLocked(ls *lease, now time.Time) {
	l.refreshLocked(ls, 0)
	ls.renewedAt = now
	l.met.renewed.Inc()
}

// TryRenew is Renew for the common case, under one lock: it renews only if
// this lessor is primary, the lease exists and has no checkpoint to clear
// or in flight. ok is false when the caller must take the full path (see
// Member).
func (l *Lessor) TryRenew(id int64) (ttl int64, ok bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ls, found := l.mu.leases[id]
	if !l.mu.primary || !found || ls.remaining > 0 || ls.cpSeq != 0 {
		return -1, false, nil
	}
	now := l.clock.Now()
	if !now.Before(ls.expiry) {
		return -1, true, ErrNotFound
	}
	l.renewLocked(ls, now)
	return ls.ttl, true, nil
}

// refreshLocked restarts ls's countdown: expiry = now + extend + the
// checkpointed remaining TTL, or the full TTL when there is none.
func (l *Lessor) refreshLocked(ls *lease, extend time.Duration) {
	rem := ls.ttl
	if ls.remaining > 0 {
		rem = ls.remaining
	}
	ls.expiry = l.clock.Now().Add(extend + time.Duration(rem)*time.Second)
	l.setDueLocked(ls, ls.expiry)
}

func (l *Lessor) setDueLocked(ls *lease, due time.Time) {
	ls.due = due
	if ls.idx >= 0 {
		heap.Fix(&l.mu.expiry, ls.idx)
	} else {
		heap.Push(&l.mu.expiry, ls)
	}
}

// Promote makes the lessor primary: every lease gets remaining TTL (the
// checkpointed one, else its full TTL) plus extend, so a leader change
// never expires a lease early (etcd passes one election timeout). If more
// leases would then expire within one second than 3/4 of the revoke rate,
// the later ones in that second are pushed back, so a leader change does
// not line up a revoke storm (etcd-io/etcd#8097).
//
// Every lease's first checkpoint is due extend + 1 s after promotion: the
// remaining TTL it records is then at least 1 s (whole seconds, rounded
// up) below the one this primary started from, so a leader that lasts
// that long (plus a commit) takes back the extension it granted and more,
// and repeated elections cannot keep a lease alive (docs/design.md).
func (l *Lessor) Promote(extend time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mu.primary = true
	l.mu.expiry = l.mu.expiry[:0]
	l.mu.checkpoints = l.mu.checkpoints[:0]
	now := l.clock.Now()
	all := make([]*lease, 0, len(l.mu.leases))
	for _, ls := range l.mu.leases {
		ls.idx = -1
		rem := ls.ttl
		if ls.remaining > 0 {
			rem = ls.remaining
		}
		ls.expiry = now.Add(extend + time.Duration(rem)*time.Second)
		all = append(all, ls)
	}
	// Deterministic order for equal expiries (map order is random).
	sort.Slice(all, func(i, j int) bool {
		if !all[i].expiry.Equal(all[j].expiry) {
			return all[i].expiry.Before(all[j].expiry)
		}
		return all[i].id < all[j].id
	})
	perSecond := max(3*l.cfg.RevokeRate/4, 1)
	// Windows are [start, start+1s); a full window pushes the next
	// leases to the following second. Leases only ever move later.
	var windowStart time.Time
	inWindow := 0
	for i, ls := range all {
		switch {
		case i == 0, !ls.expiry.Before(windowStart.Add(time.Second)):
			windowStart, inWindow = ls.expiry, 0
		case inWindow >= perSecond:
			windowStart, inWindow = windowStart.Add(time.Second), 0
		}
		if ls.expiry.Before(windowStart) {
			ls.expiry = windowStart
		}
		inWindow++
		ls.due = ls.expiry
		ls.idx = len(l.mu.expiry)
		l.mu.expiry = append(l.mu.expiry, ls)
	}
	heap.Init(&l.mu.expiry)
	first := now.Add(extend + time.Second)
	for _, ls := range all {
		ls.renewedAt, ls.cpAt, ls.cpSeq = time.Time{}, time.Time{}, 0
		l.scheduleCheckpointLocked(ls, first)
	}
}

// Demote stops expiry and checkpoints: only a primary keeps countdowns.
func (l *Lessor) Demote() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.demoteLocked()
}

func (l *Lessor) demoteLocked() {
	l.mu.primary = false
	for _, ls := range l.mu.expiry {
		ls.idx = -1
	}
	l.mu.expiry = nil
	l.mu.checkpoints = nil
	for _, ls := range l.mu.leases {
		ls.expiry, ls.due = time.Time{}, time.Time{}
		ls.renewedAt, ls.cpAt, ls.cpSeq = time.Time{}, time.Time{}, 0
	}
	// Renewals waiting for a checkpoint fail over to the new leader.
	l.settledLocked()
}

// Expired returns up to limit leases past their expiry, earliest first,
// for the caller to revoke through raft. Each is offered again after
// ExpiredRetryInterval should its revocation not happen.
func (l *Lessor) Expired(limit int) []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.mu.primary {
		return nil
	}
	now := l.clock.Now()
	var ids []int64
	for len(ids) < limit && len(l.mu.expiry) > 0 {
		ls := l.mu.expiry[0]
		if now.Before(ls.due) {
			break
		}
		ids = append(ids, ls.id)
		l.setDueLocked(ls, now.Add(ExpiredRetryInterval))
	}
	return ids
}

// NextExpiry returns when the earliest lease expires (zero if none or not
// primary).
func (l *Lessor) NextExpiry() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.mu.primary || len(l.mu.expiry) == 0 {
		return time.Time{}
	}
	return l.mu.expiry[0].due
}

// checkpointInterval is how often lease ls, when not kept alive, has its
// remaining TTL recorded: half its TTL, at least MinCheckpointInterval, at
// most Config.CheckpointInterval. Half the TTL keeps leases kept alive by
// clientv3 (a renewal every TTL/3) free of checkpoints (see
// DueCheckpoints), and bounds what a leader change can add to a lease that
// is not kept alive.
func (l *Lessor) checkpointInterval(ls *lease) time.Duration {
	iv := max(time.Duration(ls.ttl)*time.Second/2, MinCheckpointInterval)
	return min(iv, l.cfg.CheckpointInterval)
}

// scheduleCheckpointLocked plans ls's next checkpoint at at.
func (l *Lessor) scheduleCheckpointLocked(ls *lease, at time.Time) {
	ls.cpAt = at
	heap.Push(&l.mu.checkpoints, checkpoint{id: ls.id, at: at})
}

// DueCheckpoints returns up to limit checkpoints that are due, each
// lease's remaining TTL rounded up to whole seconds, and the number of the
// batch. The leases are in flight until the batch is applied
// (StageCheckpoint) or given up (CheckpointsFailed); renewals wait for
// them meanwhile.
//
// A lease renewed on this primary within its interval is skipped: a new
// leader gives it its full TTL (plus the extension), which is no less
// than it has, so no raft entry is needed for leases that are kept alive.
// Its checkpoint moves to one interval after the renewal, so a lease that
// stops being kept alive is checkpointed one interval after its last
// renewal.
func (l *Lessor) DueCheckpoints(limit int) ([]*pb.LeaseCheckpoint, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.mu.primary {
		return nil, 0
	}
	now := l.clock.Now()
	var cps []*pb.LeaseCheckpoint
	seq := l.mu.cpSeq + 1
	for len(cps) < limit && len(l.mu.checkpoints) > 0 && !now.Before(l.mu.checkpoints[0].at) {
		cp := heap.Pop(&l.mu.checkpoints).(checkpoint)
		ls, ok := l.mu.leases[cp.id]
		if !ok || !ls.cpAt.Equal(cp.at) || ls.cpSeq != 0 {
			continue // gone, re-planned, or in flight
		}
		ls.cpAt = time.Time{}
		rem := int64(math.Ceil(ls.expiry.Sub(now).Seconds()))
		if rem <= 0 {
			continue // expired: its revocation is under way
		}
		iv := l.checkpointInterval(ls)
		switch {
		case ls.remaining > 0 && rem > ls.remaining:
			// The record is stale (lower than the truth): fix it, or
			// clear it if the lease has its full TTL again.
			if rem >= ls.ttl {
				rem = 0
			}
		case ls.remaining == 0 && !ls.renewedAt.IsZero() && now.Sub(ls.renewedAt) < iv:
			// Kept alive: nothing to write.
			l.scheduleCheckpointLocked(ls, ls.renewedAt.Add(iv))
			continue
		case ls.remaining == 0 && rem >= ls.ttl, rem == ls.remaining:
			// The record already gives a new leader at least this.
			l.scheduleCheckpointLocked(ls, now.Add(iv))
			continue
		}
		ls.cpSeq = seq
		cps = append(cps, &pb.LeaseCheckpoint{ID: cp.id, Remaining_TTL: rem})
	}
	if len(cps) == 0 {
		return nil, 0
	}
	l.mu.cpSeq = seq
	return cps, seq
}

// CheckpointsFailed is told that checkpoint batch seq (from
// DueCheckpoints) did not go through raft: its leases are checkpointed
// again at once, and their renewals go ahead.
func (l *Lessor) CheckpointsFailed(seq uint64, cps []*pb.LeaseCheckpoint) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.mu.primary {
		return
	}
	now := l.clock.Now()
	for _, cp := range cps {
		if ls, ok := l.mu.leases[cp.ID]; ok && ls.cpSeq == seq {
			ls.cpSeq = 0
			l.scheduleCheckpointLocked(ls, now)
		}
	}
	l.settledLocked()
}

// ---- heaps ----

type expiryHeap []*lease

func (h expiryHeap) Len() int { return len(h) }
func (h expiryHeap) Less(i, j int) bool {
	if !h[i].due.Equal(h[j].due) {
		return h[i].due.Before(h[j].due)
	}
	return h[i].id < h[j].id
}
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *expiryHeap) Push(x any) {
	ls := x.(*lease)
	ls.idx = len(*h)
	*h = append(*h, ls)
}
func (h *expiryHeap) Pop() any {
	old := *h
	ls := old[len(old)-1]
	old[len(old)-1] = nil
	ls.idx = -1
	*h = old[:len(old)-1]
	return ls
}

type checkpoint struct {
	id int64
	at time.Time
}

type checkpointHeap []checkpoint

func (h checkpointHeap) Len() int           { return len(h) }
func (h checkpointHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h checkpointHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *checkpointHeap) Push(x any)        { *h = append(*h, x.(checkpoint)) }
func (h *checkpointHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	*h = old[:len(old)-1]
	return c
}
