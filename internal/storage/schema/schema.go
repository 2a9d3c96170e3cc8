// Package schema is the only place where Cairn's Pebble key layout is
// defined. Every key a member writes starts with one of the prefix bytes
// below; the values of these bytes and of the meta key names are part of the
// on-disk format and must never change once released (add new ones instead).
//
// Layout (one Pebble DB per member):
//
//	0x01 RaftLog   | index (8B BE)             -> raftpb.Entry (proto)
//	0x02 RaftState | name                      -> HardState / ConfState / snapshot metadata (proto)
//	0x03 MVCC      | enc(key) | ^main | ^sub   -> value record (see mvcc)
//	0x04 RevLog    | main | sub                -> user key
//	0x05 Meta      | name                      -> applied index, revisions, membership, ...
//	0x06 Lease     | id (8B BE)                -> lease record (see package lease)
//	0x07 LeaseKey  | id (8B BE) | user key     -> empty: the key is attached to the lease
//
// enc(key) is order preserving (0x00 -> 0x00 0xFF, terminated by 0x00 0x01)
// and revisions are stored bitwise-NOT big-endian so the newest version of a
// key sorts first.
package schema

// Prefix bytes of the keyspaces.
const (
	RaftLog   byte = 0x01
	RaftState byte = 0x02
	MVCC      byte = 0x03
	RevLog    byte = 0x04
	Meta      byte = 0x05
	// Lease holds one record per granted lease: granted TTL and the last
	// checkpointed remaining TTL.
	Lease byte = 0x06
	// LeaseKey indexes the keys attached to each lease, so that revoking a
	// lease finds its keys without holding them in memory.
	LeaseKey byte = 0x07
)

// Names inside RaftState.
var (
	HardStateKey    = []byte{RaftState, 'h'}
	ConfStateKey    = []byte{RaftState, 'c'}
	SnapshotMetaKey = []byte{RaftState, 's'}
	// CommitHintKey holds a commit index (8 bytes BE) the applier records
	// with its batch when only the commit index moved; the effective
	// commit is max(HardState.Commit, hint). Term and vote stay in the
	// HardState, written only by the raft loop, so they never regress.
	CommitHintKey = []byte{RaftState, 'k'}
)

// Names inside Meta.
var (
	// FormatKey holds the on-disk format version; a DB without it is not Cairn's.
	FormatKey = []byte{Meta, 'f', 'o', 'r', 'm', 'a', 't'}
	// AppliedKey holds the applied raft index and term (16 bytes BE), written in
	// the same batch as the effects of that entry.
	AppliedKey = []byte{Meta, 'a', 'p', 'p', 'l', 'i', 'e', 'd'}
	// RevisionKey holds the current MVCC main revision (8 bytes BE).
	RevisionKey = []byte{Meta, 'r', 'e', 'v'}
	// ScheduledCompactKey holds the revision the store is compacted to
	// (logically, from the moment the Compact entry is applied).
	ScheduledCompactKey = []byte{Meta, 'c', 'o', 'm', 'p', 'a', 'c', 't', 's'}
	// FinishedCompactKey holds the revision up to which old versions have been
	// physically removed. Finished < Scheduled after a crash means resume.
	FinishedCompactKey = []byte{Meta, 'c', 'o', 'm', 'p', 'a', 'c', 't', 'f'}
	// ClusterIDKey holds the cluster ID (8 bytes BE).
	ClusterIDKey = []byte{Meta, 'c', 'i', 'd'}
	// MemberPrefix is followed by a member ID (8 bytes BE) -> member JSON.
	MemberPrefix = []byte{Meta, 'm', '/'}
	// RemovedMemberPrefix is followed by a removed member ID (8 bytes BE).
	RemovedMemberPrefix = []byte{Meta, 'x', '/'}
)

// FormatVersion is the current on-disk format.
const FormatVersion = "cairn-1"

// PrefixEnd returns the smallest key greater than every key starting with p.
func PrefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
