package apply

// Table tests for request execution (exec.go) against a real mvcc.Store.
// Expectations follow etcd v3.7 (server/etcdserver/txn: range.go, txn.go,
// put.go) and are marked "Compat:" where they pin an etcd behaviour.

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/cairnkv/cairn/internal/mvcc"
	"github.com/cairnkv/cairn/internal/storage"
)

type fakeLeases map[int64]bool

func (l fakeLeases) Exists(id int64) bool { return l[id] }

var testLeases = fakeLeases{7: true, 8: true}

type env struct {
	t  *testing.T
	db *pebble.DB
	s  *mvcc.Store
}

func newEnv(t *testing.T) *env {
	t.Helper()
	lg := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	db, err := storage.Open(lg, t.TempDir())
	require.NoError(t, err)
	s, err := mvcc.NewStore(lg, db)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close(); require.NoError(t, db.Close()) })
	return &env{t: t, db: db.DB, s: s}
}

// apply runs fn in one WriteTxn as the applier does (applier.go
// applyRequest): End is called whatever fn returns, then the batch is
// committed and published. It returns the store revision after.
func (e *env) apply(fn func(w *mvcc.WriteTxn) error) (int64, error) {
	e.t.Helper()
	b := e.db.NewIndexedBatch()
	defer b.Close()
	w := e.s.Write(b)
	err := fn(w)
	rev := w.End()
	require.NoError(e.t, b.Commit(pebble.NoSync))
	e.s.Publish()
	return rev, err
}

func (e *env) put(key, value string, lease int64) int64 {
	e.t.Helper()
	rev, err := e.apply(func(w *mvcc.WriteTxn) error {
		_, err := w.Put([]byte(key), []byte(value), lease)
		return err
	})
	require.NoError(e.t, err)
	return rev
}

func (e *env) del(key string) int64 {
	e.t.Helper()
	rev, err := e.apply(func(w *mvcc.WriteTxn) error {
		_, err := w.DeleteRange([]byte(key), nil)
		return err
	})
	require.NoError(e.t, err)
	return rev
}

func (e *env) compact(rev int64) {
	e.t.Helper()
	b := e.db.NewIndexedBatch()
	defer b.Close()
	_, err := e.s.Compact(b, rev)
	require.NoError(e.t, err)
	require.NoError(e.t, b.Commit(pebble.NoSync))
	e.s.Publish()
}

// txn applies a write txn like the applier; for a read-only one, it reads
// through a ReadView like api.KV.Txn.
func (e *env) txn(r *pb.TxnRequest, leases Leases) (*pb.TxnResponse, int64, error) {
	e.t.Helper()
	if IsTxnReadOnly(r) {
		v, err := e.s.View()
		require.NoError(e.t, err)
		defer v.Close()
		resp, err := Txn(v, nil, r)
		return resp, v.Rev(), err
	}
	var resp *pb.TxnResponse
	rev, err := e.apply(func(w *mvcc.WriteTxn) error {
		var err error
		resp, err = Txn(w, leases, r)
		return err
	})
	if err == nil {
		SetTxnRevision(resp, rev)
	}
	return resp, rev, err
}

func (e *env) get(key string) *mvccpb.KeyValue {
	e.t.Helper()
	rr, err := e.s.Range([]byte(key), nil, mvcc.RangeOptions{})
	require.NoError(e.t, err)
	if len(rr.KVs) == 0 {
		return nil
	}
	return rr.KVs[0]
}

// fixture builds, at revision 12:
//
//	key  create  mod  version  value  lease
//	a    3       9    2        "5x"   0
//	b    5       5    1        "4"    0
//	c    2       8    3        "3y"   0
//	d    6       6    1        "2"    0
//	e    4       4    1        "1"    0
//	l    12      12   1        "lv"   7
//	z    created at 10, deleted at 11
//
// so that key, create, mod, version and value orders all differ.
func fixture(t *testing.T) *env {
	e := newEnv(t)
	for i, w := range []struct {
		key, value string
		lease      int64
	}{
		{"c", "3", 0}, {"a", "5", 0}, {"e", "1", 0}, {"b", "4", 0}, {"d", "2", 0},
		{"c", "3x", 0}, {"c", "3y", 0}, {"a", "5x", 0}, {"z", "9", 0},
	} {
		require.Equal(t, int64(i+2), e.put(w.key, w.value, w.lease))
	}
	require.Equal(t, int64(11), e.del("z"))
	require.Equal(t, int64(12), e.put("l", "lv", 7))
	return e
}

var head = map[string]*mvccpb.KeyValue{
	"a": {Key: []byte("a"), CreateRevision: 3, ModRevision: 9, Version: 2, Value: []byte("5x")},
	"b": {Key: []byte("b"), CreateRevision: 5, ModRevision: 5, Version: 1, Value: []byte("4")},
	"c": {Key: []byte("c"), CreateRevision: 2, ModRevision: 8, Version: 3, Value: []byte("3y")},
	"d": {Key: []byte("d"), CreateRevision: 6, ModRevision: 6, Version: 1, Value: []byte("2")},
	"e": {Key: []byte("e"), CreateRevision: 4, ModRevision: 4, Version: 1, Value: []byte("1")},
	"l": {Key: []byte("l"), CreateRevision: 12, ModRevision: 12, Version: 1, Value: []byte("lv"), Lease: 7},
}

// at5 is [a, f) at revision 5.
var at5 = map[string]*mvccpb.KeyValue{
	"a": {Key: []byte("a"), CreateRevision: 3, ModRevision: 3, Version: 1, Value: []byte("5")},
	"b": head["b"],
	"c": {Key: []byte("c"), CreateRevision: 2, ModRevision: 2, Version: 1, Value: []byte("3")},
	"e": head["e"],
}

func kvs(from map[string]*mvccpb.KeyValue, keysOnly bool, keys ...string) []*mvccpb.KeyValue {
	out := make([]*mvccpb.KeyValue, 0, len(keys))
	for _, k := range keys {
		src := from[k]
		kv := &mvccpb.KeyValue{Key: src.Key, CreateRevision: src.CreateRevision, ModRevision: src.ModRevision, Version: src.Version, Value: src.Value, Lease: src.Lease}
		if keysOnly {
			kv.Value = nil
		}
		out = append(out, kv)
	}
	return out
}

func requireKVs(t *testing.T, want, got []*mvccpb.KeyValue) {
	t.Helper()
	require.Equal(t, len(want), len(got), "got keys %q", keyList(got))
	for i := range want {
		w, g := want[i], got[i]
		require.Equal(t, fmt.Sprintf("%q c=%d m=%d v=%d l=%d %q", w.Key, w.CreateRevision, w.ModRevision, w.Version, w.Lease, w.Value),
			fmt.Sprintf("%q c=%d m=%d v=%d l=%d %q", g.Key, g.CreateRevision, g.ModRevision, g.Version, g.Lease, g.Value), "kv %d", i)
	}
}

