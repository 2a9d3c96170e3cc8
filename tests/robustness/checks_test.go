package robustness

import (
	"fmt"
	"sort"
	"strings"
)

// createsRevision reports whether a successful op made a new revision.
func createsRevision(o *Op) bool {
	switch o.Kind {
	case opPut:
		return true
	case opDelete:
		return o.Deleted > 0
	case opCAS:
		return o.Succeeded
	}
	return false
}

// linearizableRead reports whether a successful op read (or compared) at
// a revision that must be at least every revision completed before it.
func linearizableRead(o *Op) bool {
	switch o.Kind {
	case opGet, opRange, opFinalRead, opDelete, opCAS:
		return true
	}
	return false
}

// checkRevisionOrder checks real time against revisions across all keys:
// an operation that started after another one completed must see a
// revision at least as new (a write: strictly newer), and no two writes
// share a revision.
func checkRevisionOrder(ops []Op) []string {
	var done, byReturn []*Op
	for i := range ops {
		o := &ops[i]
		if o.Outcome == OK && o.Rev > 0 && (createsRevision(o) || linearizableRead(o)) {
			done = append(done, o)
			if !o.Settled { // a settled write may have completed any time after its call
				byReturn = append(byReturn, o)
			}
		}
	}
	sort.Slice(byReturn, func(i, j int) bool { return byReturn[i].Return < byReturn[j].Return })
	byCall := append([]*Op(nil), done...)
	sort.Slice(byCall, func(i, j int) bool { return byCall[i].Call < byCall[j].Call })
	var out []string
	var maxRev int64
	var maxOp *Op
	j := 0
	for _, b := range byCall {
		for j < len(byReturn) && byReturn[j].Return < b.Call {
			if byReturn[j].Rev > maxRev {
				maxRev, maxOp = byReturn[j].Rev, byReturn[j]
			}
			j++
		}
		if maxOp == nil {
			continue
		}
		if createsRevision(b) && b.Rev <= maxRev {
			out = append(out, fmt.Sprintf("stale write: %s got revision %d, but %s completed before it started with revision %d", desc(b), b.Rev, desc(maxOp), maxRev))
		} else if !createsRevision(b) && b.Rev < maxRev {
			out = append(out, fmt.Sprintf("stale read: %s read at revision %d, but %s completed before it started with revision %d", desc(b), b.Rev, desc(maxOp), maxRev))
		}
	}
	seen := map[int64]*Op{}
	for _, o := range done {
		if !createsRevision(o) {
			continue
		}
		if p := seen[o.Rev]; p != nil {
			out = append(out, fmt.Sprintf("two writes got revision %d: %s and %s", o.Rev, desc(p), desc(o)))
		}
		seen[o.Rev] = o
	}
	return out
}

func desc(o *Op) string {
	s := fmt.Sprintf("client %d %s(%s", o.Client, o.Kind, o.Key)
	if o.Value != "" {
		s += "=" + o.Value
	}
	return s + fmt.Sprintf(") [%.3fs..%.3fs]", float64(o.Call)/1e9, float64(o.Return)/1e9)
}

// checkLostWrites checks the final read against every acknowledged write:
// the last acknowledged write of each key is still there, unless a later
// delete may have removed it or a later write may have replaced it.
func checkLostWrites(ops []Op) []string {
	var final *Op
	for i := range ops {
		if ops[i].Kind == opFinalRead && ops[i].Outcome == OK {
			final = &ops[i]
		}
	}
	if final == nil {
		return []string{"no final read of the keys succeeded"}
	}
	got := map[string]KV{}
	for _, kv := range final.KVs {
		got[kv.Key] = kv
	}
	var out []string
	for k := range numKeys {
		key := kvKey(k)
		var last *Op
		for i := range ops {
			o := &ops[i]
			if o.Key == key && o.Outcome == OK && createsRevision(o) && (last == nil || o.Rev > last.Rev) {
				last = o
			}
		}
		if last == nil {
			continue
		}
		kv, found := got[key]
		switch {
		case found && kv.ModRev < last.Rev:
			out = append(out, fmt.Sprintf("lost write: %s was acknowledged at revision %d, but the final read finds %q from revision %d",
				desc(last), last.Rev, kv.Value, kv.ModRev))
		case !found && last.Kind != opDelete && !laterDelete(ops, key, last):
			out = append(out, fmt.Sprintf("lost write: %s was acknowledged at revision %d, but the final read finds no %s and no delete of it may have run later",
				desc(last), last.Rev, key))
		}
	}
	return out
}

// laterDelete reports whether a delete of key that did not fail could
// have taken effect after w.
func laterDelete(ops []Op, key string, w *Op) bool {
	for i := range ops {
		o := &ops[i]
		if o.Key == key && o.Kind == opDelete && o.Outcome != Failed && (o.Outcome == Unknown || o.Return > w.Call) {
			return true
		}
	}
	return false
}

