package member

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/cairnkv/cairn/internal/apply"
	"github.com/cairnkv/cairn/internal/clock"
	"github.com/cairnkv/cairn/internal/lease"
	"github.com/cairnkv/cairn/internal/raftnode"
)

// maxPendingRevokes bounds the expired-lease revocations in flight.
const maxPendingRevokes = 256

// Peer-port paths a follower uses to reach the leader's lessor (etcd has
// /leases and /leases/internal for the same purpose).
const (
	leaseRenewPath      = "/cairn/lease/renew"
	leaseRenewBatchPath = "/cairn/lease/renew/batch"
	leaseTTLPath        = "/cairn/lease/timetolive"
)

// Renewal forwarding: a follower sends the renewals its clients make to
// the leader in batches, at most maxRenewBatchesInFlight requests at a
// time per leader URL, each with up to maxRenewBatch lease IDs. A single
// client still gets one request per keepalive (no waiting to fill a
// batch); many clients share requests, which is what makes keepalives
// through a follower cheap (etcd posts one HTTP request per keepalive).
const (
	maxRenewBatchesInFlight = 4
	maxRenewBatch           = 1024
)

// leases is the member's part of the lease machinery: the lessor, the
// clock it runs on, and the state of the leader's lease loop.
type leases struct {
	lessor  *lease.Lessor
	clock   clock.Clock
	client  *http.Client
	expired prometheus.Counter
	// confirmed caches the last confirmation of leadership (see
	// confirmLeader).
	confirmed atomic.Pointer[leaderConfirmation]

	// batchers forwards renewals to the leader, one per leader peer URL.
	batchMu  sync.Mutex
	batchers map[string]*renewBatcher
	// base is the context of forwarded batches, canceled when the lease
	// loop ends (the member stops).
	base       context.Context
	cancelBase context.CancelFunc
}

// renewBatcher gathers the renewals a follower forwards to one leader URL.
type renewBatcher struct {
	mu       sync.Mutex
	pending  []*renewCall
	inflight int
}

// renewCall is one forwarded renewal waiting for its batch.
type renewCall struct {
	id   int64
	ttl  int64
	err  error
	done chan struct{}
}

type leaderConfirmation struct {
	term uint64
	at   time.Time
}

// LeaseOptions are lease test seams.
type LeaseOptions struct {
	// CheckpointInterval, RevokeRate and CheckpointRate override the
	// lessor's defaults.
	CheckpointInterval time.Duration
	RevokeRate         int
	CheckpointRate     int
}

func newLeases(lg *zap.Logger, m *Member, clk clock.Clock, o LeaseOptions) (*leases, error) {
	if clk == nil {
		clk = clock.Real{}
	}
	l, err := lease.New(lg.Named("lease"), m.db.DB, lease.Config{Clock: clk, CheckpointInterval: o.CheckpointInterval, RevokeRate: o.RevokeRate})
	if err != nil {
		return nil, err
	}
	base, cancelBase := context.WithCancel(context.Background())
	return &leases{
		base:       base,
		cancelBase: cancelBase,
		lessor:     l,
		clock:      clk,
		client:     &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute}},
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "etcd_debugging_server_lease_expired_total", Help: "The total number of expired leases.",
		}),
	}, nil
}

// Lessor returns the member's lease table.
func (m *Member) Lessor() *lease.Lessor { return m.leases.lessor }

// MinLeaseTTL is etcd's minimum lease TTL in seconds: 1.5 election
// timeouts, counted in whole heartbeat ticks and rounded up to a second
// (default 100 ms / 1 s: 2 s).
func (m *Member) MinLeaseTTL() int64 {
	hb := m.cfg.HeartbeatInterval
	ticks := int64(m.cfg.ElectionTimeout / hb)
	return int64(math.Ceil((time.Duration(3*ticks/2) * hb).Seconds()))
}