func keyList(kvs []*mvccpb.KeyValue) []string {
	out := make([]string, len(kvs))
	for i, kv := range kvs {
		out[i] = string(kv.Key)
	}
	return out
}

func af(r *pb.RangeRequest) *pb.RangeRequest {
	r.Key, r.RangeEnd = []byte("a"), []byte("f")
	return r
}

func TestRange(t *testing.T) {
	e := fixture(t)
	for _, tc := range []struct {
		name  string
		req   *pb.RangeRequest
		want  []*mvccpb.KeyValue
		count int64
		more  bool
	}{
		{"range", af(&pb.RangeRequest{}), kvs(head, false, "a", "b", "c", "d", "e"), 5, false},
		{"single key", &pb.RangeRequest{Key: []byte("c")}, kvs(head, false, "c"), 1, false},
		{"missing key", &pb.RangeRequest{Key: []byte("x")}, nil, 0, false},
		{"deleted key", &pb.RangeRequest{Key: []byte("z")}, nil, 0, false},
		{"from key", &pb.RangeRequest{Key: []byte("d"), RangeEnd: []byte{0}}, kvs(head, false, "d", "e", "l"), 3, false},
		{"all keys", &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}}, kvs(head, false, "a", "b", "c", "d", "e", "l"), 6, false},
		{"end before key", &pb.RangeRequest{Key: []byte("d"), RangeEnd: []byte("b")}, nil, 0, false},
		{"end equals key", &pb.RangeRequest{Key: []byte("d"), RangeEnd: []byte("d")}, nil, 0, false},

		// Compat: etcd fetches limit+1 to set More; Count is the whole range.
		{"limit", af(&pb.RangeRequest{Limit: 2}), kvs(head, false, "a", "b"), 5, true},
		{"limit one short", af(&pb.RangeRequest{Limit: 4}), kvs(head, false, "a", "b", "c", "d"), 5, true},
		{"limit exact", af(&pb.RangeRequest{Limit: 5}), kvs(head, false, "a", "b", "c", "d", "e"), 5, false},
		{"limit above", af(&pb.RangeRequest{Limit: 6}), kvs(head, false, "a", "b", "c", "d", "e"), 5, false},
		{"limit on single key", &pb.RangeRequest{Key: []byte("a"), Limit: 1}, kvs(head, false, "a"), 1, false},
		{"negative limit is no limit", af(&pb.RangeRequest{Limit: -1}), kvs(head, false, "a", "b", "c", "d", "e"), 5, false},

		// Compat: count_only returns no KVs and, having none, no More.
		{"count only", af(&pb.RangeRequest{CountOnly: true}), nil, 5, false},
		{"count only with limit", af(&pb.RangeRequest{CountOnly: true, Limit: 2}), nil, 5, false},
		{"count only with filter", af(&pb.RangeRequest{CountOnly: true, MinModRevision: 6}), nil, 5, false},
		{"count only and keys only", af(&pb.RangeRequest{CountOnly: true, KeysOnly: true}), nil, 5, false},
		{"keys only", af(&pb.RangeRequest{KeysOnly: true}), kvs(head, true, "a", "b", "c", "d", "e"), 5, false},
		{"keys only with limit", af(&pb.RangeRequest{KeysOnly: true, Limit: 2}), kvs(head, true, "a", "b"), 5, true},

		{"sort key none", af(&pb.RangeRequest{SortTarget: pb.RangeRequest_KEY}), kvs(head, false, "a", "b", "c", "d", "e"), 5, false},
		{"sort key ascend", af(&pb.RangeRequest{SortOrder: pb.RangeRequest_ASCEND}), kvs(head, false, "a", "b", "c", "d", "e"), 5, false},
		{"sort key descend", af(&pb.RangeRequest{SortOrder: pb.RangeRequest_DESCEND}), kvs(head, false, "e", "d", "c", "b", "a"), 5, false},
		{"sort key descend limit", af(&pb.RangeRequest{SortOrder: pb.RangeRequest_DESCEND, Limit: 2}), kvs(head, false, "e", "d"), 5, true},
		{"sort create ascend", af(&pb.RangeRequest{SortTarget: pb.RangeRequest_CREATE, SortOrder: pb.RangeRequest_ASCEND}), kvs(head, false, "c", "a", "e", "b", "d"), 5, false},
		{"sort create descend", af(&pb.RangeRequest{SortTarget: pb.RangeRequest_CREATE, SortOrder: pb.RangeRequest_DESCEND}), kvs(head, false, "d", "b", "e", "a", "c"), 5, false},
		{"sort mod ascend", af(&pb.RangeRequest{SortTarget: pb.RangeRequest_MOD, SortOrder: pb.RangeRequest_ASCEND}), kvs(head, false, "e", "b", "d", "c", "a"), 5, false},
		{"sort mod descend", af(&pb.RangeRequest{SortTarget: pb.RangeRequest_MOD, SortOrder: pb.RangeRequest_DESCEND}), kvs(head, false, "a", "c", "d", "b", "e"), 5, false},
		{"sort mod descend limit", af(&pb.RangeRequest{SortTarget: pb.RangeRequest_MOD, SortOrder: pb.RangeRequest_DESCEND, Limit: 2}), kvs(head, false, "a", "c"), 5, true},
		{"sort create ascend limit", af(&pb.RangeRequest{SortTarget: pb.RangeRequest_CREATE, SortOrder: pb.RangeRequest_ASCEND, Limit: 3}), kvs(head, false, "c", "a", "e"), 5, true},
		// Ties (b, d, e have version 1) keep key order: etcd's sort.Sort
		// is an insertion sort at this size, which is stable.
		{"sort version ascend", af(&pb.RangeRequest{SortTarget: pb.RangeRequest_VERSION, SortOrder: pb.RangeRequest_ASCEND}), kvs(head, false, "b", "d", "e", "a", "c"), 5, false},
		{"sort version descend", af(&pb.RangeRequest{SortTarget: pb.RangeRequest_VERSION, SortOrder: pb.RangeRequest_DESCEND}), kvs(head, false, "c", "a", "b", "d", "e"), 5, false},
		{"sort value ascend", af(&pb.RangeRequest{SortTarget: pb.RangeRequest_VALUE, SortOrder: pb.RangeRequest_ASCEND}), kvs(head, false, "e", "d", "c", "b", "a"), 5, false},
		{"sort value descend", af(&pb.RangeRequest{SortTarget: pb.RangeRequest_VALUE, SortOrder: pb.RangeRequest_DESCEND}), kvs(head, false, "a", "b", "c", "d", "e"), 5, false},

		// Compat: etcd sortRangeResults sorts ASCEND when the target is
		// not KEY and the order is NONE.
		{"default ascend create", af(&pb.RangeRequest{SortTarget: pb.RangeRequest_CREATE}), kvs(head, false, "c", "a", "e", "b", "d"), 5, false},
		{"default ascend mod", af(&pb.RangeRequest{SortTarget: pb.RangeRequest_MOD}), kvs(head, false, "e", "b", "d", "c", "a"), 5, false},
		{"default ascend value", af(&pb.RangeRequest{SortTarget: pb.RangeRequest_VALUE}), kvs(head, false, "e", "d", "c", "b", "a"), 5, false},
		// Compat: etcd rangeLimit keeps the limit when the order is NONE
		// (IsDefaultOrdering), so only the first limit+1 keys in key
		// order (a, b, c) are sorted by mod revision, then truncated.
		{"default ascend keeps limit", af(&pb.RangeRequest{SortTarget: pb.RangeRequest_MOD, Limit: 2}), kvs(head, false, "b", "c"), 5, true},

		// Compat: revision filters prune after the fetch; Count ignores
		// them; limit and More apply to what is left.
		{"min mod", af(&pb.RangeRequest{MinModRevision: 6}), kvs(head, false, "a", "c", "d"), 5, false},
		{"min mod limit", af(&pb.RangeRequest{MinModRevision: 6, Limit: 2}), kvs(head, false, "a", "c"), 5, true},
		{"min mod limit exact", af(&pb.RangeRequest{MinModRevision: 6, Limit: 3}), kvs(head, false, "a", "c", "d"), 5, false},
		{"max mod", af(&pb.RangeRequest{MaxModRevision: 5}), kvs(head, false, "b", "e"), 5, false},
		{"min max mod", af(&pb.RangeRequest{MinModRevision: 5, MaxModRevision: 8}), kvs(head, false, "b", "c", "d"), 5, false},
		{"min create", af(&pb.RangeRequest{MinCreateRevision: 4}), kvs(head, false, "b", "d", "e"), 5, false},
		{"max create", af(&pb.RangeRequest{MaxCreateRevision: 3}), kvs(head, false, "a", "c"), 5, false},
		{"max create limit", af(&pb.RangeRequest{MaxCreateRevision: 3, Limit: 1}), kvs(head, false, "a"), 5, true},
		{"filter nothing left", af(&pb.RangeRequest{MinModRevision: 100, Limit: 1}), nil, 5, false},
		{"filter sort limit", af(&pb.RangeRequest{MinCreateRevision: 3, SortTarget: pb.RangeRequest_MOD, SortOrder: pb.RangeRequest_DESCEND, Limit: 2}), kvs(head, false, "a", "d"), 5, true},
		{"filter keys only", af(&pb.RangeRequest{MaxModRevision: 5, KeysOnly: true}), kvs(head, true, "b", "e"), 5, false},
		// Compat: a negative min filter prunes nothing (etcd compares
		// with != 0, and no revision is below it).
		{"negative min mod", af(&pb.RangeRequest{MinModRevision: -1}), kvs(head, false, "a", "b", "c", "d", "e"), 5, false},

		// Historical reads: state at the revision, header at the head.
		{"at revision", af(&pb.RangeRequest{Revision: 5}), kvs(at5, false, "a", "b", "c", "e"), 4, false},
		{"at revision limit", af(&pb.RangeRequest{Revision: 5, Limit: 2}), kvs(at5, false, "a", "b"), 4, true},
		{"at revision sorted", af(&pb.RangeRequest{Revision: 5, SortTarget: pb.RangeRequest_MOD, SortOrder: pb.RangeRequest_DESCEND}), kvs(at5, false, "b", "e", "a", "c"), 4, false},
		{"at revision 1", af(&pb.RangeRequest{Revision: 1}), nil, 0, false},
		{"deleted key before delete", &pb.RangeRequest{Key: []byte("z"), Revision: 10}, []*mvccpb.KeyValue{{Key: []byte("z"), CreateRevision: 10, ModRevision: 10, Version: 1, Value: []byte("9")}}, 1, false},
		{"at head revision", af(&pb.RangeRequest{Revision: 12}), kvs(head, false, "a", "b", "c", "d", "e"), 5, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := Range(e.s, tc.req)
			require.NoError(t, err)
			requireKVs(t, tc.want, resp.Kvs)
			require.Equal(t, tc.count, resp.Count, "count")
			require.Equal(t, tc.more, resp.More, "more")
			require.Equal(t, int64(12), resp.Header.GetRevision(), "header revision")
		})
	}
}

