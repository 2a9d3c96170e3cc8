package api

// Table tests for request validation. Expectations follow etcd v3.7
// server/etcdserver/api/v3rpc/key.go (checkRangeRequest, checkPutRequest,
// checkDeleteRequest, checkTxnRequest, checkIntervals). Errors must be the
// rpctypes values themselves (==), since the gRPC layer returns them as is.

import (
	"fmt"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

func requireErr(t *testing.T, want, got error) {
	t.Helper()
	if got != want {
		t.Fatalf("got error %v, want %v", got, want)
	}
}

func TestCheckRange(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  *pb.RangeRequest
		want error
	}{
		{"ok", &pb.RangeRequest{Key: []byte("a")}, nil},
		{"ok range", &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("b")}, nil},
		{"ok all keys", &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}}, nil},
		{"ok sorted", &pb.RangeRequest{Key: []byte("a"), SortOrder: pb.RangeRequest_DESCEND, SortTarget: pb.RangeRequest_VALUE}, nil},
		// Compat: negative revisions, limits and filters pass validation.
		{"ok negative fields", &pb.RangeRequest{Key: []byte("a"), Revision: -1, Limit: -1, MaxModRevision: -1}, nil},
		{"empty key", &pb.RangeRequest{}, rpctypes.ErrGRPCEmptyKey},
		{"empty key with end", &pb.RangeRequest{RangeEnd: []byte("b")}, rpctypes.ErrGRPCEmptyKey},
		{"invalid sort order", &pb.RangeRequest{Key: []byte("a"), SortOrder: 3}, rpctypes.ErrGRPCInvalidSortOption},
		{"negative sort order", &pb.RangeRequest{Key: []byte("a"), SortOrder: -1}, rpctypes.ErrGRPCInvalidSortOption},
		{"invalid sort target", &pb.RangeRequest{Key: []byte("a"), SortTarget: 5}, rpctypes.ErrGRPCInvalidSortOption},
		// Compat: the empty key is reported before the sort option.
		{"empty key and invalid sort", &pb.RangeRequest{SortOrder: 7}, rpctypes.ErrGRPCEmptyKey},
	} {
		t.Run(tc.name, func(t *testing.T) { requireErr(t, tc.want, checkRange(tc.req)) })
	}
}

func TestCheckPut(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  *pb.PutRequest
		want error
	}{
		{"ok", &pb.PutRequest{Key: []byte("a"), Value: []byte("v")}, nil},
		{"ok empty value", &pb.PutRequest{Key: []byte("a")}, nil},
		{"ok ignore value", &pb.PutRequest{Key: []byte("a"), IgnoreValue: true, Lease: 5}, nil},
		{"ok ignore lease", &pb.PutRequest{Key: []byte("a"), Value: []byte("v"), IgnoreLease: true}, nil},
		{"ok ignore both", &pb.PutRequest{Key: []byte("a"), IgnoreValue: true, IgnoreLease: true}, nil},
		{"empty key", &pb.PutRequest{Value: []byte("v")}, rpctypes.ErrGRPCEmptyKey},
		{"value with ignore value", &pb.PutRequest{Key: []byte("a"), Value: []byte("v"), IgnoreValue: true}, rpctypes.ErrGRPCValueProvided},
		{"lease with ignore lease", &pb.PutRequest{Key: []byte("a"), Lease: 5, IgnoreLease: true}, rpctypes.ErrGRPCLeaseProvided},
		// Compat: checks run in etcd's order.
		{"empty key first", &pb.PutRequest{Value: []byte("v"), IgnoreValue: true}, rpctypes.ErrGRPCEmptyKey},
		{"value before lease", &pb.PutRequest{Key: []byte("a"), Value: []byte("v"), IgnoreValue: true, Lease: 5, IgnoreLease: true}, rpctypes.ErrGRPCValueProvided},
	} {
		t.Run(tc.name, func(t *testing.T) { requireErr(t, tc.want, checkPut(tc.req)) })
	}
}

func TestCheckDelete(t *testing.T) {
	requireErr(t, nil, checkDelete(&pb.DeleteRangeRequest{Key: []byte("a")}))
	requireErr(t, nil, checkDelete(&pb.DeleteRangeRequest{Key: []byte("a"), RangeEnd: []byte{0}}))
	requireErr(t, rpctypes.ErrGRPCEmptyKey, checkDelete(&pb.DeleteRangeRequest{}))
	requireErr(t, rpctypes.ErrGRPCEmptyKey, checkDelete(&pb.DeleteRangeRequest{RangeEnd: []byte("b")}))
}

