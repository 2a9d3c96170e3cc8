package mvcc

import (
	"fmt"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// A flush can make tens of thousands of entries retirable at once; one
// apply batch retires at most prunePerBatch of them (retiring 64k in one
// go held a leader's applier for 70-90 ms), and the entries waiting their
// turn still answer lookups with the key's latest state.
func TestRecentIndexRetiresInSteps(t *testing.T) {
	var flushed uint64
	r := newRecentIndex(func() uint64 { return flushed })
	r.dirty = false // as after the first published batch
	const n = 3*prunePerBatch + 10
	for i := range n {
		k := fmt.Sprintf("k%05d", i)
		r.published(nil, uint64(i+1), map[string]*mvccpb.KeyValue{k: {Key: []byte(k), CreateRevision: int64(i + 1), ModRevision: int64(i + 1), Version: 1}})
	}
	flushed = n // everything is in sstables now
	for step, want := range []int{n - prunePerBatch, n - 2*prunePerBatch, n - 3*prunePerBatch, 0} {
		if !r.usable() {
			t.Fatalf("step %d: fast path off", step)
		}
		if len(r.m) != want {
			t.Fatalf("step %d: %d entries left, want %d", step, len(r.m), want)
		}
		for k, e := range r.m {
			var i int
			if _, err := fmt.Sscanf(k, "k%05d", &i); err != nil || e.mod != int64(i+1) || e.version != 1 {
				t.Fatalf("step %d: entry %s = %+v", step, k, e)
			}
		}
	}
}
