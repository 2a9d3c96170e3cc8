package robustness

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The checkers must be able to fail: each test feeds a hand-made history
// with one violation and requires it to be reported (and the good history
// around it to pass).

const sec = int64(time.Second)

func put(client int, key, value string, call, ret, rev int64) Op {
	return Op{Client: client, Kind: opPut, Key: key, Value: value, Call: call * sec, Return: ret * sec, Outcome: OK, Rev: rev}
}

func get(client int, key string, call, ret, rev int64, value string, modRev int64) Op {
	o := Op{Client: client, Kind: opGet, Key: key, Call: call * sec, Return: ret * sec, Outcome: OK, Rev: rev}
	if value != "" {
		o.Found, o.ReadValue, o.ModRev = true, value, modRev
	}
	return o
}

func finalRead(call, ret, rev int64, kvs ...KV) Op {
	return Op{Client: 999, Kind: opFinalRead, Key: keyPrefix, Call: call * sec, Return: ret * sec, Outcome: OK, Rev: rev, KVs: kvs}
}

func TestLinearizabilityChecker(t *testing.T) {
	k := kvKey(0)
	good := []Op{
		put(0, k, "a", 1, 2, 2),
		put(1, k, "b", 3, 4, 3),
		get(2, k, 5, 6, 3, "b", 3),
		{Client: 3, Kind: opPut, Key: k, Value: "c", Call: 7 * sec, Return: 8 * sec, Outcome: Unknown},
		get(2, k, 9, 10, 3, "b", 3),  // the unknown put may not have been applied...
		get(2, k, 11, 12, 4, "c", 4), // ...or applied later
		finalRead(13, 14, 4, KV{Key: k, Value: "c", ModRev: 4}),
	}
	if res, _ := checkLinearizable(good, 10*time.Second); res != porcupine.Ok {
		t.Fatalf("good history: %s", res)
	}

	// A stale read: b was acknowledged before the read started.
	stale := append([]Op(nil), good[:3]...)
	stale = append(stale, get(2, k, 7, 8, 2, "a", 2))
	res, info := checkLinearizable(stale, 10*time.Second)
	if res != porcupine.Illegal {
		t.Fatalf("stale read: %s, want Illegal", res)
	}
	if err := porcupine.VisualizePath(kvModel, info, filepath.Join(t.TempDir(), "v.html")); err != nil {
		t.Fatalf("visualize: %v", err)
	}
	if v := checkRevisionOrder(stale); len(v) == 0 || !strings.Contains(v[0], "stale read") {
		t.Fatalf("revision order: %v", v)
	}

	// A read of a value nobody wrote, and a failed write that was applied.
	forged := append([]Op(nil), good[:2]...)
	forged = append(forged,
		Op{Client: 4, Kind: opPut, Key: k, Value: "f", Call: 5 * sec, Return: 6 * sec, Outcome: Failed},
		get(2, k, 7, 8, 4, "f", 4))
	if res, _ := checkLinearizable(forged, 10*time.Second); res != porcupine.Illegal {
		t.Fatalf("failed write observed: %s, want Illegal", res)
	}

	// A compare-and-set that succeeded against the wrong value.
	cas := append([]Op(nil), good[:2]...)
	cas = append(cas, Op{Client: 5, Kind: opCAS, Key: k, Expect: "a", Value: "x", Call: 5 * sec, Return: 6 * sec, Outcome: OK, Rev: 4, Succeeded: true})
	if res, _ := checkLinearizable(cas, 10*time.Second); res != porcupine.Illegal {
		t.Fatalf("bad CAS: %s, want Illegal", res)
	}
}

func TestLostWriteChecker(t *testing.T) {
	k := kvKey(1)
	ops := []Op{
		put(0, k, "a", 1, 2, 2),
		put(1, k, "b", 3, 4, 3),
		finalRead(5, 6, 3, KV{Key: k, Value: "a", ModRev: 2}), // b is gone
	}
	v := checkLostWrites(ops)
	if len(v) != 1 || !strings.Contains(v[0], "lost write") {
		t.Fatalf("lost write not reported: %v", v)
	}
	ops[2] = finalRead(5, 6, 3) // the key vanished, no delete ran
	if v := checkLostWrites(ops); len(v) != 1 {
		t.Fatalf("vanished key not reported: %v", v)
	}
	ops[2] = finalRead(5, 6, 3, KV{Key: k, Value: "b", ModRev: 3})
	if v := checkLostWrites(ops); len(v) != 0 {
		t.Fatalf("good history: %v", v)
	}
	// The linearizability checker sees it too (the final read is in it).
	ops[2] = finalRead(5, 6, 3, KV{Key: k, Value: "a", ModRev: 2})
	if res, _ := checkLinearizable(ops, 10*time.Second); res != porcupine.Illegal {
		t.Fatalf("lost write: porcupine says %s", res)
	}
}