// revisionLog is the state of every key at every revision, from the watch
// sessions' events.
type revisionLog struct {
	byRev map[int64][]Event
	upTo  int64 // complete (every revision present) from 2 to upTo; 0: none
}

// checkWatches checks every watch session against the others and against
// the client history, and returns the revision log they agree on:
//   - ordered: revisions never go back, no (revision, key) twice (unique);
//   - events of a revision agree between sessions;
//   - reliable: each session saw every event of the merged log between its
//     start and the last revision it confirmed (no gap);
//   - every acknowledged write inside a session's window is in the log,
//     and every put in the log was a write some client did not see fail;
//   - the watcher from revision 1 saw every revision without a hole.
func checkWatches(sessions []*watchSession, ops []Op) ([]string, revisionLog) {
	var out []string
	type rk struct {
		rev int64
		key string
	}
	merged := map[rk]Event{}
	for _, s := range sessions {
		var prev *Event
		seen := map[rk]bool{}
		for i := range s.Events {
			e := &s.Events[i]
			if e.Rev < s.Start {
				out = append(out, fmt.Sprintf("watcher %d (from %d): event at revision %d before its start", s.Watcher, s.Start, e.Rev))
			}
			if prev != nil && e.Rev < prev.Rev {
				out = append(out, fmt.Sprintf("watcher %d (from %d): unordered: revision %d after %d", s.Watcher, s.Start, e.Rev, prev.Rev))
			}
			if seen[rk{e.Rev, e.Key}] {
				out = append(out, fmt.Sprintf("watcher %d (from %d): duplicate event %s at revision %d", s.Watcher, s.Start, e.Key, e.Rev))
			}
			seen[rk{e.Rev, e.Key}] = true
			if m, ok := merged[rk{e.Rev, e.Key}]; ok && m != *e {
				out = append(out, fmt.Sprintf("watchers disagree on %s at revision %d: %+v and %+v", e.Key, e.Rev, m, *e))
			}
			merged[rk{e.Rev, e.Key}] = *e
			prev = e
		}
	}
	log := revisionLog{byRev: map[int64][]Event{}}
	for k, e := range merged {
		log.byRev[k.rev] = append(log.byRev[k.rev], e)
	}
	var revs []int64
	for r := range log.byRev {
		revs = append(revs, r)
	}
	sort.Slice(revs, func(i, j int) bool { return revs[i] < revs[j] })

	// Reliable: no gap in any session's window.
	for _, s := range sessions {
		end := s.end()
		have := map[rk]bool{}
		for _, e := range s.Events {
			have[rk{e.Rev, e.Key}] = true
		}
		missing := 0
		var first string
		for _, r := range revs {
			if r < s.Start || r > end {
				continue
			}
			for _, e := range log.byRev[r] {
				if !have[rk{r, e.Key}] {
					if missing == 0 {
						first = fmt.Sprintf("%s at revision %d", e.Key, r)
					}
					missing++
				}
			}
		}
		if missing > 0 {
			out = append(out, fmt.Sprintf("watcher %d (from %d, confirmed to %d): gap: %d events other watchers saw are missing, the first %s",
				s.Watcher, s.Start, end, missing, first))
		}
	}

	// The full watcher (sessions of watcher 0, each continuing where the
	// previous one ended): every revision from 2 to where they reach.
	var chain []*watchSession
	for _, s := range sessions {
		if s.Watcher == 0 {
			chain = append(chain, s)
		}
	}
	sort.Slice(chain, func(i, j int) bool { return chain[i].Start < chain[j].Start })
	reach := int64(0)
	for _, s := range chain {
		if s.Start > reach+1 {
			break
		}
		reach = max(reach, s.end())
	}
	if len(chain) > 0 && chain[0].Start == 1 {
		log.upTo = reach
		for r := int64(2); r <= reach; r++ {
			if len(log.byRev[r]) == 0 {
				out = append(out, fmt.Sprintf("the watcher from revision 1 (confirmed to %d) never saw revision %d", reach, r))
				log.upTo = r - 1
				break
			}
		}
	}

	// Against the client history.
	covered := func(rev int64) bool {
		for _, s := range sessions {
			if rev >= s.Start && rev <= s.end() {
				return true
			}
		}
		return false
	}
	writes := map[string]*Op{} // value -> put or cas that wrote it
	for i := range ops {
		o := &ops[i]
		if o.Kind == opPut || o.Kind == opCAS {
			writes[o.Value] = o
		}
		if o.Outcome != OK || !createsRevision(o) || !covered(o.Rev) {
			continue
		}
		found := false
		for _, e := range log.byRev[o.Rev] {
			if e.Key == o.Key && e.Delete == (o.Kind == opDelete) && (e.Delete || e.Value == o.Value) {
				found = true
			}
		}
		if !found {
			out = append(out, fmt.Sprintf("acknowledged %s at revision %d is not in the watch log, though a watcher covered that revision", desc(o), o.Rev))
		}
	}
	for _, r := range revs {
		for _, e := range log.byRev[r] {
			if !strings.HasPrefix(e.Key, keyPrefix) || e.Delete {
				continue
			}
			w := writes[e.Value]
			switch {
			case w == nil:
				out = append(out, fmt.Sprintf("watch reports %s=%q at revision %d, a value no client wrote", e.Key, e.Value, r))
			case w.Outcome == Failed:
				out = append(out, fmt.Sprintf("watch reports %s=%q at revision %d, written by %s, which failed (%s)", e.Key, e.Value, r, desc(w), w.Err))
			case w.Key != e.Key:
				out = append(out, fmt.Sprintf("watch reports %q at revision %d under %s, but %s wrote it", e.Value, r, e.Key, desc(w)))
			case w.Outcome == OK && w.Rev != r:
				out = append(out, fmt.Sprintf("watch reports %s=%q at revision %d, but %s was told revision %d", e.Key, e.Value, r, desc(w), w.Rev))
			}
		}
	}
	return out, log
}

