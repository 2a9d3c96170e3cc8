package raftnode

import (
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func ents(term uint64, idx ...uint64) []*raftpb.Entry {
	out := make([]*raftpb.Entry, len(idx))
	for i, x := range idx {
		out[i] = &raftpb.Entry{Index: proto.Uint64(x), Term: proto.Uint64(term)}
	}
	return out
}

// Committed entries may reach the applier before the Ready is persisted
// only if an earlier Ready persisted them and this one does not rewrite
// them: applying a copy that is not durable yet would let a crash leave
// applied state that the log does not hold.
func TestAppliesBeforeSave(t *testing.T) {
	snap := &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{Index: proto.Uint64(3), Term: proto.Uint64(1)}}
	for _, tc := range []struct {
		name string
		rd   raft.Ready
		want bool
	}{
		{"leader under load: commits 5-6, appends 7-8", raft.Ready{CommittedEntries: ents(2, 5, 6), Entries: ents(2, 7, 8)}, true},
		{"follower: commit index rides with the next entries", raft.Ready{CommittedEntries: ents(2, 5), Entries: ents(2, 6)}, true},
		{"single member: the entry commits in the Ready that appends it", raft.Ready{CommittedEntries: ents(2, 5, 6), Entries: ents(2, 6)}, false},
		{"conflicting tail rewritten at a committed index", raft.Ready{CommittedEntries: ents(3, 5, 6, 7), Entries: ents(3, 6, 7, 8)}, false},
		{"no entries to persist (ordinary order; commit hint rides in the apply batch)", raft.Ready{CommittedEntries: ents(2, 5)}, false},
		{"nothing committed", raft.Ready{Entries: ents(2, 5)}, false},
		{"snapshot to install first", raft.Ready{Snapshot: snap, CommittedEntries: ents(2, 4), Entries: ents(2, 5)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := appliesBeforeSave(&tc.rd); got != tc.want {
				t.Fatalf("appliesBeforeSave = %v, want %v", got, tc.want)
			}
		})
	}
}