// LeaseGrant picks the ID (when r.ID is 0) and raises the TTL to the
// minimum before proposing, so that every member applies the same grant.
func (m *Member) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	id := r.ID
	for id == 0 {
		// Compat: etcd uses its request ID generator, positive IDs only.
		id = int64(m.nextID() & (1<<63 - 1))
	}
	if r.TTL > lease.MaxTTL {
		return nil, lease.ErrTTLTooLarge
	}
	ttl := max(r.TTL, m.MinLeaseTTL())
	res, err := m.Propose(ctx, &pb.InternalRaftRequest{LeaseGrant: &pb.LeaseGrantRequest{ID: id, TTL: ttl}})
	if err != nil {
		return nil, err
	}
	if res.Err != nil {
		return nil, res.Err
	}
	return res.Resp.(*pb.LeaseGrantResponse), nil
}

// proposeAsLeader is Propose for entries only a leader may make.
func (m *Member) proposeAsLeader(ctx context.Context, req *pb.InternalRaftRequest) (apply.Result, error) {
	id := m.nextID()
	req.Header = &pb.RequestHeader{ID: id}
	data, err := proto.Marshal(req)
	if err != nil {
		return apply.Result{}, err
	}
	ch, done := m.register(id)
	defer done()
	tctx, cancel := context.WithTimeout(ctx, m.requestTimeout())
	defer cancel()
	errc, err := m.node.ProposeAsLeader(tctx, data)
	if err != nil {
		return apply.Result{}, m.ctxErr(ctx, err)
	}
	select {
	case r := <-ch:
		return r, r.Err
	case err := <-errc:
		return apply.Result{}, err
	case <-tctx.Done():
		return apply.Result{}, m.ctxErr(ctx, tctx.Err())
	case <-m.stopping:
		return apply.Result{}, ErrStopped
	}
}

// confirmLeader returns nil if this member is the leader now. A ReadIndex
// round acknowledged by a quorum proves leadership at the moment the round
// started; with CheckQuorum the followers that acknowledged refuse votes
// for an election timeout after hearing from the leader, so no other leader
// can exist for that long. Half of it is used as a cache, so keepalives do
// not each cost a round.
func (m *Member) confirmLeader(ctx context.Context) error {
	if m.node.Leader() != m.id {
		return lease.ErrNotPrimary
	}
	if m.leaderConfirmedRecently() {
		return nil
	}
	return m.confirmLeaderRound(ctx)
}

// confirmLeaderRound confirms leadership with a ReadIndex round and
// records the confirmation.
func (m *Member) confirmLeaderRound(ctx context.Context) error {
	term := m.node.Term()
	now := m.leases.clock.Now()
	if _, err := m.node.ReadIndex(ctx); err != nil {
		if ctx.Err() != nil {
			return m.ctxErr(ctx, err)
		}
		return lease.ErrNotPrimary
	}
	if m.node.Leader() != m.id || m.node.Term() != term {
		return lease.ErrNotPrimary
	}
	m.leases.confirmed.Store(&leaderConfirmation{term: term, at: now})
	return nil
}

// leaderConfirmedRecently reports whether confirmLeader would return at
// once.
func (m *Member) leaderConfirmedRecently() bool {
	if m.node.SoleVoterLeader() {
		return true
	}
	c := m.leases.confirmed.Load()
	return c != nil && c.term == m.node.Term() && m.leases.clock.Now().Sub(c.at) < m.cfg.ElectionTimeout/2
}

// waitCommittedApplied waits until everything committed is applied, so a
// lease granted just before is known (etcd's waitAppliedIndex).
func (m *Member) waitCommittedApplied(ctx context.Context) error {
	return m.ctxErr(ctx, m.applier.WaitApplied(ctx, m.node.CommittedIndex()))
}