func rng(key string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte(key)}}}
}

func put(key string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(key)}}}
}

// del is a delete of [key, end); end "" deletes the single key.
func del(key, end string) *pb.RequestOp {
	d := &pb.DeleteRangeRequest{Key: []byte(key)}
	if end != "" {
		d.RangeEnd = []byte(end)
	}
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: d}}
}

func txn(then, els []*pb.RequestOp) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{Success: then, Failure: els}}}
}

func ops(o ...*pb.RequestOp) []*pb.RequestOp { return o }

func cmps(n int) []*pb.Compare {
	out := make([]*pb.Compare, n)
	for i := range out {
		out[i] = &pb.Compare{Key: []byte(fmt.Sprint("k", i))}
	}
	return out
}

func puts(n int) []*pb.RequestOp {
	out := make([]*pb.RequestOp, n)
	for i := range out {
		out[i] = put(fmt.Sprint("k", i))
	}
	return out
}

const testMaxOps = 8

func TestCheckTxn(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  *pb.TxnRequest
		want error
	}{
		{"empty", &pb.TxnRequest{}, nil},
		{"ok", &pb.TxnRequest{Compare: cmps(1), Success: ops(put("a"), rng("a"), del("b", "")), Failure: ops(rng("a"))}, nil},

		// Too many ops: each of compare, success and failure counts
		// alone (etcd: opc = max of the three).
		{"max ops", &pb.TxnRequest{Compare: cmps(testMaxOps), Success: puts(testMaxOps), Failure: puts(testMaxOps)}, nil},
		{"too many compares", &pb.TxnRequest{Compare: cmps(testMaxOps + 1)}, rpctypes.ErrGRPCTooManyOps},
		{"too many success", &pb.TxnRequest{Success: puts(testMaxOps + 1)}, rpctypes.ErrGRPCTooManyOps},
		{"too many failure", &pb.TxnRequest{Failure: puts(testMaxOps + 1)}, rpctypes.ErrGRPCTooManyOps},
		// Compat: a nested txn gets what its parent's widest list
		// leaves: maxOps - opc.
		{"nested within budget", &pb.TxnRequest{Success: ops(put("x"), put("y"), txn(puts(testMaxOps-3), nil))}, nil},
		{"nested over budget", &pb.TxnRequest{Success: ops(put("x"), put("y"), txn(puts(testMaxOps-2), nil))}, rpctypes.ErrGRPCTooManyOps},
		{"nested budget from compares", &pb.TxnRequest{Compare: cmps(6), Success: ops(txn(puts(3), nil))}, rpctypes.ErrGRPCTooManyOps},
		{"nested empty with no budget", &pb.TxnRequest{Success: append(puts(testMaxOps-1), txn(nil, nil))}, nil},
		// Compat: too many ops is reported before an empty key.
		{"too many before empty key", &pb.TxnRequest{Compare: append(cmps(testMaxOps), &pb.Compare{})}, rpctypes.ErrGRPCTooManyOps},

		{"empty compare key", &pb.TxnRequest{Compare: []*pb.Compare{{}}}, rpctypes.ErrGRPCEmptyKey},
		{"empty compare key with range end", &pb.TxnRequest{Compare: []*pb.Compare{{RangeEnd: []byte("b")}}}, rpctypes.ErrGRPCEmptyKey},
		{"empty put key", &pb.TxnRequest{Success: ops(put(""))}, rpctypes.ErrGRPCEmptyKey},
		{"empty range key", &pb.TxnRequest{Failure: ops(rng(""))}, rpctypes.ErrGRPCEmptyKey},
		{"empty delete key", &pb.TxnRequest{Success: ops(del("", "b"))}, rpctypes.ErrGRPCEmptyKey},
		{"empty key nested", &pb.TxnRequest{Success: ops(txn(nil, ops(put(""))))}, rpctypes.ErrGRPCEmptyKey},
		{"empty compare key nested", &pb.TxnRequest{Success: ops(&pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{Compare: []*pb.Compare{{}}}}})}, rpctypes.ErrGRPCEmptyKey},
		{"invalid sort", &pb.TxnRequest{Success: ops(&pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("a"), SortTarget: 9}}})}, rpctypes.ErrGRPCInvalidSortOption},
		{"value provided", &pb.TxnRequest{Success: ops(&pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("a"), Value: []byte("v"), IgnoreValue: true}}})}, rpctypes.ErrGRPCValueProvided},
		// Compat: an empty RequestOp is ErrGRPCKeyNotFound (etcd
		// checkRequestOp: "empty op / nil entry").
		{"empty op", &pb.TxnRequest{Success: ops(&pb.RequestOp{})}, rpctypes.ErrGRPCKeyNotFound},
		{"empty op in failure", &pb.TxnRequest{Failure: ops(put("a"), &pb.RequestOp{})}, rpctypes.ErrGRPCKeyNotFound},
		{"empty op nested", &pb.TxnRequest{Success: ops(txn(ops(&pb.RequestOp{}), nil))}, rpctypes.ErrGRPCKeyNotFound},
		// Compat: ops are checked before keys are checked for duplicates.
		{"empty op before duplicate", &pb.TxnRequest{Success: ops(put("a"), put("a"), &pb.RequestOp{})}, rpctypes.ErrGRPCKeyNotFound},

		// Duplicate keys (etcd checkIntervals).
		{"put twice", &pb.TxnRequest{Success: ops(put("a"), put("a"))}, rpctypes.ErrGRPCDuplicateKey},
		{"put twice in failure", &pb.TxnRequest{Failure: ops(put("a"), rng("a"), put("a"))}, rpctypes.ErrGRPCDuplicateKey},
		{"put in success and failure", &pb.TxnRequest{Success: ops(put("a")), Failure: ops(put("a"))}, nil},
		{"put and delete key", &pb.TxnRequest{Success: ops(put("a"), del("a", ""))}, rpctypes.ErrGRPCDuplicateKey},
		{"delete then put key", &pb.TxnRequest{Success: ops(del("a", ""), put("a"))}, rpctypes.ErrGRPCDuplicateKey},
		{"put inside delete range", &pb.TxnRequest{Success: ops(del("a", "c"), put("b"))}, rpctypes.ErrGRPCDuplicateKey},
		{"put at delete range start", &pb.TxnRequest{Success: ops(del("a", "c"), put("a"))}, rpctypes.ErrGRPCDuplicateKey},
		{"put at delete range end", &pb.TxnRequest{Success: ops(del("a", "c"), put("c"))}, nil},
		{"put after point delete", &pb.TxnRequest{Success: ops(del("a", ""), put("a\x00"))}, nil},
		{"put in empty delete range", &pb.TxnRequest{Success: ops(del("c", "a"), put("b"))}, nil},
		{"deletes overlap", &pb.TxnRequest{Success: ops(del("a", "c"), del("b", "d"), del("b", ""))}, nil},
		{"range and put", &pb.TxnRequest{Success: ops(rng("a"), put("a"), rng("a"))}, nil},

		// Nested txns.
		{"nested then/else same put", &pb.TxnRequest{Success: ops(txn(ops(put("a")), ops(put("a"))))}, nil},
		{"outer put and nested then put", &pb.TxnRequest{Success: ops(put("a"), txn(ops(put("a")), nil))}, rpctypes.ErrGRPCDuplicateKey},
		{"outer put and nested else put", &pb.TxnRequest{Success: ops(txn(nil, ops(put("a"))), put("a"))}, rpctypes.ErrGRPCDuplicateKey},
		{"nested put twice", &pb.TxnRequest{Success: ops(txn(ops(put("a"), put("a")), nil))}, rpctypes.ErrGRPCDuplicateKey},
		{"two nested txns put", &pb.TxnRequest{Success: ops(txn(ops(put("a")), nil), txn(ops(put("a")), nil))}, rpctypes.ErrGRPCDuplicateKey},
		{"two nested txns then and else", &pb.TxnRequest{Success: ops(txn(ops(put("a")), nil), txn(nil, ops(put("a"))))}, rpctypes.ErrGRPCDuplicateKey},
		{"nested then/else same put twice", &pb.TxnRequest{Success: ops(txn(ops(put("a")), ops(put("a"))), txn(ops(put("b")), ops(put("b"))))}, nil},
		{"outer delete range and nested put", &pb.TxnRequest{Success: ops(del("a", "c"), txn(ops(put("b")), nil))}, rpctypes.ErrGRPCDuplicateKey},
		{"outer delete range and nested else put", &pb.TxnRequest{Success: ops(txn(nil, ops(put("b"))), del("a", "c"))}, rpctypes.ErrGRPCDuplicateKey},
		{"nested delete range and outer put", &pb.TxnRequest{Success: ops(txn(ops(del("a", "c")), nil), put("b"))}, rpctypes.ErrGRPCDuplicateKey},
		{"nested else delete and outer put", &pb.TxnRequest{Success: ops(put("b"), txn(nil, ops(del("b", ""))))}, rpctypes.ErrGRPCDuplicateKey},
		{"nested then delete, else put", &pb.TxnRequest{Success: ops(txn(ops(del("a", "c")), ops(put("b"))))}, nil},
		{"nested delete then later nested put", &pb.TxnRequest{Success: ops(txn(ops(del("a", "c")), nil), txn(ops(put("b")), nil))}, rpctypes.ErrGRPCDuplicateKey},
		// Compat: etcd checks a nested txn's puts only against deletes
		// collected so far, so a put in an earlier nested txn and a
		// delete in a later one pass validation.
		{"nested put then later nested delete", &pb.TxnRequest{Success: ops(txn(ops(put("b")), nil), txn(ops(del("a", "c")), nil))}, nil},
		{"deeply nested duplicate", &pb.TxnRequest{Failure: ops(put("a"), txn(ops(txn(nil, ops(put("a")))), nil))}, rpctypes.ErrGRPCDuplicateKey},
		{"deeply nested delete", &pb.TxnRequest{Success: ops(del("a", "z"), txn(ops(txn(ops(txn(ops(put("m")), nil)), nil)), nil))}, rpctypes.ErrGRPCDuplicateKey},
		{"success and failure checked apart", &pb.TxnRequest{Success: ops(del("a", "z")), Failure: ops(put("b"), txn(ops(put("c")), nil))}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) { requireErr(t, tc.want, checkTxn(tc.req, testMaxOps)) })
	}
}

