package apply

import "testing"

func TestLogTrim(t *testing.T) {
	type step struct {
		index, requests uint64
		to              uint64 // 0: no compaction
	}
	tests := []struct {
		name        string
		every, keep uint64
		start       uint64
		steps       []step
	}{
		{
			name: "one request per entry is etcd's count", every: 4, keep: 2,
			steps: []step{{1, 1, 0}, {2, 1, 0}, {3, 1, 0}, {4, 1, 2}, {5, 1, 0}, {6, 1, 0}, {7, 1, 0}, {8, 1, 6}},
		},
		{
			name: "merged entries count their requests", every: 100, keep: 50,
			// Entry 3 brings the count to 120 and the 50 newest requests
			// stay: entry 2 ends at 80 and would leave only 40 after it,
			// entry 1 ends at 30 and leaves 90, so the log is compacted
			// up to entry 1.
			steps: []step{{1, 30, 0}, {2, 50, 0}, {3, 40, 1}},
		},
		{
			name: "batch ends are the only compaction points", every: 10, keep: 5,
			steps: []step{{10, 10, 0}, {20, 10, 10}},
		},
		{
			name: "counting starts at the applied index after a restart", every: 3, keep: 1, start: 100,
			steps: []step{{101, 1, 0}, {102, 1, 0}, {103, 1, 102}},
		},
		{
			name: "keep larger than every waits for keep", every: 2, keep: 5,
			steps: []step{{1, 1, 0}, {2, 1, 0}, {3, 1, 0}, {4, 1, 0}, {5, 1, 0}, {6, 1, 1}, {7, 1, 0}, {8, 1, 3}},
		},
		{
			name: "zero keep compacts to the last applied", every: 2, keep: 0,
			steps: []step{{1, 1, 0}, {2, 1, 2}, {3, 1, 0}, {4, 1, 4}},
		},
		{
			name: "zero every never compacts", every: 0, keep: 0,
			steps: []step{{1, 100, 0}, {2, 100, 0}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newLogTrim(tt.every, tt.keep, tt.start)
			for i, s := range tt.steps {
				to, ok := tr.applied(s.index, s.requests)
				if ok != (s.to != 0) || to != s.to {
					t.Fatalf("step %d (index %d, %d requests): got (%d, %v), want compaction to %d",
						i, s.index, s.requests, to, ok, s.to)
				}
			}
		})
	}
}

// After a snapshot installation, nothing before it can be kept: the count
// restarts there, and the marks before it are gone.
func TestLogTrimReset(t *testing.T) {
	tr := newLogTrim(4, 2, 0)
	for i := uint64(1); i <= 3; i++ {
		if _, ok := tr.applied(i, 1); ok {
			t.Fatalf("compacted after %d requests, every is 4", i)
		}
	}
	tr.reset(500)
	for i := uint64(501); i <= 503; i++ {
		if _, ok := tr.applied(i, 1); ok {
			t.Fatalf("compacted %d requests after the reset, every is 4", i-500)
		}
	}
	if to, ok := tr.applied(504, 1); !ok || to != 502 {
		t.Fatalf("got (%d, %v), want compaction to 502", to, ok)
	}
}

// The marks a long run leaves are bounded by every+keep requests' batches,
// not by the length of the run.
func TestLogTrimMarksBounded(t *testing.T) {
	tr := newLogTrim(100, 50, 0)
	for i := uint64(1); i <= 100000; i++ {
		tr.applied(i, 1)
		if len(tr.marks) > 152 {
			t.Fatalf("after %d batches: %d marks, want at most every+keep+2", i, len(tr.marks))
		}
	}
}