func TestWatchChecker(t *testing.T) {
	k0, k1 := kvKey(0), kvKey(1)
	ops := []Op{
		put(0, k0, "a", 1, 2, 2),
		put(0, k1, "b", 3, 4, 3),
		put(0, k0, "c", 5, 6, 4),
		{Client: 0, Kind: opDelete, Key: k1, Call: 7 * sec, Return: 8 * sec, Outcome: OK, Rev: 5, Deleted: 1},
	}
	log := []Event{
		{Rev: 2, Key: k0, Value: "a", ModRev: 2},
		{Rev: 3, Key: k1, Value: "b", ModRev: 3},
		{Rev: 4, Key: k0, Value: "c", ModRev: 4},
		{Rev: 5, Key: k1, Delete: true, ModRev: 5},
	}
	full := func(evs ...Event) *watchSession { return &watchSession{Watcher: 0, Start: 1, Events: evs, Progress: 5} }
	from := func(start int64, evs ...Event) *watchSession {
		return &watchSession{Watcher: 1, Start: start, Events: evs}
	}
	if v, l := checkWatches([]*watchSession{full(log...), from(3, log[1:]...)}, ops); len(v) != 0 || l.upTo != 5 {
		t.Fatalf("good sessions: %v (log to %d)", v, l.upTo)
	}
	for name, tc := range map[string]struct {
		sessions []*watchSession
		want     string
	}{
		"gap":                  {[]*watchSession{full(log...), from(2, log[0], log[2])}, "gap"},
		"duplicate":            {[]*watchSession{full(log...), from(3, log[1], log[1], log[2])}, "duplicate"},
		"unordered":            {[]*watchSession{full(log...), from(2, log[0], log[2], log[1])}, "unordered"},
		"hole in the full log": {[]*watchSession{full(log[0], log[2], log[3])}, "never saw revision 3"},
		"acknowledged write missing": {[]*watchSession{full(log[0], log[1], log[3]), from(2, log[0], log[1], log[3])},
			"not in the watch log"},
		"forged value": {[]*watchSession{full(log[0], log[1], Event{Rev: 4, Key: k0, Value: "zzz", ModRev: 4}, log[3])}, "no client wrote"},
		"disagreement": {[]*watchSession{full(log...), from(4, Event{Rev: 4, Key: k0, Value: "b", ModRev: 4})}, "disagree"},
	} {
		v, _ := checkWatches(tc.sessions, ops)
		if !strings.Contains(strings.Join(v, "\n"), tc.want) {
			t.Errorf("%s: want a violation containing %q, got %v", name, tc.want, v)
		}
	}
}

func TestReadsAgainstRevisionLog(t *testing.T) {
	k0 := kvKey(0)
	ops := []Op{
		put(0, k0, "a", 1, 2, 2),
		put(0, k0, "c", 3, 4, 3),
		{Client: 1, Kind: opSGet, Key: k0, Call: 5 * sec, Return: 6 * sec, Outcome: OK, Rev: 2, Found: true, ReadValue: "a", ModRev: 2},
	}
	s := &watchSession{Watcher: 0, Start: 1, Progress: 3, Events: []Event{
		{Rev: 2, Key: k0, Value: "a", ModRev: 2}, {Rev: 3, Key: k0, Value: "c", ModRev: 3},
	}}
	v, log := checkWatches([]*watchSession{s}, ops)
	if len(v) != 0 {
		t.Fatal(v)
	}
	// A stale serializable read is fine if it is exactly the state at its revision.
	if v := checkReadsAgainstLog(ops, log); len(v) != 0 {
		t.Fatalf("good serializable read: %v", v)
	}
	// One that claims revision 3 but shows revision 2's value is not.
	ops[2].Rev = 3
	if v := checkReadsAgainstLog(ops, log); len(v) != 1 {
		t.Fatalf("inconsistent serializable read not reported: %v", v)
	}
}