// renewLocal renews on this member if it is the primary lessor.
func (m *Member) renewLocal(ctx context.Context, id int64) (int64, error) {
	l := m.leases.lessor
	if !l.IsPrimary() {
		return -1, lease.ErrNotPrimary
	}
	if err := m.confirmLeader(ctx); err != nil {
		return -1, err
	}
	if !l.Exists(id) {
		// It may be granted in an entry not applied yet.
		if err := m.waitCommittedApplied(ctx); err != nil {
			return -1, err
		}
	}
	for {
		ttl, err := l.Renew(id)
		switch {
		case errors.Is(err, lease.ErrCheckpointPending):
			// Its checkpoint would record the remaining TTL from before
			// this renewal: wait until it is applied, then clear it.
			if ch := l.CheckpointPending(id); ch != nil {
				select {
				case <-ch:
				case <-ctx.Done():
					return -1, m.ctxErr(ctx, ctx.Err())
				case <-m.stopping:
					return -1, ErrStopped
				}
			}
		case errors.Is(err, lease.ErrNeedsClear):
			// A checkpointed remaining TTL would outlive this renewal on
			// a new leader and expire the lease early: clear it through
			// raft first. Leases kept alive are not checkpointed, so
			// this costs at most two entries per lease per checkpoint
			// interval (as etcd), and only for leases that were idle.
			_, err := m.proposeAsLeader(ctx, &pb.InternalRaftRequest{LeaseCheckpoint: &pb.LeaseCheckpointRequest{
				Checkpoints: []*pb.LeaseCheckpoint{{ID: id, Remaining_TTL: 0}},
			}})
			if errors.Is(err, raftnode.ErrNotLeader) {
				return -1, lease.ErrNotPrimary
			}
			if err != nil {
				return -1, err
			}
		default:
			return ttl, err
		}
	}
}

// LeaseRenew renews lease id and returns its TTL. Only the leader renews;
// a follower forwards to the leader's peer port. It returns
// lease.ErrNotFound for a lease that does not exist or has expired.
func (m *Member) LeaseRenew(ctx context.Context, id int64) (int64, error) {
	// Fast path, without a timer or a round trip: this member leads, its
	// leadership is confirmed (sole voter, or a recent ReadIndex round),
	// and the lease needs no checkpoint cleared.
	if m.node.Leader() == m.id && m.leaderConfirmedRecently() {
		if ttl, ok, err := m.leases.lessor.TryRenew(id); ok {
			return ttl, err
		}
	}
	return retryOnLeader(ctx, m, func(ctx context.Context) (int64, error) { return m.renewLocal(ctx, id) },
		func(ctx context.Context, url string) (int64, error) { return m.forwardRenew(ctx, url, id) })
}

// LeaseTimeToLive reports lease id's TTLs (and keys), from the leader.
func (m *Member) LeaseTimeToLive(ctx context.Context, id int64, keys bool) (*pb.LeaseTimeToLiveResponse, error) {
	return retryOnLeader(ctx, m, func(ctx context.Context) (*pb.LeaseTimeToLiveResponse, error) { return m.ttlLocal(ctx, id, keys) },
		func(ctx context.Context, url string) (*pb.LeaseTimeToLiveResponse, error) {
			return m.forwardTTL(ctx, url, id, keys)
		})
}

func (m *Member) ttlLocal(ctx context.Context, id int64, withKeys bool) (*pb.LeaseTimeToLiveResponse, error) {
	l := m.leases.lessor
	if !l.IsPrimary() {
		return nil, lease.ErrNotPrimary
	}
	if err := m.confirmLeader(ctx); err != nil {
		return nil, err
	}
	if err := m.waitCommittedApplied(ctx); err != nil {
		return nil, err
	}
	info, err := l.TimeToLive(id)
	if err != nil {
		return nil, err
	}
	resp := &pb.LeaseTimeToLiveResponse{Header: &pb.ResponseHeader{}, ID: id, TTL: info.TTL, GrantedTTL: info.GrantedTTL}
	if withKeys {
		if resp.Keys, err = lease.Keys(m.db, id); err != nil {
			return nil, err
		}
	}
	// Demoted meanwhile: the remaining TTL may be stale (etcd answers
	// ErrLeaderChanged; forwarding to the new leader is as good).
	if !l.IsPrimary() {
		return nil, lease.ErrNotPrimary
	}
	return resp, nil
}