// checkReadsAgainstLog replays the complete revision log and checks every
// successful read (serializable ones included: they may be stale, but must
// show exactly the state at the revision they report).
func checkReadsAgainstLog(ops []Op, log revisionLog) []string {
	if log.upTo < 2 {
		return nil
	}
	// state[key] = sorted versions (rev, exists, value)
	type version struct {
		rev    int64
		exists bool
		value  string
	}
	hist := map[string][]version{}
	for r := int64(2); r <= log.upTo; r++ {
		for _, e := range log.byRev[r] {
			hist[e.Key] = append(hist[e.Key], version{r, !e.Delete, e.Value})
		}
	}
	at := func(key string, rev int64) (version, bool) {
		vs := hist[key]
		i := sort.Search(len(vs), func(i int) bool { return vs[i].rev > rev })
		if i == 0 {
			return version{}, false
		}
		return vs[i-1], vs[i-1].exists
	}
	var out []string
	check := func(o *Op, key string, found bool, value string, modRev int64) {
		v, exists := at(key, o.Rev)
		switch {
		case exists != found:
			out = append(out, fmt.Sprintf("%s at revision %d: %q found=%v, but the revision log says found=%v", desc(o), o.Rev, key, found, exists))
		case found && (v.value != value || v.rev != modRev):
			out = append(out, fmt.Sprintf("%s at revision %d: %q=%q (mod %d), but the revision log says %q (mod %d)", desc(o), o.Rev, key, value, modRev, v.value, v.rev))
		}
	}
	for i := range ops {
		o := &ops[i]
		if o.Outcome != OK || o.Rev > log.upTo || o.Rev < 1 {
			continue
		}
		switch o.Kind {
		case opGet, opSGet:
			check(o, o.Key, o.Found, o.ReadValue, o.ModRev)
		case opCAS:
			if !o.Succeeded {
				check(o, o.Key, o.Found, o.ReadValue, o.ModRev)
			}
		case opRange, opSRange, opFinalRead:
			got := map[string]KV{}
			for _, kv := range o.KVs {
				got[kv.Key] = kv
			}
			for k := range numKeys {
				kv, found := got[kvKey(k)]
				check(o, kvKey(k), found, kv.Value, kv.ModRev)
			}
		}
	}
	return out
}

// resolveUnknown settles writes of unknown outcome with the complete
// revision log (etcd's robustness suite does the same with the WAL): a put
// or compare-and-set whose unique value is in the log was applied, at that
// revision; one whose value is not was never applied (the log is complete
// up to the final read, and nothing in the history can observe a write
// applied after it). Deletes stay unknown: their events carry no value.
// It returns how many ops it settled.
func resolveUnknown(ops []Op, log revisionLog, finalRev int64) int {
	if log.upTo < finalRev || finalRev < 2 {
		return 0
	}
	type at struct {
		rev int64
		key string
	}
	written := map[string]at{}
	for r := int64(2); r <= log.upTo; r++ {
		for _, e := range log.byRev[r] {
			if !e.Delete {
				written[e.Value] = at{r, e.Key}
			}
		}
	}
	n := 0
	for i := range ops {
		o := &ops[i]
		if o.Outcome != Unknown || (o.Kind != opPut && o.Kind != opCAS) {
			continue
		}
		o.Settled = true
		if w, ok := written[o.Value]; ok && w.key == o.Key {
			o.Outcome, o.Rev = OK, w.rev
			o.Succeeded = o.Kind == opCAS
			o.Err += fmt.Sprintf(" (settled: applied at revision %d per the revision log)", w.rev)
		} else {
			o.Outcome = Failed
			o.Err += " (settled: not in the complete revision log)"
		}
		n++
	}
	return n
}
