package apply

import (
	"bytes"
	"sort"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/cairnkv/cairn/internal/mvcc"
)

// View is what request execution reads from: a consistent view of the MVCC
// store (a read view, or a write txn that sees its own earlier writes).
type View interface {
	Range(key, end []byte, o mvcc.RangeOptions) (*mvcc.RangeResult, error)
	// Rev is the revision a read observes; CompactRev the compacted one.
	Rev() int64
	CompactRev() int64
}

// Writer is a View that can also write; *mvcc.WriteTxn implements it.
type Writer interface {
	View
	Put(key, value []byte, lease int64) (*mvccpb.KeyValue, error)
	// PutMeta is Put when only the previous version's metadata is read
	// (its Value may be missing: see mvcc.WriteTxn.PutMeta).
	PutMeta(key, value []byte, lease int64) (*mvccpb.KeyValue, error)
	DeleteRange(key, end []byte) ([]*mvccpb.KeyValue, error)
}

// Leases answers whether a lease exists. A nil Leases has no leases.
type Leases interface {
	Exists(id int64) bool
}

// Errors raised by request execution; package api maps them to rpctypes.
var (
	ErrKeyNotFound   = errorString("apply: key not found")
	ErrLeaseNotFound = errorString("apply: lease not found")
)

type errorString string

func (e errorString) Error() string { return string(e) }

// Range executes r with etcd's semantics: count ignores limit and filters;
// sorting and revision filters fetch the whole range first.
func Range(v View, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	filtered := r.MinModRevision != 0 || r.MaxModRevision != 0 || r.MinCreateRevision != 0 || r.MaxCreateRevision != 0
	limit := r.Limit
	if r.SortOrder != pb.RangeRequest_NONE || filtered {
		limit = 0
	}
	if limit > 0 {
		limit++ // one more, to know whether there are more
	}
	// Compat: etcd sorts by value before it drops values for keys_only.
	keysOnly := r.KeysOnly && r.SortTarget != pb.RangeRequest_VALUE
	rr, err := v.Range(r.Key, r.RangeEnd, mvcc.RangeOptions{Limit: limit, Rev: r.Revision, CountOnly: r.CountOnly, KeysOnly: keysOnly})
	if err != nil {
		return nil, err
	}
	kvs := rr.KVs
	if filtered {
		kept := kvs[:0]
		for _, kv := range kvs {
			// Compat: etcd tests the filters with != 0, so a negative max
			// filters out every key.
			if (r.MinModRevision != 0 && kv.ModRevision < r.MinModRevision) ||
				(r.MaxModRevision != 0 && kv.ModRevision > r.MaxModRevision) ||
				(r.MinCreateRevision != 0 && kv.CreateRevision < r.MinCreateRevision) ||
				(r.MaxCreateRevision != 0 && kv.CreateRevision > r.MaxCreateRevision) {
				continue
			}
			kept = append(kept, kv)
		}
		kvs = kept
	}
	order := r.SortOrder
	if r.SortTarget != pb.RangeRequest_KEY && order == pb.RangeRequest_NONE {
		// Results come in key order, so a non-key target sorts ascending.
		order = pb.RangeRequest_ASCEND
	} else if r.SortTarget == pb.RangeRequest_KEY && order == pb.RangeRequest_ASCEND {
		order = pb.RangeRequest_NONE // already in key order
	}
	if order != pb.RangeRequest_NONE {
		less := sortLess(r.SortTarget)
		if order == pb.RangeRequest_DESCEND {
			sort.SliceStable(kvs, func(i, j int) bool { return less(kvs[j], kvs[i]) })
		} else {
			sort.SliceStable(kvs, func(i, j int) bool { return less(kvs[i], kvs[j]) })
		}
	}
	resp := &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: rr.Rev}, Count: rr.Count}
	if r.Limit > 0 && int64(len(kvs)) > r.Limit {
		kvs = kvs[:r.Limit]
		resp.More = true
	}
	if r.KeysOnly && !keysOnly {
		for _, kv := range kvs {
			kv.Value = nil
		}
	}
	if !r.CountOnly {
		resp.Kvs = kvs
	}
	return resp, nil
}