// retryOnLeader runs local on the primary, else forward on the leader's
// peer URL, until one answers or the request times out.
func retryOnLeader[T any](ctx context.Context, m *Member, local func(context.Context) (T, error), forward func(context.Context, string) (T, error)) (T, error) {
	tctx, cancel := context.WithTimeout(ctx, m.requestTimeout())
	defer cancel()
	for {
		v, err := local(tctx)
		if !errors.Is(err, lease.ErrNotPrimary) {
			return v, err
		}
		if lead := m.node.Leader(); lead != 0 && lead != m.id {
			if ld, ok := m.cluster.Member(lead); ok {
				for _, u := range ld.PeerURLs {
					v, err = forward(tctx, strings.TrimRight(u, "/"))
					if err == nil || errors.Is(err, lease.ErrNotFound) {
						return v, err
					}
				}
			}
		}
		// No leader, a leader not promoted yet, or a failed forward:
		// try again shortly (etcd throttles the same way).
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-t.C:
		case <-tctx.Done():
			t.Stop()
			var zero T
			if m.node.Leader() == 0 && ctx.Err() == nil {
				return zero, raftnode.ErrNoLeader
			}
			return zero, m.ctxErr(ctx, tctx.Err())
		case <-m.stopping:
			t.Stop()
			var zero T
			return zero, ErrStopped
		}
	}
}

func (m *Member) postLeader(ctx context.Context, url string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp, err := m.leases.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return out, nil
	case http.StatusNotFound:
		return nil, lease.ErrNotFound
	}
	return nil, fmt.Errorf("member: %s answered %d: %s", url, resp.StatusCode, strings.TrimSpace(string(out)))
}

// forwardRenew renews lease id on the leader at url, in a batch with the
// other renewals this member forwards meanwhile (see renewBatcher).
func (m *Member) forwardRenew(ctx context.Context, url string, id int64) (int64, error) {
	ls := m.leases
	ls.batchMu.Lock()
	b := ls.batchers[url]
	if b == nil {
		if ls.batchers == nil {
			ls.batchers = make(map[string]*renewBatcher)
		}
		b = &renewBatcher{}
		ls.batchers[url] = b
	}
	ls.batchMu.Unlock()

	c := &renewCall{id: id, done: make(chan struct{})}
	b.mu.Lock()
	b.pending = append(b.pending, c)
	if b.inflight < maxRenewBatchesInFlight {
		// Send the batch on this goroutine: a lone client pays no
		// hand-off. What queues up meanwhile goes in the next batch, on
		// a goroutine of its own, so this caller returns at once.
		b.inflight++
		batch := b.takeLocked()
		b.mu.Unlock()
		bctx := ctx
		if len(batch) > 1 || batch[0] != c {
			// Others wait for this request: it must not end with
			// this caller's context.
			var cancel context.CancelFunc
			bctx, cancel = context.WithTimeout(m.leases.base, m.requestTimeout())
			defer cancel()
		}
		m.sendRenewBatch(bctx, url, batch)
		b.mu.Lock()
		if len(b.pending) == 0 {
			b.inflight--
			b.mu.Unlock()
		} else {
			next := b.takeLocked()
			b.mu.Unlock()
			go m.sendRenewBatches(url, b, next)
		}
	} else {
		b.mu.Unlock()
	}
	select {
	case <-c.done:
		return c.ttl, c.err
	case <-ctx.Done():
		// The batch may still renew it; the caller retries or gives up.
		return -1, ctx.Err()
	}
}

// takeLocked removes up to maxRenewBatch pending calls.
func (b *renewBatcher) takeLocked() []*renewCall {
	n := min(len(b.pending), maxRenewBatch)
	batch := b.pending[:n:n]
	if n == len(b.pending) {
		b.pending = nil
	} else {
		b.pending = slices.Clone(b.pending[n:])
	}
	return batch
}

