package api

// Fuzz targets for request validation (cf. etcd's FuzzTxnRangeRequest).
// Run with
//
//	go test ./internal/api -run XXX -fuzz FuzzValidateTxn -fuzztime 30s
//
// Crashers go to testdata/fuzz/<Name>/ and then run in every `go test`.

import (
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"
)

// validationErrors are the only errors validation may return; each must be
// the rpctypes value itself so that it reaches the client unchanged.
var validationErrors = []error{
	rpctypes.ErrGRPCEmptyKey,
	rpctypes.ErrGRPCTooManyOps,
	rpctypes.ErrGRPCDuplicateKey,
	rpctypes.ErrGRPCKeyNotFound,
	rpctypes.ErrGRPCInvalidSortOption,
	rpctypes.ErrGRPCValueProvided,
	rpctypes.ErrGRPCLeaseProvided,
}

func isValidationError(err error) bool {
	for _, e := range validationErrors {
		if err == e {
			return true
		}
	}
	return false
}

func fuzzSeedTxns() []*pb.TxnRequest {
	return []*pb.TxnRequest{
		{},
		{Compare: cmps(2), Success: ops(put("a"), rng("a"), del("b", "c")), Failure: ops(put("a"))},
		{Success: ops(put("a"), put("a"))},
		{Success: ops(del("a", "\x00"), put("b"))},
		{Success: ops(txn(ops(put("a")), ops(put("a"))), del("a", "c"))},
		{Success: ops(txn(ops(txn(nil, ops(put("x")))), nil), put("x"))},
		{Success: ops(&pb.RequestOp{})},
		{Success: puts(testMaxOps + 1)},
		{Compare: []*pb.Compare{{Key: []byte("a"), RangeEnd: []byte{0}, Target: pb.Compare_VALUE, TargetUnion: &pb.Compare_Value{Value: []byte("v")}}}},
		{Success: ops(&pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("a"), SortOrder: 9}}})},
		{Success: ops(&pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("a"), Lease: 1, IgnoreLease: true}}})},
	}
}

// FuzzValidateTxn decodes arbitrary bytes as a TxnRequest, as the gRPC
// server would, and checks that validation never panics, is deterministic,
// and returns nil or one of the rpctypes validation errors.
func FuzzValidateTxn(f *testing.F) {
	for _, r := range fuzzSeedTxns() {
		b, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &pb.TxnRequest{}
		if err := proto.Unmarshal(data, r); err != nil {
			return
		}
		err := checkTxn(r, testMaxOps)
		if err != nil && !isValidationError(err) {
			t.Fatalf("checkTxn(%v) = %v, not an rpctypes validation error", r, err)
		}
		if again := checkTxn(r, testMaxOps); again != err {
			t.Fatalf("checkTxn(%v) = %v, then %v", r, err, again)
		}
		// Within budget, a larger budget can only remove TooManyOps.
		if err != rpctypes.ErrGRPCTooManyOps {
			if big := checkTxn(r, 1<<20); big != err {
				t.Fatalf("checkTxn(%v): %v with max %d, %v with a larger max", r, err, testMaxOps, big)
			}
		}
	})
}

// FuzzValidateRequests runs the single-request checks on arbitrary bytes.
func FuzzValidateRequests(f *testing.F) {
	for _, m := range []proto.Message{
		&pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("b"), SortOrder: 2, SortTarget: 4},
		&pb.PutRequest{Key: []byte("a"), Value: []byte("v"), IgnoreValue: true},
		&pb.DeleteRangeRequest{Key: []byte("a"), RangeEnd: []byte{0}},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var rr pb.RangeRequest
		if proto.Unmarshal(data, &rr) == nil {
			if err := checkRange(&rr); err != nil && !isValidationError(err) {
				t.Fatalf("checkRange: %v", err)
			}
		}
		var pr pb.PutRequest
		if proto.Unmarshal(data, &pr) == nil {
			if err := checkPut(&pr); err != nil && !isValidationError(err) {
				t.Fatalf("checkPut: %v", err)
			}
		}
		var dr pb.DeleteRangeRequest
		if proto.Unmarshal(data, &dr) == nil {
			if err := checkDelete(&dr); err != nil && !isValidationError(err) {
				t.Fatalf("checkDelete: %v", err)
			}
		}
	})
}