// TestRangeKeysOnlySortByValue pins etcd's keys_only + sort by VALUE: the
// values are read for sorting and dropped afterwards.
//
// Compat: etcd v3.7 executeRange sets FastKeysOnly only when
// SortTarget != VALUE ("r.KeysOnly && r.SortTarget != pb.RangeRequest_VALUE"),
// sorts with the values, and clears them in asembleRangeResponse.
func TestRangeKeysOnlySortByValue(t *testing.T) {
	e := fixture(t)
	for _, tc := range []struct {
		order pb.RangeRequest_SortOrder
		want  []string
	}{
		{pb.RangeRequest_ASCEND, []string{"e", "d", "c", "b", "a"}},
		{pb.RangeRequest_NONE, []string{"e", "d", "c", "b", "a"}},
		{pb.RangeRequest_DESCEND, []string{"a", "b", "c", "d", "e"}},
	} {
		t.Run(tc.order.String(), func(t *testing.T) {
			resp, err := Range(e.s, af(&pb.RangeRequest{KeysOnly: true, SortTarget: pb.RangeRequest_VALUE, SortOrder: tc.order}))
			require.NoError(t, err)
			requireKVs(t, kvs(head, true, tc.want...), resp.Kvs)
		})
	}
}

// TestRangeNegativeMaxFilters pins etcd's handling of negative max
// revision filters, which request validation lets through.
//
// Compat: etcd filterRangeResults prunes when MaxModRevision != 0
// (kv.ModRevision > r.MaxModRevision), so a negative maximum prunes every
// key; the same holds for MaxCreateRevision. Count is unaffected.
func TestRangeNegativeMaxFilters(t *testing.T) {
	e := fixture(t)
	for name, req := range map[string]*pb.RangeRequest{
		"max mod":           af(&pb.RangeRequest{MaxModRevision: -1}),
		"max create":        af(&pb.RangeRequest{MaxCreateRevision: -1}),
		"max mod limit":     af(&pb.RangeRequest{MaxModRevision: -5, Limit: 1}),
		"max create sorted": af(&pb.RangeRequest{MaxCreateRevision: -2, SortOrder: pb.RangeRequest_DESCEND}),
	} {
		t.Run(name, func(t *testing.T) {
			resp, err := Range(e.s, req)
			require.NoError(t, err)
			require.Empty(t, keyList(resp.Kvs))
			require.Equal(t, int64(5), resp.Count)
			require.False(t, resp.More)
		})
	}
}