func sortLess(t pb.RangeRequest_SortTarget) func(a, b *mvccpb.KeyValue) bool {
	switch t {
	case pb.RangeRequest_VERSION:
		return func(a, b *mvccpb.KeyValue) bool { return a.Version < b.Version }
	case pb.RangeRequest_CREATE:
		return func(a, b *mvccpb.KeyValue) bool { return a.CreateRevision < b.CreateRevision }
	case pb.RangeRequest_MOD:
		return func(a, b *mvccpb.KeyValue) bool { return a.ModRevision < b.ModRevision }
	case pb.RangeRequest_VALUE:
		return func(a, b *mvccpb.KeyValue) bool { return bytes.Compare(a.Value, b.Value) < 0 }
	default:
		return func(a, b *mvccpb.KeyValue) bool { return bytes.Compare(a.Key, b.Key) < 0 }
	}
}

// checkPut enforces what etcd checks before a put executes: ignore_value and
// ignore_lease need an existing key; a lease must exist.
func checkPut(v View, leases Leases, r *pb.PutRequest) error {
	// Compat: etcd checks the lease before the key.
	if r.Lease != 0 && (leases == nil || !leases.Exists(r.Lease)) {
		return ErrLeaseNotFound
	}
	if r.IgnoreValue || r.IgnoreLease {
		rr, err := v.Range(r.Key, nil, mvcc.RangeOptions{})
		if err != nil {
			return err
		}
		if len(rr.KVs) == 0 {
			return ErrKeyNotFound
		}
	}
	return nil
}

// checkRangeRev rejects, before anything is written, a range at a
// revision the txn could not read.
func checkRangeRev(v View, r *pb.RangeRequest) error {
	compact := v.CompactRev()
	if compact == 0 {
		compact = -1 // Compat: etcd's never-compacted mark
	}
	switch {
	case r.Revision == 0:
		return nil
	case r.Revision > v.Rev():
		return mvcc.ErrFutureRev
	case r.Revision < compact:
		return mvcc.ErrCompacted
	}
	return nil
}

// Put executes r. The header revision is filled in by the caller.
func Put(w Writer, leases Leases, r *pb.PutRequest) (*pb.PutResponse, error) {
	if err := checkPut(w, leases, r); err != nil {
		return nil, err
	}
	return put(w, r)
}

func put(w Writer, r *pb.PutRequest) (*pb.PutResponse, error) {
	val, lease := r.Value, r.Lease
	if r.IgnoreValue || r.IgnoreLease {
		rr, err := w.Range(r.Key, nil, mvcc.RangeOptions{})
		if err != nil {
			return nil, err
		}
		if len(rr.KVs) == 0 {
			return nil, ErrKeyNotFound
		}
		if r.IgnoreValue {
			val = rr.KVs[0].Value
		}
		if r.IgnoreLease {
			lease = rr.KVs[0].Lease
		}
	}
	var prev *mvccpb.KeyValue
	var err error
	if r.PrevKv {
		prev, err = w.Put(r.Key, val, lease)
	} else {
		prev, err = w.PutMeta(r.Key, val, lease)
	}
	if err != nil {
		return nil, err
	}
	resp := &pb.PutResponse{Header: &pb.ResponseHeader{Revision: w.Rev()}}
	if r.PrevKv {
		resp.PrevKv = prev
	}
	return resp, nil
}

// DeleteRange executes r.
func DeleteRange(w Writer, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	prevs, err := w.DeleteRange(r.Key, r.RangeEnd)
	if err != nil {
		return nil, err
	}
	resp := &pb.DeleteRangeResponse{Header: &pb.ResponseHeader{Revision: w.Rev()}, Deleted: int64(len(prevs))}
	if r.PrevKv {
		resp.PrevKvs = prevs
	}
	return resp, nil
}

// Txn executes r. Every compare on the taken path, nested ones included, is
// evaluated against the state before any op runs, as etcd does; then the
// taken ops' preconditions are checked; then the ops run in order. w may be
// a read-only View when IsTxnReadOnly(r).
func Txn(v View, leases Leases, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	path := comparePath(v, r, nil)
	if err := checkTxn(v, leases, r, path); err != nil {
		return nil, err
	}
	resp, _, err := execTxn(v, r, path)
	return resp, err
}

func comparePath(v View, r *pb.TxnRequest, path []bool) []bool {
	ok := compareAll(v, r.Compare)
	path = append(path, ok)
	for _, op := range branch(r, ok) {
		if t := op.GetRequestTxn(); t != nil {
			path = comparePath(v, t, path)
		}
	}
	return path
}

func branch(r *pb.TxnRequest, ok bool) []*pb.RequestOp {
	if ok {
		return r.Success
	}
	return r.Failure
}

func checkTxn(v View, leases Leases, r *pb.TxnRequest, path []bool) error {
	_, err := walkPath(r, path, func(op *pb.RequestOp) error {
		if p := op.GetRequestPut(); p != nil {
			return checkPut(v, leases, p)
		}
		if rr := op.GetRequestRange(); rr != nil {
			return checkRangeRev(v, rr)
		}
		return nil
	})
	return err
}

