package apply

// logTrim decides when the raft log is compacted and how far. It counts
// requests, not entries, as etcd's --snapshot-count and
// --snapshot-catchup-entries do (an etcd entry is one request): raftnode
// merges concurrent proposals into one entry, so at 100 clients 10,000
// entries hold 100,000+ requests, and a log counted in entries outlives
// every memtable and is flushed and compacted with the MVCC data on every
// member. Counted in requests, it is truncated while still in the
// memtable, and the flush drops it.
//
// It is owned by the applier goroutine.
type logTrim struct {
	every, keep uint64
	total       uint64 // requests applied since the applier started
	since       uint64 // total at the last compaction
	// marks are (last index of an applied batch, total after it),
	// ascending. The first is the last compaction point (or where the
	// count started); they span at most every+keep requests.
	marks []logMark
}

type logMark struct{ index, total uint64 }

func newLogTrim(every, keep, index uint64) *logTrim {
	t := &logTrim{every: every, keep: keep}
	t.reset(index)
	return t
}

// reset restarts the count at index: after a restart or a snapshot
// installation, nothing before index is in the log to keep.
func (t *logTrim) reset(index uint64) {
	t.since = t.total
	t.marks = append(t.marks[:0], logMark{index, t.total})
}

// applied records a batch of requests ending at index and reports the
// index up to which the log may be compacted now, if any: the newest
// batch end that leaves at least keep requests after it.
func (t *logTrim) applied(index, requests uint64) (uint64, bool) {
	t.total += requests
	t.marks = append(t.marks, logMark{index, t.total})
	if t.every == 0 || t.total-t.since < t.every || t.total < t.keep {
		return 0, false
	}
	target := t.total - t.keep
	i := -1
	for j, m := range t.marks {
		if m.total > target {
			break
		}
		i = j
	}
	if i <= 0 {
		// Only the previous compaction point leaves keep requests after
		// it: nothing new to drop yet.
		return 0, false
	}
	to := t.marks[i].index
	t.marks = append(t.marks[:0], t.marks[i:]...)
	t.since = t.total
	return to, true
}