func TestRangeRevisionErrors(t *testing.T) {
	e := fixture(t)
	e.compact(5)
	for _, tc := range []struct {
		rev  int64
		want error
	}{
		// Compat: etcd returns ErrCompacted below the compacted revision
		// and ErrFutureRev above the current one (mvcc rangeKeys).
		{4, mvcc.ErrCompacted},
		{1, mvcc.ErrCompacted},
		{13, mvcc.ErrFutureRev},
		{1 << 40, mvcc.ErrFutureRev},
		{5, nil},
		{12, nil},
		{0, nil},
	} {
		t.Run(fmt.Sprint(tc.rev), func(t *testing.T) {
			for _, v := range []View{e.s, e.view()} {
				resp, err := Range(v, af(&pb.RangeRequest{Revision: tc.rev, CountOnly: true}))
				if tc.want != nil {
					require.ErrorIs(t, err, tc.want)
					continue
				}
				require.NoError(t, err)
				require.Equal(t, int64(12), resp.Header.Revision)
			}
		})
	}
	resp, err := Range(e.s, af(&pb.RangeRequest{Revision: 5}))
	require.NoError(t, err)
	requireKVs(t, kvs(at5, false, "a", "b", "c", "e"), resp.Kvs)
}

func (e *env) view() *mvcc.ReadView {
	v, err := e.s.View()
	require.NoError(e.t, err)
	e.t.Cleanup(v.Close)
	return v
}

func cmp(key string, target pb.Compare_CompareTarget, result pb.Compare_CompareResult, v any) *pb.Compare {
	c := &pb.Compare{Key: []byte(key), Target: target, Result: result}
	switch x := v.(type) {
	case string:
		c.TargetUnion = &pb.Compare_Value{Value: []byte(x)}
	case int:
		n := int64(x)
		switch target {
		case pb.Compare_VERSION:
			c.TargetUnion = &pb.Compare_Version{Version: n}
		case pb.Compare_CREATE:
			c.TargetUnion = &pb.Compare_CreateRevision{CreateRevision: n}
		case pb.Compare_MOD:
			c.TargetUnion = &pb.Compare_ModRevision{ModRevision: n}
		case pb.Compare_LEASE:
			c.TargetUnion = &pb.Compare_Lease{Lease: n}
		}
	}
	return c
}

func withEnd(c *pb.Compare, end string) *pb.Compare {
	c.RangeEnd = []byte(end)
	return c
}

const (
	eq  = pb.Compare_EQUAL
	neq = pb.Compare_NOT_EQUAL
	gt  = pb.Compare_GREATER
	lt  = pb.Compare_LESS
)

func TestTxnCompare(t *testing.T) {
	e := fixture(t)
	for _, tc := range []struct {
		name string
		cmp  *pb.Compare
		want bool
	}{
		{"value equal", cmp("a", pb.Compare_VALUE, eq, "5x"), true},
		{"value equal other", cmp("a", pb.Compare_VALUE, eq, "5"), false},
		{"value not equal", cmp("a", pb.Compare_VALUE, neq, "5"), true},
		{"value not equal same", cmp("a", pb.Compare_VALUE, neq, "5x"), false},
		{"value greater", cmp("a", pb.Compare_VALUE, gt, "5"), true},
		{"value greater prefix", cmp("a", pb.Compare_VALUE, gt, "5x\x00"), false},
		{"value less", cmp("a", pb.Compare_VALUE, lt, "6"), true},
		{"value less equal", cmp("a", pb.Compare_VALUE, lt, "5x"), false},
		{"value equal empty", cmp("a", pb.Compare_VALUE, eq, ""), false},

		{"version equal", cmp("a", pb.Compare_VERSION, eq, 2), true},
		{"version not equal", cmp("a", pb.Compare_VERSION, neq, 2), false},
		{"version greater", cmp("a", pb.Compare_VERSION, gt, 1), true},
		{"version greater same", cmp("a", pb.Compare_VERSION, gt, 2), false},
		{"version less", cmp("a", pb.Compare_VERSION, lt, 3), true},
		{"version less same", cmp("a", pb.Compare_VERSION, lt, 2), false},

		{"create equal", cmp("a", pb.Compare_CREATE, eq, 3), true},
		{"create not equal", cmp("a", pb.Compare_CREATE, neq, 3), false},
		{"create greater", cmp("a", pb.Compare_CREATE, gt, 2), true},
		{"create less", cmp("a", pb.Compare_CREATE, lt, 3), false},

		{"mod equal", cmp("a", pb.Compare_MOD, eq, 9), true},
		{"mod not equal", cmp("a", pb.Compare_MOD, neq, 8), true},
		{"mod greater", cmp("a", pb.Compare_MOD, gt, 9), false},
		{"mod less", cmp("a", pb.Compare_MOD, lt, 10), true},

		{"lease equal", cmp("l", pb.Compare_LEASE, eq, 7), true},
		{"lease not equal", cmp("l", pb.Compare_LEASE, neq, 7), false},
		{"lease greater", cmp("l", pb.Compare_LEASE, gt, 6), true},
		{"lease less", cmp("l", pb.Compare_LEASE, lt, 7), false},
		{"no lease equal 0", cmp("a", pb.Compare_LEASE, eq, 0), true},

		// Compat: a missing (or deleted) key compares as a zero
		// KeyValue, except on VALUE, which is always false (etcd
		// applyCompare: "nil == empty string in grpc; no way to
		// represent missing value").
		{"missing value equal empty", cmp("x", pb.Compare_VALUE, eq, ""), false},
		{"missing value not equal", cmp("x", pb.Compare_VALUE, neq, "v"), false},
		{"missing value less", cmp("x", pb.Compare_VALUE, lt, "v"), false},
		{"missing mod equal 0", cmp("x", pb.Compare_MOD, eq, 0), true},
		{"missing create equal 0", cmp("x", pb.Compare_CREATE, eq, 0), true},
		{"missing version equal 0", cmp("x", pb.Compare_VERSION, eq, 0), true},
		{"missing version greater 0", cmp("x", pb.Compare_VERSION, gt, 0), false},
		{"missing version less 1", cmp("x", pb.Compare_VERSION, lt, 1), true},
		{"missing lease equal 0", cmp("x", pb.Compare_LEASE, eq, 0), true},
		{"deleted create equal 0", cmp("z", pb.Compare_CREATE, eq, 0), true},
		{"deleted value equal", cmp("z", pb.Compare_VALUE, eq, "9"), false},

		// Compat: with range_end every key in the range must satisfy the
		// compare; an empty range compares as a missing key.
		{"range all exist", withEnd(cmp("a", pb.Compare_VERSION, gt, 0), "f"), true},
		{"range one fails", withEnd(cmp("a", pb.Compare_VERSION, eq, 1), "f"), false},
		{"range mod greater", withEnd(cmp("a", pb.Compare_MOD, gt, 3), "f"), true},
		{"range mod greater fails", withEnd(cmp("a", pb.Compare_MOD, gt, 4), "f"), false},
		{"range create less", withEnd(cmp("a", pb.Compare_CREATE, lt, 7), "f"), true},
		{"range value", withEnd(cmp("b", pb.Compare_VALUE, lt, "5"), "e"), true},
		{"empty range mod 0", withEnd(cmp("m", pb.Compare_MOD, eq, 0), "y"), true},
		{"empty range value", withEnd(cmp("m", pb.Compare_VALUE, eq, ""), "y"), false},
		{"from key", withEnd(cmp("d", pb.Compare_VERSION, eq, 1), "\x00"), true},
		{"from key fails", withEnd(cmp("c", pb.Compare_VERSION, eq, 1), "\x00"), false},
		{"all keys lease", withEnd(cmp("\x00", pb.Compare_LEASE, eq, 0), "\x00"), false},

		// Compat: a target union that does not match the target compares
		// against zero (etcd compareKV defaults rev to 0, v to nil).
		{"mismatched union", cmp("a", pb.Compare_MOD, gt, "x"), true},
		{"mismatched union value", cmp("a", pb.Compare_VALUE, gt, 1), true},
		{"no union", &pb.Compare{Key: []byte("a"), Target: pb.Compare_VERSION, Result: pb.Compare_EQUAL}, false},
		// Compat: an unknown result holds (etcd compareKV returns true).
		{"unknown result", cmp("a", pb.Compare_VERSION, pb.Compare_CompareResult(9), 100), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &pb.TxnRequest{
				Compare: []*pb.Compare{tc.cmp},
				Success: []*pb.RequestOp{rangeOp("a", "")},
				Failure: []*pb.RequestOp{rangeOp("b", ""), rangeOp("c", "")},
			}
			resp, rev, err := e.txn(r, nil)
			require.NoError(t, err)
			require.Equal(t, tc.want, resp.Succeeded)
			if tc.want {
				require.Len(t, resp.Responses, 1)
			} else {
				require.Len(t, resp.Responses, 2)
			}
			require.Equal(t, int64(12), rev)
		})
	}
}

