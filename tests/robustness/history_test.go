package robustness

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"sort"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Outcome of a recorded operation.
type Outcome string

const (
	OK      Outcome = "ok"      // the server answered success
	Failed  Outcome = "failed"  // the error guarantees it was not applied
	Unknown Outcome = "unknown" // it may or may not have been applied
)

// Op kinds.
const (
	opPut       = "put"
	opGet       = "get"  // linearizable get of one key
	opSGet      = "sget" // serializable get of one key
	opRange     = "range"
	opSRange    = "srange"
	opDelete    = "delete"
	opCAS       = "cas"
	opCompact   = "compact"
	opLease     = "lease" // grant, put with the lease, revoke, then a get that must miss
	opFinalRead = "final" // the checker's linearizable read of every key at the end
)

// KV is one key-value pair read.
type KV struct {
	Key    string `json:"k"`
	Value  string `json:"v"`
	ModRev int64  `json:"mod"`
}

// Op is one operation with its invocation and completion time (ns since
// the run started) and its outcome.
type Op struct {
	Client  int     `json:"client"`
	Kind    string  `json:"kind"`
	Key     string  `json:"key,omitempty"`
	Value   string  `json:"value,omitempty"`  // put, cas: the value written
	Expect  string  `json:"expect,omitempty"` // cas: the value compared
	Call    int64   `json:"call"`
	Return  int64   `json:"return"`
	Outcome Outcome `json:"outcome"`
	Err     string  `json:"err,omitempty"`
	// Settled: the outcome was unknown and the revision log settled it.
	// Return is then only when the client gave up; the write may have
	// been applied later, so it counts as completing at infinity.
	Settled bool   `json:"settled,omitempty"`
	Member  string `json:"member,omitempty"` // endpoint, for single-member clients

	Rev       int64  `json:"rev,omitempty"`     // header revision (a write's own revision)
	Found     bool   `json:"found,omitempty"`   // get, cas else-branch
	ReadValue string `json:"read,omitempty"`    // get, cas else-branch
	ModRev    int64  `json:"mod,omitempty"`     // get, cas else-branch
	Deleted   int64  `json:"deleted,omitempty"` // delete
	Succeeded bool   `json:"succeeded,omitempty"`
	KVs       []KV   `json:"kvs,omitempty"` // range
}

// history records operations from many goroutines.
type history struct {
	start time.Time
	mu    sync.Mutex
	ops   []Op
}

func newHistory() *history { return &history{start: time.Now()} }

func (h *history) now() int64 { return int64(time.Since(h.start)) }

func (h *history) add(o Op) {
	h.mu.Lock()
	h.ops = append(h.ops, o)
	h.mu.Unlock()
}

func (h *history) snapshot() []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	ops := append([]Op(nil), h.ops...)
	sort.SliceStable(ops, func(i, j int) bool { return ops[i].Call < ops[j].Call })
	return ops
}

// saveOps writes ops as JSON lines.
func saveOps(ops []Op, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	for _, o := range ops {
		if err := enc.Encode(o); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// classify maps a client error to an outcome: Failed only for errors that
// guarantee the request was not applied (it was refused by validation, a
// compacted or future revision, a missing lease, or a service that is not
// implemented); Unknown for everything else (timeouts, unavailable
// members, leader changes: the request may have been committed).
func classify(err error) Outcome {
	if err == nil {
		return OK
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return Unknown
	}
	switch errCode(err) {
	case codes.InvalidArgument, codes.OutOfRange, codes.NotFound, codes.Unimplemented,
		codes.PermissionDenied, codes.Unauthenticated, codes.AlreadyExists:
		return Failed
	}
	return Unknown
}

// errCode is the gRPC code of a clientv3 error (clientv3 turns etcd's
// errors into rpctypes.EtcdError, others stay gRPC statuses).
func errCode(err error) codes.Code {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code()
	}
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	return codes.Unknown
}

// isUnimplemented reports whether err says the service is not built.
func isUnimplemented(err error) bool { return errCode(err) == codes.Unimplemented }