func TestRevisionOrderChecker(t *testing.T) {
	k := kvKey(0)
	ops := []Op{
		put(0, k, "a", 1, 2, 5),
		put(1, k, "b", 3, 4, 5), // same revision as a, and not newer
	}
	v := checkRevisionOrder(ops)
	if len(v) != 2 {
		t.Fatalf("want a stale write and a shared revision, got %v", v)
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want Outcome
	}{
		{nil, OK},
		{context.DeadlineExceeded, Unknown},
		{fmt.Errorf("put: %w", context.Canceled), Unknown},
		{rpctypes.ErrLeaderChanged, Unknown},
		{rpctypes.ErrTimeout, Unknown},
		{rpctypes.ErrNoLeader, Unknown},
		{status.Error(codes.Unavailable, "connection refused"), Unknown},
		{rpctypes.ErrCompacted, Failed},
		{rpctypes.ErrFutureRev, Failed},
		{rpctypes.ErrLeaseNotFound, Failed},
		{rpctypes.ErrTooManyOps, Failed},
		{status.Error(codes.Unimplemented, "unknown service etcdserverpb.Watch"), Failed},
	} {
		if got := classify(tc.err); got != tc.want {
			t.Errorf("classify(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}

func TestResolveUnknown(t *testing.T) {
	k := kvKey(0)
	ops := []Op{
		put(0, k, "a", 1, 2, 2),
		{Client: 1, Kind: opPut, Key: k, Value: "b", Call: 3 * sec, Return: 4 * sec, Outcome: Unknown},
		{Client: 2, Kind: opPut, Key: k, Value: "c", Call: 3 * sec, Return: 4 * sec, Outcome: Unknown},
		finalRead(5, 6, 3, KV{Key: k, Value: "b", ModRev: 3}),
	}
	s := &watchSession{Watcher: 0, Start: 1, Progress: 3, Events: []Event{
		{Rev: 2, Key: k, Value: "a", ModRev: 2}, {Rev: 3, Key: k, Value: "b", ModRev: 3},
	}}
	v, log := checkWatches([]*watchSession{s}, ops)
	if len(v) != 0 {
		t.Fatal(v)
	}
	if n := resolveUnknown(ops, log, 3); n != 2 {
		t.Fatalf("settled %d, want 2", n)
	}
	if ops[1].Outcome != OK || ops[1].Rev != 3 || ops[2].Outcome != Failed {
		t.Fatalf("settled wrongly: %+v %+v", ops[1], ops[2])
	}
	if res, _ := checkLinearizable(ops, 10*time.Second); res != porcupine.Ok {
		t.Fatalf("settled history: %s", res)
	}
	// Not complete up to the final revision: nothing is settled.
	ops[1].Outcome, ops[2].Outcome = Unknown, Unknown
	if n := resolveUnknown(ops, log, 4); n != 0 {
		t.Fatalf("settled %d with an incomplete log", n)
	}
}

// A write whose client gave up, applied after the timeout, is settled as
// applied; other clients that read before it was applied are not stale.
func TestSettledWriteAppliedAfterTimeout(t *testing.T) {
	k0, k1 := kvKey(0), kvKey(1)
	ops := []Op{
		put(0, k0, "a", 1, 2, 2),
		{Client: 1, Kind: opPut, Key: k1, Value: "late", Call: 3 * sec, Return: 5 * sec, Outcome: Unknown, Err: "context deadline exceeded"},
		get(2, k0, 6, 7, 2, "a", 2), // revision 2: "late" (revision 3) not applied yet
		get(2, k1, 8, 9, 3, "late", 3),
		finalRead(10, 11, 3, KV{Key: k0, Value: "a", ModRev: 2}, KV{Key: k1, Value: "late", ModRev: 3}),
	}
	s := &watchSession{Watcher: 0, Start: 1, Progress: 3, Events: []Event{
		{Rev: 2, Key: k0, Value: "a", ModRev: 2}, {Rev: 3, Key: k1, Value: "late", ModRev: 3},
	}}
	v, log := checkWatches([]*watchSession{s}, ops)
	if len(v) != 0 {
		t.Fatal(v)
	}
	if n := resolveUnknown(ops, log, 3); n != 1 || !ops[1].Settled || ops[1].Outcome != OK {
		t.Fatalf("settled %d: %+v", n, ops[1])
	}
	if v := checkRevisionOrder(ops); len(v) != 0 {
		t.Fatalf("revision order: %v", v)
	}
	if res, _ := checkLinearizable(ops, 10*time.Second); res != porcupine.Ok {
		t.Fatalf("porcupine: %s", res)
	}
}