// TestTxnCompareAll: every compare must hold; no compares hold trivially.
func TestTxnCompareAll(t *testing.T) {
	e := fixture(t)
	for _, tc := range []struct {
		cmps []*pb.Compare
		want bool
	}{
		{nil, true},
		{[]*pb.Compare{cmp("a", pb.Compare_VERSION, eq, 2), cmp("b", pb.Compare_VERSION, eq, 1)}, true},
		{[]*pb.Compare{cmp("a", pb.Compare_VERSION, eq, 2), cmp("b", pb.Compare_VERSION, eq, 2)}, false},
		{[]*pb.Compare{cmp("a", pb.Compare_VERSION, eq, 1), cmp("b", pb.Compare_VERSION, eq, 1)}, false},
	} {
		resp, _, err := e.txn(&pb.TxnRequest{Compare: tc.cmps}, nil)
		require.NoError(t, err)
		require.Equal(t, tc.want, resp.Succeeded)
	}
}

func rangeOp(key, end string) *pb.RequestOp {
	r := &pb.RangeRequest{Key: []byte(key)}
	if end != "" {
		r.RangeEnd = []byte(end)
	}
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: r}}
}

func putOp(key, value string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(key), Value: []byte(value)}}}
}

func putReqOp(p *pb.PutRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: p}}
}

func delOp(key, end string) *pb.RequestOp {
	d := &pb.DeleteRangeRequest{Key: []byte(key), PrevKv: true}
	if end != "" {
		d.RangeEnd = []byte(end)
	}
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: d}}
}

func txnOp(t *pb.TxnRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: t}}
}

func TestTxnExecution(t *testing.T) {
	e := fixture(t)
	r := &pb.TxnRequest{
		Compare: []*pb.Compare{cmp("a", pb.Compare_VALUE, eq, "5x")},
		Success: []*pb.RequestOp{
			rangeOp("a", ""),
			putOp("a", "new"),
			// A later op sees the txn's earlier writes at the new revision.
			rangeOp("a", ""),
			delOp("b", "d"),
			rangeOp("a", "f"),
			txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{putOp("n", "nested")}}),
		},
		Failure: []*pb.RequestOp{putOp("never", "x")},
	}
	resp, rev, err := e.txn(r, testLeases)
	require.NoError(t, err)
	require.Equal(t, int64(13), rev)
	require.True(t, resp.Succeeded)
	require.Equal(t, int64(13), resp.Header.Revision)
	require.Len(t, resp.Responses, 6)

	r0 := resp.Responses[0].GetResponseRange()
	requireKVs(t, kvs(head, false, "a"), r0.Kvs)
	// Compat: a range before any write reads at the txn's begin revision.
	require.Equal(t, int64(12), r0.Header.Revision)

	require.Equal(t, int64(13), resp.Responses[1].GetResponsePut().Header.Revision)
	require.Nil(t, resp.Responses[1].GetResponsePut().PrevKv, "prev_kv not asked for")

	r2 := resp.Responses[2].GetResponseRange()
	newA := &mvccpb.KeyValue{Key: []byte("a"), CreateRevision: 3, ModRevision: 13, Version: 3, Value: []byte("new")}
	requireKVs(t, []*mvccpb.KeyValue{newA}, r2.Kvs)
	require.Equal(t, int64(13), r2.Header.Revision)

	d := resp.Responses[3].GetResponseDeleteRange()
	require.Equal(t, int64(2), d.Deleted)
	requireKVs(t, kvs(head, false, "b", "c"), d.PrevKvs)

	r4 := resp.Responses[4].GetResponseRange()
	requireKVs(t, append([]*mvccpb.KeyValue{newA}, kvs(head, false, "d", "e")...), r4.Kvs)
	require.Equal(t, int64(3), r4.Count)

	nested := resp.Responses[5].GetResponseTxn()
	require.True(t, nested.Succeeded)
	require.Equal(t, int64(13), nested.Responses[0].GetResponsePut().Header.Revision)

	require.Equal(t, "new", string(e.get("a").Value))
	require.Nil(t, e.get("b"))
	require.Equal(t, int64(13), e.get("n").ModRevision)
	require.Nil(t, e.get("never"))

	// The failure branch.
	resp, rev, err = e.txn(&pb.TxnRequest{
		Compare: []*pb.Compare{cmp("a", pb.Compare_VALUE, eq, "5x")},
		Success: []*pb.RequestOp{putOp("never", "x")},
		Failure: []*pb.RequestOp{putOp("f1", "x"), putOp("f2", "y")},
	}, testLeases)
	require.NoError(t, err)
	require.False(t, resp.Succeeded)
	require.Equal(t, int64(14), rev)
	require.Len(t, resp.Responses, 2)
	require.Nil(t, e.get("never"))
	require.Equal(t, int64(14), e.get("f2").ModRevision)

	// A txn that changes nothing does not bump the revision.
	resp, rev, err = e.txn(&pb.TxnRequest{Success: []*pb.RequestOp{delOp("nothing", "")}}, testLeases)
	require.NoError(t, err)
	require.Equal(t, int64(14), rev)
	require.Equal(t, int64(14), resp.Header.Revision)
	require.Equal(t, int64(0), resp.Responses[0].GetResponseDeleteRange().Deleted)
}