// walkPath visits the taken ops of r (recursively) and returns the unused
// rest of path.
func walkPath(r *pb.TxnRequest, path []bool, fn func(*pb.RequestOp) error) ([]bool, error) {
	ok := path[0]
	path = path[1:]
	for _, op := range branch(r, ok) {
		if t := op.GetRequestTxn(); t != nil {
			var err error
			if path, err = walkPath(t, path, fn); err != nil {
				return nil, err
			}
			continue
		}
		if err := fn(op); err != nil {
			return nil, err
		}
	}
	return path, nil
}

func execTxn(v View, r *pb.TxnRequest, path []bool) (*pb.TxnResponse, []bool, error) {
	ok := path[0]
	path = path[1:]
	ops := branch(r, ok)
	resp := &pb.TxnResponse{Header: &pb.ResponseHeader{}, Succeeded: ok, Responses: make([]*pb.ResponseOp, 0, len(ops))}
	for _, op := range ops {
		var out *pb.ResponseOp
		switch {
		case op.GetRequestRange() != nil:
			rr, err := Range(v, op.GetRequestRange())
			if err != nil {
				return nil, nil, err
			}
			out = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseRange{ResponseRange: rr}}
		case op.GetRequestPut() != nil:
			pr, err := put(v.(Writer), op.GetRequestPut())
			if err != nil {
				return nil, nil, err
			}
			out = &pb.ResponseOp{Response: &pb.ResponseOp_ResponsePut{ResponsePut: pr}}
		case op.GetRequestDeleteRange() != nil:
			dr, err := DeleteRange(v.(Writer), op.GetRequestDeleteRange())
			if err != nil {
				return nil, nil, err
			}
			out = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: dr}}
		case op.GetRequestTxn() != nil:
			tr, rest, err := execTxn(v, op.GetRequestTxn(), path)
			if err != nil {
				return nil, nil, err
			}
			path = rest
			out = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseTxn{ResponseTxn: tr}}
		default:
			continue
		}
		resp.Responses = append(resp.Responses, out)
	}
	return resp, path, nil
}

// compareAll reports whether every compare holds.
func compareAll(v View, cs []*pb.Compare) bool {
	for _, c := range cs {
		if !compare(v, c) {
			return false
		}
	}
	return true
}

func compare(v View, c *pb.Compare) bool {
	rr, err := v.Range(c.Key, c.RangeEnd, mvcc.RangeOptions{})
	if err != nil {
		return false
	}
	if len(rr.KVs) == 0 {
		// A missing key compares as an empty KeyValue, except on VALUE:
		// there is no way to tell a missing value from an empty one.
		if c.Target == pb.Compare_VALUE {
			return false
		}
		return compareKV(c, &mvccpb.KeyValue{})
	}
	for _, kv := range rr.KVs {
		if !compareKV(c, kv) {
			return false
		}
	}
	return true
}

func compareKV(c *pb.Compare, kv *mvccpb.KeyValue) bool {
	var res int
	switch c.Target {
	case pb.Compare_VALUE:
		res = bytes.Compare(kv.Value, c.GetValue())
	case pb.Compare_CREATE:
		res = cmpInt(kv.CreateRevision, c.GetCreateRevision())
	case pb.Compare_MOD:
		res = cmpInt(kv.ModRevision, c.GetModRevision())
	case pb.Compare_VERSION:
		res = cmpInt(kv.Version, c.GetVersion())
	case pb.Compare_LEASE:
		res = cmpInt(kv.Lease, c.GetLease())
	}
	switch c.Result {
	case pb.Compare_EQUAL:
		return res == 0
	case pb.Compare_NOT_EQUAL:
		return res != 0
	case pb.Compare_GREATER:
		return res > 0
	case pb.Compare_LESS:
		return res < 0
	}
	return true
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// IsTxnReadOnly reports whether no branch of r (nested ones included) writes.
func IsTxnReadOnly(r *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			if op.GetRequestPut() != nil || op.GetRequestDeleteRange() != nil {
				return false
			}
			if t := op.GetRequestTxn(); t != nil && !IsTxnReadOnly(t) {
				return false
			}
		}
	}
	return true
}

// SetTxnRevision sets the top-level header revision of a write txn's
// response. Compat: etcd leaves the op headers as the ops set them and
// nested txn headers at 0.
func SetTxnRevision(r *pb.TxnResponse, rev int64) {
	r.Header.Revision = rev
}
