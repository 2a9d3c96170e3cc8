package failpoint

import (
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	ps, err := parse("raft-before-sync=exit, apply-after-commit=3*panic,compact-after-batch=sleep(20ms)")
	if err != nil {
		t.Fatal(err)
	}
	if p := ps[RaftBeforeSync]; p == nil || p.kind != kindExit || p.after != 1 {
		t.Fatalf("raft-before-sync: %+v", p)
	}
	if p := ps[ApplyAfterCommit]; p == nil || p.kind != kindPanic || p.after != 3 {
		t.Fatalf("apply-after-commit: %+v", p)
	}
	if p := ps[CompactAfterBatch]; p == nil || p.kind != kindSleep || p.after != 0 || p.sleep != 20*time.Millisecond {
		t.Fatalf("compact-after-batch: %+v", p)
	}
	for _, bad := range []string{"x", "x=boom", "x=0*exit", "x=a*exit", "x=sleep(soon)"} {
		if _, err := parse(bad); err == nil {
			t.Errorf("parse(%q) succeeded", bad)
		}
	}
}

func TestPanicAtNthHit(t *testing.T) {
	ps, err := parse("p=2*panic")
	if err != nil {
		t.Fatal(err)
	}
	p := ps["p"]
	p.fire("p") // first hit: nothing
	defer func() {
		if recover() == nil {
			t.Fatal("second hit did not panic")
		}
	}()
	p.fire("p")
}

// With CAIRN_FAILPOINTS unset (as under go test), Hit does nothing.
func TestInertByDefault(t *testing.T) {
	if enabled {
		t.Skip("CAIRN_FAILPOINTS is set in this environment")
	}
	for _, name := range All {
		Hit(name)
	}
}