// TestTxnNestedPathBeforeExecution: every compare on the taken path,
// nested ones included, sees the state before any op of the txn runs.
//
// Compat: etcd Txn computes compareToPath on the read view before
// executeTxn.
func TestTxnNestedPathBeforeExecution(t *testing.T) {
	e := fixture(t)
	r := &pb.TxnRequest{
		Success: []*pb.RequestOp{
			putOp("x", "1"),
			// x does not exist before the txn: version 0 holds.
			txnOp(&pb.TxnRequest{
				Compare: []*pb.Compare{cmp("x", pb.Compare_VERSION, eq, 0)},
				Success: []*pb.RequestOp{putOp("y", "before")},
				Failure: []*pb.RequestOp{putOp("y", "after")},
			}),
			delOp("a", ""),
			txnOp(&pb.TxnRequest{
				Compare: []*pb.Compare{cmp("a", pb.Compare_VALUE, eq, "5x")},
				Success: []*pb.RequestOp{
					// Deeper nesting: path entries are consumed in order.
					txnOp(&pb.TxnRequest{
						Compare: []*pb.Compare{cmp("b", pb.Compare_VERSION, eq, 1)},
						Success: []*pb.RequestOp{putOp("w", "b-was-1")},
						Failure: []*pb.RequestOp{putOp("w", "b-was-not-1")},
					}),
					txnOp(&pb.TxnRequest{
						Compare: []*pb.Compare{cmp("b", pb.Compare_VERSION, eq, 9)},
						Success: []*pb.RequestOp{putOp("v", "b-was-9")},
						Failure: []*pb.RequestOp{putOp("v", "b-was-not-9")},
					}),
				},
				Failure: []*pb.RequestOp{putOp("u", "a-was-deleted")},
			}),
		},
	}
	resp, rev, err := e.txn(r, testLeases)
	require.NoError(t, err)
	require.Equal(t, int64(13), rev)
	require.Equal(t, "before", string(e.get("y").Value))
	require.Nil(t, e.get("a"))
	require.Nil(t, e.get("u"))
	require.Equal(t, "b-was-1", string(e.get("w").Value))
	require.Equal(t, "b-was-not-9", string(e.get("v").Value))

	n1 := resp.Responses[1].GetResponseTxn()
	require.True(t, n1.Succeeded)
	n3 := resp.Responses[3].GetResponseTxn()
	require.True(t, n3.Succeeded)
	require.True(t, n3.Responses[0].GetResponseTxn().Succeeded)
	require.False(t, n3.Responses[1].GetResponseTxn().Succeeded)
}

func TestPut(t *testing.T) {
	for _, tc := range []struct {
		name    string
		req     *pb.PutRequest
		leases  Leases
		wantErr error
		want    *mvccpb.KeyValue // the key after, if no error
		prev    *mvccpb.KeyValue
	}{
		{name: "new key", req: &pb.PutRequest{Key: []byte("n"), Value: []byte("v")},
			want: &mvccpb.KeyValue{Key: []byte("n"), CreateRevision: 13, ModRevision: 13, Version: 1, Value: []byte("v")}},
		{name: "prev kv", req: &pb.PutRequest{Key: []byte("a"), Value: []byte("v"), PrevKv: true},
			want: &mvccpb.KeyValue{Key: []byte("a"), CreateRevision: 3, ModRevision: 13, Version: 3, Value: []byte("v")},
			prev: head["a"]},
		{name: "prev kv of missing key", req: &pb.PutRequest{Key: []byte("z"), Value: []byte("v"), PrevKv: true},
			want: &mvccpb.KeyValue{Key: []byte("z"), CreateRevision: 13, ModRevision: 13, Version: 1, Value: []byte("v")}},
		{name: "lease", req: &pb.PutRequest{Key: []byte("a"), Value: []byte("v"), Lease: 8}, leases: testLeases,
			want: &mvccpb.KeyValue{Key: []byte("a"), CreateRevision: 3, ModRevision: 13, Version: 3, Value: []byte("v"), Lease: 8}},
		// Compat: a put without a lease detaches the key from its lease.
		{name: "no lease detaches", req: &pb.PutRequest{Key: []byte("l"), Value: []byte("v")},
			want: &mvccpb.KeyValue{Key: []byte("l"), CreateRevision: 12, ModRevision: 13, Version: 2, Value: []byte("v")}},
		{name: "ignore value", req: &pb.PutRequest{Key: []byte("l"), IgnoreValue: true, Lease: 8}, leases: testLeases,
			want: &mvccpb.KeyValue{Key: []byte("l"), CreateRevision: 12, ModRevision: 13, Version: 2, Value: []byte("lv"), Lease: 8}},
		{name: "ignore lease", req: &pb.PutRequest{Key: []byte("l"), Value: []byte("v"), IgnoreLease: true},
			want: &mvccpb.KeyValue{Key: []byte("l"), CreateRevision: 12, ModRevision: 13, Version: 2, Value: []byte("v"), Lease: 7}},
		{name: "ignore both", req: &pb.PutRequest{Key: []byte("l"), IgnoreValue: true, IgnoreLease: true, PrevKv: true},
			want: &mvccpb.KeyValue{Key: []byte("l"), CreateRevision: 12, ModRevision: 13, Version: 2, Value: []byte("lv"), Lease: 7},
			prev: head["l"]},

		// Compat: ignore_value/ignore_lease need an existing key
		// (etcd checkAndGetPrevKV: rpctypes.ErrKeyNotFound).
		{name: "ignore value missing", req: &pb.PutRequest{Key: []byte("x"), IgnoreValue: true}, wantErr: ErrKeyNotFound},
		{name: "ignore lease missing", req: &pb.PutRequest{Key: []byte("x"), IgnoreLease: true}, wantErr: ErrKeyNotFound},
		{name: "ignore value deleted", req: &pb.PutRequest{Key: []byte("z"), IgnoreValue: true}, wantErr: ErrKeyNotFound},
		// Compat: a lease must exist (lease.ErrLeaseNotFound).
		{name: "unknown lease", req: &pb.PutRequest{Key: []byte("a"), Lease: 99}, leases: testLeases, wantErr: ErrLeaseNotFound},
		{name: "no lessor", req: &pb.PutRequest{Key: []byte("a"), Lease: 7}, wantErr: ErrLeaseNotFound},
		{name: "negative lease", req: &pb.PutRequest{Key: []byte("a"), Lease: -7}, leases: testLeases, wantErr: ErrLeaseNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := fixture(t)
			var resp *pb.PutResponse
			rev, err := e.apply(func(w *mvcc.WriteTxn) error {
				var err error
				resp, err = Put(w, tc.leases, tc.req)
				return err
			})
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				require.Equal(t, int64(12), rev, "a failed put changes nothing")
				return
			}
			require.NoError(t, err)
			require.Equal(t, int64(13), rev)
			requireKVs(t, []*mvccpb.KeyValue{tc.want}, []*mvccpb.KeyValue{e.get(string(tc.req.Key))})
			if tc.prev == nil {
				require.Nil(t, resp.PrevKv)
			} else {
				requireKVs(t, []*mvccpb.KeyValue{tc.prev}, []*mvccpb.KeyValue{resp.PrevKv})
			}
		})
	}
}