// sendRenewBatches posts batch, then the calls that queued up meanwhile,
// until none are left.
func (m *Member) sendRenewBatches(url string, b *renewBatcher, batch []*renewCall) {
	for {
		ctx, cancel := context.WithTimeout(m.leases.base, m.requestTimeout())
		m.sendRenewBatch(ctx, url, batch)
		cancel()
		b.mu.Lock()
		if len(b.pending) == 0 {
			b.inflight--
			b.mu.Unlock()
			return
		}
		batch = b.takeLocked()
		b.mu.Unlock()
	}
}

// sendRenewBatch posts the IDs of batch to the leader and hands each call
// its result. A request that serves several callers has its own timeout:
// each caller stops waiting when its own context ends.
func (m *Member) sendRenewBatch(ctx context.Context, url string, batch []*renewCall) {
	body := make([]byte, 0, 8*len(batch))
	for _, c := range batch {
		body = binary.BigEndian.AppendUint64(body, uint64(c.id))
	}
	out, err := m.postRenewBatch(ctx, url, body)
	if err == nil && len(out) != len(body) {
		err = fmt.Errorf("member: renew batch answer has %d bytes, want %d", len(out), len(body))
	}
	for i, c := range batch {
		switch {
		case err != nil:
			c.ttl, c.err = -1, err
		default:
			c.ttl = int64(binary.BigEndian.Uint64(out[8*i:]))
			if c.ttl < 0 {
				c.err = lease.ErrNotFound
			}
		}
		close(c.done)
	}
}

