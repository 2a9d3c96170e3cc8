// Package lease owns Cairn's leases: the replicated lease records and the
// index of keys attached to each lease (both in Pebble, see package schema),
// an in-memory table of every lease's ID, granted TTL and last checkpointed
// remaining TTL, and — only while this member is the primary (the raft
// leader that has applied its own term's first entry) — the expiry heap and
// the checkpoint schedule.
//
// Two kinds of callers, two contracts:
//
//   - The applier (one goroutine) changes lease state through the Stage*
//     methods, inside the same Pebble batch as the rest of a raft entry's
//     effects, so a crash never splits a revoke from its key deletions.
//     What it stages depends only on the entry and the replicated state:
//     the clock is read only to maintain the primary's expiry heap, which
//     is never persisted.
//   - The member's lease loop and the Lease service read the table and, on
//     the primary, renew leases (Renew), find expired ones (Expired), due
//     checkpoints (DueCheckpoints), and are told of leadership changes
//     (Promote, Demote).
//
// This package must never propose to raft, revoke on its own, read the
// wall clock directly (it takes a clock.Clock), or hold the keys of every
// lease in memory: attached keys are read from Pebble only for the one
// lease being revoked or inspected. Memory is O(number of leases), about
// 150 bytes each (the struct is 136 B, plus its map entry).
//
// Concurrency: Lessor.mu guards the table and the heaps; it is never held
// while calling out of the package. Lock order: apply → lease.mu.
package lease