// TestPutLeaseCheckedFirst pins the order of put preconditions.
//
// Compat: etcd (txn/put.go Put and checkPut) checks the lease before
// ignore_value/ignore_lease, so a put with both problems fails with
// ErrLeaseNotFound (rpctypes.ErrGRPCLeaseNotFound), not ErrKeyNotFound.
func TestPutLeaseCheckedFirst(t *testing.T) {
	e := fixture(t)
	req := &pb.PutRequest{Key: []byte("missing"), IgnoreValue: true, Lease: 99}
	_, err := e.apply(func(w *mvcc.WriteTxn) error {
		_, err := Put(w, testLeases, req)
		return err
	})
	require.ErrorIs(t, err, ErrLeaseNotFound)
	_, _, err = e.txn(&pb.TxnRequest{Success: []*pb.RequestOp{putReqOp(req)}}, testLeases)
	require.ErrorIs(t, err, ErrLeaseNotFound)
}

func TestDeleteRange(t *testing.T) {
	for _, tc := range []struct {
		name    string
		key     string
		end     string
		prevKv  bool
		deleted []string
		rev     int64
	}{
		{"single", "a", "", true, []string{"a"}, 13},
		{"single without prev", "a", "", false, []string{"a"}, 13},
		{"missing", "x", "", true, nil, 12},
		{"deleted", "z", "", true, nil, 12},
		{"range", "b", "e", true, []string{"b", "c", "d"}, 13},
		{"from key", "d", "\x00", true, []string{"d", "e", "l"}, 13},
		{"all", "\x00", "\x00", true, []string{"a", "b", "c", "d", "e", "l"}, 13},
		{"end before key", "d", "b", true, nil, 12},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := fixture(t)
			var resp *pb.DeleteRangeResponse
			req := &pb.DeleteRangeRequest{Key: []byte(tc.key), PrevKv: tc.prevKv}
			if tc.end != "" {
				req.RangeEnd = []byte(tc.end)
			}
			rev, err := e.apply(func(w *mvcc.WriteTxn) error {
				var err error
				resp, err = DeleteRange(w, req)
				return err
			})
			require.NoError(t, err)
			require.Equal(t, tc.rev, rev)
			require.Equal(t, int64(len(tc.deleted)), resp.Deleted)
			if tc.prevKv {
				requireKVs(t, kvs(head, false, tc.deleted...), resp.PrevKvs)
			} else {
				require.Empty(t, resp.PrevKvs)
			}
			for _, k := range tc.deleted {
				require.Nil(t, e.get(k), "key %q", k)
			}
		})
	}
}

// TestTxnChecksBeforeWrites: a precondition failure anywhere on the taken
// path fails the whole txn before any op runs; an untaken branch is not
// checked.
//
// Compat: etcd Txn runs checkTxn on the read view before executeTxn.
func TestTxnChecksBeforeWrites(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  *pb.TxnRequest
		want error
	}{
		{"ignore value on missing key", &pb.TxnRequest{Success: []*pb.RequestOp{
			putOp("first", "1"),
			putReqOp(&pb.PutRequest{Key: []byte("x"), IgnoreValue: true}),
		}}, ErrKeyNotFound},
		{"unknown lease", &pb.TxnRequest{Success: []*pb.RequestOp{
			putOp("first", "1"),
			putReqOp(&pb.PutRequest{Key: []byte("x"), Lease: 99}),
		}}, ErrLeaseNotFound},
		{"nested on taken path", &pb.TxnRequest{Success: []*pb.RequestOp{
			putOp("first", "1"),
			txnOp(&pb.TxnRequest{
				Compare: []*pb.Compare{cmp("a", pb.Compare_VERSION, eq, 2)},
				Success: []*pb.RequestOp{putReqOp(&pb.PutRequest{Key: []byte("x"), IgnoreLease: true})},
			}),
		}}, ErrKeyNotFound},
		{"nested failure branch", &pb.TxnRequest{
			Compare: []*pb.Compare{cmp("a", pb.Compare_VERSION, eq, 1)},
			Failure: []*pb.RequestOp{
				putOp("first", "1"),
				txnOp(&pb.TxnRequest{
					Compare: []*pb.Compare{cmp("a", pb.Compare_VERSION, eq, 1)},
					Failure: []*pb.RequestOp{putReqOp(&pb.PutRequest{Key: []byte("x"), Lease: 99})},
				}),
			}}, ErrLeaseNotFound},
		{"untaken branch not checked", &pb.TxnRequest{
			Compare: []*pb.Compare{cmp("a", pb.Compare_VERSION, eq, 2)},
			Success: []*pb.RequestOp{putOp("first", "1")},
			Failure: []*pb.RequestOp{putReqOp(&pb.PutRequest{Key: []byte("x"), IgnoreValue: true})},
		}, nil},
		{"untaken nested branch not checked", &pb.TxnRequest{Success: []*pb.RequestOp{
			putOp("first", "1"),
			txnOp(&pb.TxnRequest{
				Compare: []*pb.Compare{cmp("a", pb.Compare_VERSION, eq, 2)},
				Failure: []*pb.RequestOp{putReqOp(&pb.PutRequest{Key: []byte("x"), Lease: 99})},
			}),
		}}, nil},
		{"ignore value on key existing before txn", &pb.TxnRequest{Success: []*pb.RequestOp{
			putOp("first", "1"),
			putReqOp(&pb.PutRequest{Key: []byte("a"), IgnoreValue: true, Lease: 7}),
		}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := fixture(t)
			_, rev, err := e.txn(tc.req, testLeases)
			if tc.want == nil {
				require.NoError(t, err)
				require.Equal(t, int64(13), rev)
				require.Equal(t, int64(13), e.get("first").ModRevision)
				return
			}
			require.ErrorIs(t, err, tc.want)
			require.Equal(t, int64(12), rev, "nothing may be written by a failed txn")
			require.Nil(t, e.get("first"), "nothing may be written by a failed txn")
		})
	}
}