// TestCheckTxnFromKeyDelete: a delete whose range_end is "\x00" (every key
// >= key) overlaps every put at or above its key.
//
// Compat: deliberately stricter than etcd v3.7, whose checkIntervals builds
// adt.NewStringAffineInterval(key, "\x00"), an empty interval, and so
// accepts Txn{Delete("a", "\x00"), Put("b")}. Upstream treats that as a
// bug (etcd-io/etcd#22445, fix in #22395): the txn deletes and re-creates a
// key in one revision, which etcd's compaction then mishandles (#22376).
// Cairn keeps rejecting it with ErrGRPCDuplicateKey.
func TestCheckTxnFromKeyDelete(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  *pb.TxnRequest
		want error
	}{
		{"from key delete and put", &pb.TxnRequest{Success: ops(del("a", "\x00"), put("b"))}, rpctypes.ErrGRPCDuplicateKey},
		{"from key delete and put at its start", &pb.TxnRequest{Success: ops(del("a", "\x00"), put("a"))}, rpctypes.ErrGRPCDuplicateKey},
		{"all keys delete and put", &pb.TxnRequest{Success: ops(del("\x00", "\x00"), put("b"))}, rpctypes.ErrGRPCDuplicateKey},
		{"from key delete and nested put", &pb.TxnRequest{Success: ops(del("a", "\x00"), txn(ops(put("b")), nil))}, rpctypes.ErrGRPCDuplicateKey},
		{"nested from key delete and put", &pb.TxnRequest{Success: ops(txn(nil, ops(del("a", "\x00"))), put("zzz"))}, rpctypes.ErrGRPCDuplicateKey},
		{"put below from key delete", &pb.TxnRequest{Success: ops(del("b", "\x00"), put("a"))}, nil},
		{"put in other branch", &pb.TxnRequest{Success: ops(del("a", "\x00")), Failure: ops(put("b"))}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) { requireErr(t, tc.want, checkTxn(tc.req, testMaxOps)) })
	}
}

// TestCheckTxnDeepNesting: validation of a deeply nested txn terminates,
// and nesting is bounded by the op budget, which shrinks by the parent's op
// count at each level.
func TestCheckTxnDeepNesting(t *testing.T) {
	const depth = 1000
	r := &pb.TxnRequest{Success: ops(put("leaf"))}
	for i := 0; i < depth; i++ {
		r = &pb.TxnRequest{Success: ops(&pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: r}})}
	}
	requireErr(t, nil, checkTxn(r, depth+1))
	requireErr(t, rpctypes.ErrGRPCTooManyOps, checkTxn(r, depth))
	requireErr(t, rpctypes.ErrGRPCTooManyOps, checkTxn(r, testMaxOps))
}

func TestCheckTxnManyPuts(t *testing.T) {
	const n = 128
	var ps []*pb.RequestOp
	for i := 0; i < n; i++ {
		ps = append(ps, put(strings.Repeat("k", i+1)))
	}
	requireErr(t, nil, checkTxn(&pb.TxnRequest{Success: ps}, n))
	requireErr(t, rpctypes.ErrGRPCDuplicateKey, checkTxn(&pb.TxnRequest{Success: append(ps[:n-1:n-1], put("k"))}, n))
}
