// Package apply is the deterministic state machine of a member: it applies
// committed raft entries, in order, to the MVCC store and the member list,
// and executes KV requests with etcd's exact semantics (exec.go).
//
// Invariants:
//   - One goroutine (Applier.Run) applies; nothing else writes MVCC state.
//   - The effects of a batch of entries and the new applied index are
//     committed in ONE Pebble batch, so a crash can neither lose nor
//     double-apply an entry (entries at or below the stored applied index are
//     skipped; the raft log replays the rest).
//   - Application depends only on the entry and the state: no clock, no
//     randomness, no map iteration order. Replicas stay identical.
//   - Clients are answered only after the batch is committed and published.
package apply