// TestTxnRangeRevisionChecked: a Range op's revision is checked against the
// state before the txn, before any op runs, like a put's preconditions.
//
// Compat: etcd checkTxn calls checkRange for every Range op on the taken
// path: Revision > rv.Rev() is ErrFutureRev, Revision < rv.FirstRev() is
// ErrCompacted, with rv the read view before the txn. So a write txn can
// neither read the revision it is creating nor fail halfway: the applier
// commits whatever a txn staged before an error (applier.go applyRequest
// calls End and commits the batch even when Txn fails), so without the
// check a txn answered with an error has half-applied.
func TestTxnRangeRevisionChecked(t *testing.T) {
	for _, tc := range []struct {
		name    string
		rangeAt int64
		compact int64
		want    error
	}{
		{"own new revision", 13, 0, mvcc.ErrFutureRev},
		{"future revision", 20, 0, mvcc.ErrFutureRev},
		{"compacted revision", 4, 5, mvcc.ErrCompacted},
		{"compacted revision nested", 4, 5, mvcc.ErrCompacted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := fixture(t)
			if tc.compact > 0 {
				e.compact(tc.compact)
			}
			rr := &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("a"), Revision: tc.rangeAt}}}
			ops := []*pb.RequestOp{putOp("first", "1"), rr}
			if tc.name == "compacted revision nested" {
				ops = []*pb.RequestOp{putOp("first", "1"), txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{rr}})}
			}
			_, rev, err := e.txn(&pb.TxnRequest{Success: ops}, testLeases)
			require.ErrorIs(t, err, tc.want)
			require.Equal(t, int64(12), rev, "a failed txn must not bump the revision")
			require.Nil(t, e.get("first"), "a failed txn must not write")
		})
	}
}

// TestTxnReadOnlyRangeErrors: in a read-only txn, range errors surface.
func TestTxnReadOnlyRangeErrors(t *testing.T) {
	e := fixture(t)
	e.compact(5)
	for rev, want := range map[int64]error{13: mvcc.ErrFutureRev, 4: mvcc.ErrCompacted} {
		_, _, err := e.txn(&pb.TxnRequest{Success: []*pb.RequestOp{
			{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("a"), Revision: rev}}},
		}}, nil)
		require.ErrorIs(t, err, want)
	}
	resp, _, err := e.txn(&pb.TxnRequest{Success: []*pb.RequestOp{
		{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("f"), Revision: 5, Limit: 1}}},
	}}, nil)
	require.NoError(t, err)
	rr := resp.Responses[0].GetResponseRange()
	requireKVs(t, kvs(at5, false, "a"), rr.Kvs)
	require.True(t, rr.More)
	require.Equal(t, int64(4), rr.Count)
}

func TestIsTxnReadOnly(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  *pb.TxnRequest
		want bool
	}{
		{"empty", &pb.TxnRequest{}, true},
		{"compares only", &pb.TxnRequest{Compare: []*pb.Compare{cmp("a", pb.Compare_VERSION, eq, 1)}}, true},
		{"ranges", &pb.TxnRequest{Success: []*pb.RequestOp{rangeOp("a", "")}, Failure: []*pb.RequestOp{rangeOp("b", "c")}}, true},
		{"put in success", &pb.TxnRequest{Success: []*pb.RequestOp{rangeOp("a", ""), putOp("a", "v")}}, false},
		{"put in failure", &pb.TxnRequest{Success: []*pb.RequestOp{rangeOp("a", "")}, Failure: []*pb.RequestOp{putOp("a", "v")}}, false},
		{"delete", &pb.TxnRequest{Failure: []*pb.RequestOp{delOp("a", "")}}, false},
		{"nested put", &pb.TxnRequest{Success: []*pb.RequestOp{txnOp(&pb.TxnRequest{Failure: []*pb.RequestOp{putOp("a", "v")}})}}, false},
		{"deeply nested delete", &pb.TxnRequest{Failure: []*pb.RequestOp{txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{
			txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{delOp("a", "")}}),
		}})}}, false},
		// etcd's IsTxnReadonly treats any nested txn as a write and
		// sends it through raft; Cairn looks inside. Either way the
		// result is the same; Cairn saves a log entry.
		{"nested ranges", &pb.TxnRequest{Success: []*pb.RequestOp{txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{rangeOp("a", "")}})}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, IsTxnReadOnly(tc.req))
		})
	}
}

// TestErrorsAreDistinct guards the error values package api maps.
func TestErrorsAreDistinct(t *testing.T) {
	require.False(t, errors.Is(ErrKeyNotFound, ErrLeaseNotFound))
	require.Equal(t, "apply: key not found", ErrKeyNotFound.Error())
	require.Equal(t, "apply: lease not found", ErrLeaseNotFound.Error())
}

// TestTxnResponseHeaders pins the header revisions inside a write txn's
// response, as the applier fills them (SetTxnRevision).
//
// Compat: etcd v3.7 (txn/txn.go, put.go, delete.go) sets only the top-level
// TxnResponse header to the txn's revision. A Put's header is beginRev+1;
// a DeleteRange's is beginRev+1 if it deleted something or an earlier op
// changed something, else beginRev (storeTxnWrite.DeleteRange); a Range's
// is the revision it read at; a nested TxnResponse's header keeps
// revision 0 (newTxnResp never sets it).
func TestTxnResponseHeaders(t *testing.T) {
	e := fixture(t)
	resp, rev, err := e.txn(&pb.TxnRequest{Success: []*pb.RequestOp{
		delOp("nothing", ""),
		rangeOp("a", ""),
		putOp("x", "1"),
		delOp("nothing-either", ""),
		rangeOp("x", ""),
		txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{putOp("n", "1"), rangeOp("n", "")}}),
	}}, testLeases)
	require.NoError(t, err)
	require.Equal(t, int64(13), rev)
	require.Equal(t, int64(13), resp.Header.Revision, "txn")
	got := []int64{
		resp.Responses[0].GetResponseDeleteRange().Header.Revision,
		resp.Responses[1].GetResponseRange().Header.Revision,
		resp.Responses[2].GetResponsePut().Header.Revision,
		resp.Responses[3].GetResponseDeleteRange().Header.Revision,
		resp.Responses[4].GetResponseRange().Header.Revision,
		resp.Responses[5].GetResponseTxn().Header.GetRevision(),
		resp.Responses[5].GetResponseTxn().Responses[0].GetResponsePut().Header.Revision,
		resp.Responses[5].GetResponseTxn().Responses[1].GetResponseRange().Header.Revision,
	}
	require.Equal(t, []int64{12, 12, 13, 13, 13, 0, 13, 13}, got,
		"headers of: delete nothing, range, put, delete nothing, range, nested txn, nested put, nested range")
}
