package apply

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/cairnkv/cairn/internal/lease"
	"github.com/cairnkv/cairn/internal/mvcc"
)

// Lessor is the lease state the applier changes (*lease.Lessor). When
// Config.Leases implements it, the applier applies LeaseGrant, LeaseRevoke
// and LeaseCheckpoint entries and keeps the lease key index up to date on
// every put and delete.
type Lessor interface {
	Leases
	StageGrant(b *pebble.Batch, id, ttl int64) (int64, error)
	StageRevoke(b *pebble.Batch, id int64) error
	StageCheckpoint(b *pebble.Batch, id, remaining int64)
	StageAttach(b *pebble.Batch, id int64, key []byte)
	StageDetach(b *pebble.Batch, id int64, key []byte)
	AttachedKeys(db pebble.Reader, id int64) ([][]byte, error)
	EndBatch()
}

var _ Lessor = (*lease.Lessor)(nil)

func (a *Applier) lessor() Lessor {
	l, _ := a.cfg.Leases.(Lessor)
	return l
}

// applyLease applies a lease request; ok is false for any other request.
func (a *Applier) applyLease(b *pebble.Batch, req *pb.InternalRaftRequest) (Result, bool) {
	switch {
	case req.LeaseGrant != nil:
		return a.applyLeaseGrant(b, req.LeaseGrant), true
	case req.LeaseRevoke != nil:
		return a.applyLeaseRevoke(b, req.LeaseRevoke.ID), true
	case req.LeaseCheckpoint != nil:
		if l := a.lessor(); l != nil {
			for _, cp := range req.LeaseCheckpoint.Checkpoints {
				l.StageCheckpoint(b, cp.ID, cp.Remaining_TTL)
			}
		}
		return Result{Resp: &pb.LeaseCheckpointResponse{Header: &pb.ResponseHeader{Revision: a.cfg.Store.Write(b).Rev()}}}, true
	}
	return Result{}, false
}

func (a *Applier) applyLeaseGrant(b *pebble.Batch, r *pb.LeaseGrantRequest) Result {
	l := a.lessor()
	if l == nil {
		return Result{Err: ErrUnsupported}
	}
	ttl, err := l.StageGrant(b, r.ID, r.TTL)
	if err != nil {
		return Result{Err: err}
	}
	return Result{Resp: &pb.LeaseGrantResponse{Header: &pb.ResponseHeader{Revision: a.cfg.Store.Write(b).Rev()}, ID: r.ID, TTL: ttl}}
}

// applyLeaseRevoke deletes every key attached to lease id in ONE write txn
// (one revision, so watchers see one atomic set of delete events), in key
// order (the same on every member), and removes the lease, all in batch b.
func (a *Applier) applyLeaseRevoke(b *pebble.Batch, id int64) Result {
	l := a.lessor()
	if l == nil {
		return Result{Err: ErrUnsupported}
	}
	if !l.Exists(id) {
		return Result{Err: lease.ErrNotFound}
	}
	// The candidates come from the DB and the keys attached earlier in this
	// batch; each is checked against its live version (it may have been
	// detached in this batch). No read goes through the batch, so a
	// revocation does not make the whole apply batch indexed: under an
	// expiry storm nearly every batch holds one.
	keys, err := l.AttachedKeys(a.cfg.DB, id)
	if err != nil {
		return Result{Err: err}
	}
	t := a.cfg.Store.Write(b)
	for _, k := range keys {
		kv, err := t.Latest(k)
		if err != nil {
			panic(fmt.Sprintf("apply: revoke lease %x: read %q: %v", id, k, err))
		}
		if kv != nil && kv.Lease == id {
			if _, err := t.DeleteKey(k); err != nil {
				panic(fmt.Sprintf("apply: revoke lease %x: delete %q: %v", id, k, err))
			}
		}
		l.StageDetach(b, id, k)
	}
	if err := l.StageRevoke(b, id); err != nil {
		panic(err) // checked above, on this goroutine
	}
	rev := t.End()
	return Result{Resp: &pb.LeaseRevokeResponse{Header: &pb.ResponseHeader{Revision: rev}}}
}

// leaseWriter keeps the lease key index in step with the writes of a txn:
// a put attaches the key to its lease and detaches it from the previous
// one; a delete detaches.
type leaseWriter struct {
	*mvcc.WriteTxn
	b *pebble.Batch
	l Lessor
}

// leaseWriter wraps t when leases are enabled.
func (a *Applier) leaseWriter(b *pebble.Batch, t *mvcc.WriteTxn) Writer {
	l := a.lessor()
	if l == nil {
		return t
	}
	return leaseWriter{WriteTxn: t, b: b, l: l}
}

func (w leaseWriter) Put(key, value []byte, id int64) (*mvccpb.KeyValue, error) {
	return w.put(key, value, id, true)
}

// PutMeta must not be promoted from the WriteTxn: the lease index follows
// every put.
func (w leaseWriter) PutMeta(key, value []byte, id int64) (*mvccpb.KeyValue, error) {
	return w.put(key, value, id, false)
}

func (w leaseWriter) put(key, value []byte, id int64, prevValue bool) (*mvccpb.KeyValue, error) {
	l := w.l
	var prev *mvccpb.KeyValue
	var err error
	if prevValue {
		prev, err = w.WriteTxn.Put(key, value, id)
	} else {
		prev, err = w.WriteTxn.PutMeta(key, value, id)
	}
	if err != nil {
		return nil, err
	}
	var old int64
	if prev != nil {
		old = prev.Lease
	}
	if old != id {
		if old != 0 {
			l.StageDetach(w.b, old, key)
		}
		if id != 0 {
			l.StageAttach(w.b, id, key)
		}
	}
	return prev, nil
}

func (w leaseWriter) DeleteRange(key, end []byte) ([]*mvccpb.KeyValue, error) {
	prevs, err := w.WriteTxn.DeleteRange(key, end)
	if err != nil {
		return nil, err
	}
	for _, kv := range prevs {
		if kv.Lease != 0 {
			w.l.StageDetach(w.b, kv.Lease, kv.Key)
		}
	}
	return prevs, nil
}

// endLeaseBatch tells the lessor that the apply batch is over.
func (a *Applier) endLeaseBatch() {
	if l := a.lessor(); l != nil {
		l.EndBatch()
	}
}

// AppliedTerm returns the term of the last applied entry. A leader whose
// AppliedTerm equals its term has applied every entry of earlier terms.
func (a *Applier) AppliedTerm() uint64 { return a.appliedTerm.Load() }