// postRenewBatch posts body to the leader's batch renewal path. Unlike
// postLeader, a 404 is an error (an old leader without the path), never
// "lease not found": that is answered per lease, in the body.
func (m *Member) postRenewBatch(ctx context.Context, url string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+leaseRenewBatchPath, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp, err := m.leases.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 8*maxRenewBatch+1024))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("member: %s answered %d: %s", url, resp.StatusCode, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// renewBatch renews every lease of a forwarded batch on this member, the
// primary, and returns their TTLs (-1: not found). The common case (a
// confirmed leader, no checkpoint to clear) costs one lock per lease; the
// others take renewLocal's full path, concurrently. Any other error fails
// the whole batch (the follower retries; renewing twice is harmless).
func (m *Member) renewBatch(ctx context.Context, ids []int64) ([]int64, error) {
	l := m.leases.lessor
	if !l.IsPrimary() {
		return nil, lease.ErrNotPrimary
	}
	if err := m.confirmLeader(ctx); err != nil {
		return nil, err
	}
	ttls := make([]int64, len(ids))
	var slow []int
	for i, id := range ids {
		ttl, ok, err := l.TryRenew(id)
		switch {
		case !ok:
			slow = append(slow, i)
		case errors.Is(err, lease.ErrNotFound):
			ttls[i] = -1
		default:
			ttls[i] = ttl
		}
	}
	if len(slow) == 0 {
		return ttls, nil
	}
	errs := make([]error, len(slow))
	var wg sync.WaitGroup
	for j, i := range slow {
		wg.Go(func() {
			ttl, err := m.renewLocal(ctx, ids[i])
			if errors.Is(err, lease.ErrNotFound) {
				ttl, err = -1, nil
			}
			ttls[i], errs[j] = ttl, err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return ttls, nil
}

func (m *Member) forwardTTL(ctx context.Context, url string, id int64, keys bool) (*pb.LeaseTimeToLiveResponse, error) {
	body := binary.BigEndian.AppendUint64(nil, uint64(id))
	if keys {
		body = append(body, 1)
	} else {
		body = append(body, 0)
	}
	out, err := m.postLeader(ctx, url+leaseTTLPath, body)
	if err != nil {
		return nil, err
	}
	resp := &pb.LeaseTimeToLiveResponse{}
	if err := proto.Unmarshal(out, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// registerLeaseHTTP serves the leader's side of forwarded lease requests.
// A member that is not the primary answers 503 and never forwards again.
func (m *Member) registerLeaseHTTP(mux *http.ServeMux) {
	serve := func(w http.ResponseWriter, r *http.Request, fn func(ctx context.Context, body []byte) ([]byte, error)) {
		if r.Method != http.MethodPost {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 8*maxRenewBatch+1))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		out, err := fn(r.Context(), body)
		switch {
		case err == nil:
			_, _ = w.Write(out)
		case errors.Is(err, lease.ErrNotFound):
			http.Error(w, err.Error(), http.StatusNotFound)
		default:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		}
	}
	mux.HandleFunc(leaseRenewPath, func(w http.ResponseWriter, r *http.Request) {
		serve(w, r, func(ctx context.Context, body []byte) ([]byte, error) {
			if len(body) != 8 {
				return nil, errors.New("bad renew request")
			}
			ttl, err := m.renewLocal(ctx, int64(binary.BigEndian.Uint64(body)))
			if err != nil {
				return nil, err
			}
			return binary.BigEndian.AppendUint64(nil, uint64(ttl)), nil
		})
	})
	mux.HandleFunc(leaseRenewBatchPath, func(w http.ResponseWriter, r *http.Request) {
		serve(w, r, func(ctx context.Context, body []byte) ([]byte, error) {
			if len(body) == 0 || len(body)%8 != 0 || len(body) > 8*maxRenewBatch {
				return nil, errors.New("bad renew batch")
			}
			ids := make([]int64, len(body)/8)
			for i := range ids {
				ids[i] = int64(binary.BigEndian.Uint64(body[8*i:]))
			}
			ttls, err := m.renewBatch(ctx, ids)
			if err != nil {
				return nil, err
			}
			out := make([]byte, 0, len(body))
			for _, ttl := range ttls {
				out = binary.BigEndian.AppendUint64(out, uint64(ttl))
			}
			return out, nil
		})
	})
	mux.HandleFunc(leaseTTLPath, func(w http.ResponseWriter, r *http.Request) {
		serve(w, r, func(ctx context.Context, body []byte) ([]byte, error) {
			if len(body) != 9 {
				return nil, errors.New("bad timetolive request")
			}
			resp, err := m.ttlLocal(ctx, int64(binary.BigEndian.Uint64(body)), body[8] == 1)
			if err != nil {
				return nil, err
			}
			return proto.Marshal(resp)
		})
	})
}

// runLeases is the lease loop: it promotes the lessor once this member
// leads and has applied its own term's first entry (so every earlier
// grant, checkpoint and revoke is applied), demotes it when leadership
// ends, and while primary proposes the revocation of expired leases (at
// most RevokeRate per second, at most maxPendingRevokes in flight) and the
// due checkpoints. It owns the goroutines it starts and waits for them.
func (m *Member) runLeases(ctx context.Context) {
	ls := m.leases
	l := ls.lessor
	rate := float64(lease.DefaultRevokeRate)
	if m.leaseOpts.RevokeRate > 0 {
		rate = float64(m.leaseOpts.RevokeRate)
	}
	t := ls.clock.NewTicker(m.cfg.HeartbeatInterval)
	defer t.Stop()
	var wg sync.WaitGroup
	defer ls.client.CloseIdleConnections()
	defer ls.cancelBase()
	defer wg.Wait()
	defer l.Demote()
	sem := make(chan struct{}, maxPendingRevokes)
	var promoted uint64 // the term this member is primary in, 0 if not
	var refreshing atomic.Bool
	// Token buckets: revocations and checkpointed leases per second.
	budget, last := 0.0, ls.clock.Now()
	cpRate := float64(lease.DefaultCheckpointRate)
	if m.leaseOpts.CheckpointRate > 0 {
		cpRate = float64(m.leaseOpts.CheckpointRate)
	}
	cpBudget := 0.0
	var cpInflight atomic.Bool // one checkpoint entry at a time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		lead, term := m.node.Leader(), m.node.Term()
		switch {
		case lead == m.id && m.applier.AppliedTerm() == term:
			if promoted != term || !l.IsPrimary() {
				l.Promote(m.cfg.ElectionTimeout)
				promoted, budget = term, 0
				m.lg.Info("promoted lessor", zap.Uint64("term", term), zap.Int("leases", l.Len()))
			}
		case promoted != 0:
			l.Demote()
			promoted = 0
			m.lg.Info("demoted lessor", zap.Uint64("term", term))
		}
		now := ls.clock.Now()
		elapsed := now.Sub(last).Seconds()
		budget = min(budget+rate*elapsed, max(rate/2, 1))
		cpBudget = min(cpBudget+cpRate*elapsed, max(cpRate/2, lease.MaxCheckpointBatch))
		last = now
		if promoted == 0 {
			continue
		}
		m.refreshLeaderConfirmation(ctx, &wg, &refreshing)
		if n := min(int(budget), maxPendingRevokes-len(sem)); n > 0 {
			ids := l.Expired(n)
			budget -= float64(len(ids))
			for _, id := range ids {
				sem <- struct{}{}
				wg.Go(func() {
					defer func() { <-sem }()
					_, err := m.proposeAsLeader(ctx, &pb.InternalRaftRequest{LeaseRevoke: &pb.LeaseRevokeRequest{ID: id}})
					switch {
					case err == nil:
						ls.expired.Inc()
					case errors.Is(err, lease.ErrNotFound), ctx.Err() != nil:
					default:
						m.lg.Warn("failed to revoke expired lease", zap.String("lease-id", fmt.Sprintf("%016x", id)), zap.Error(err))
					}
				})
			}
		}
		// Checkpoints: batched (up to MaxCheckpointBatch leases per
		// entry), one entry in flight at a time, at most cpRate leases
		// per second, so that many leases cannot flood raft.
		if n := min(int(cpBudget), lease.MaxCheckpointBatch); n > 0 && len(sem) < maxPendingRevokes && !cpInflight.Load() {
			if cps, seq := l.DueCheckpoints(n); len(cps) > 0 {
				cpBudget -= float64(len(cps))
				sem <- struct{}{}
				cpInflight.Store(true)
				wg.Go(func() {
					defer func() { <-sem; cpInflight.Store(false) }()
					_, err := m.proposeAsLeader(ctx, &pb.InternalRaftRequest{LeaseCheckpoint: &pb.LeaseCheckpointRequest{Checkpoints: cps}})
					if err != nil {
						l.CheckpointsFailed(seq, cps)
						if ctx.Err() == nil {
							m.lg.Warn("failed to checkpoint leases", zap.Int("leases", len(cps)), zap.Error(err))
						}
					}
				})
			}
		}
	}
}

// refreshLeaderConfirmation renews the leader's confirmation (see
// confirmLeader) in the background once it is a quarter election timeout
// old, so that keepalives find it fresh instead of all waiting for a
// ReadIndex round when it lapses.
func (m *Member) refreshLeaderConfirmation(ctx context.Context, wg *sync.WaitGroup, running *atomic.Bool) {
	if m.node.SoleVoterLeader() || m.node.Leader() != m.id {
		return
	}
	c := m.leases.confirmed.Load()
	if c != nil && c.term == m.node.Term() && m.leases.clock.Now().Sub(c.at) < m.cfg.ElectionTimeout/4 {
		return
	}
	if !running.CompareAndSwap(false, true) {
		return
	}
	wg.Go(func() {
		defer running.Store(false)
		rctx, cancel := context.WithTimeout(ctx, m.cfg.ElectionTimeout)
		defer cancel()
		_ = m.confirmLeaderRound(rctx)
	})
}

// registerLeaseMetrics registers the lessor's metrics.
func (m *Member) registerLeaseMetrics(reg prometheus.Registerer) {
	if err := m.leases.lessor.Register(reg); err != nil {
		m.lg.Warn("cannot register lease metrics", zap.Error(err))
	}
	if err := reg.Register(m.leases.expired); err != nil {
		m.lg.Warn("cannot register lease metrics", zap.Error(err))
	}
}
