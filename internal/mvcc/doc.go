// Package mvcc owns Cairn's multi-version key-value state: every version of
// every key, the global revision counter, the revision log and compaction.
//
// Versions live in Pebble under schema.MVCC, keyed by the order-preserving
// encoding of the user key followed by the bitwise NOT of its revision, so
// the newest version of a key sorts first and a head read is one forward
// scan. Nothing per key is kept in memory beyond the keys written since the
// last memtable flush (the applier's recent index, bounded; see recent.go):
// memory does not grow with the number of keys or revisions (etcd keeps a
// B-tree of every key's revisions in RAM; this package must not).
//
// Concurrency: writes come from exactly one goroutine, the applier, through
// a WriteTxn on a Pebble indexed batch that the applier commits. Reads may
// come from any goroutine; each read opens a Pebble iterator (an implicit
// snapshot) and reads at a revision no newer than the last published one,
// so it never observes a half-applied batch. The background compactor only
// deletes versions that no read at or above the compacted revision can see.
//
// This package never fsyncs: durability comes from the raft log, which the
// applier replays after a crash.
package mvcc
