package member

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/cairnkv/cairn/internal/apply"
	"github.com/cairnkv/cairn/internal/membership"
	"github.com/cairnkv/cairn/internal/raftnode"
)

func confChange(t *testing.T, typ raftpb.ConfChangeType, id uint64, urls ...string) *raftpb.ConfChangeV2 {
	t.Helper()
	var cctx apply.ConfContext
	if urls != nil {
		cctx.Member = &membership.Member{ID: id, PeerURLs: urls}
	}
	data, err := json.Marshal(cctx)
	if err != nil {
		t.Fatal(err)
	}
	return &raftpb.ConfChangeV2{
		Changes: []*raftpb.ConfChangeSingle{{Type: typ.Enum(), NodeId: proto.Uint64(id)}},
		Context: data,
	}
}

// TestConfCheckerDecidesInLogOrder feeds the checker one log's conf changes
// in order, as the raft loop does (raft's configuration tracked alongside,
// as raft applies each accepted change), and checks each decision: the
// decisions must depend only on the changes before, never on what this
// member's applier has applied.
func TestConfCheckerDecidesInLogOrder(t *testing.T) {
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cl, err := membership.Load(db)
	if err != nil {
		t.Fatal(err)
	}
	ck := newConfChecker(cl)
	const (
		add     = raftpb.ConfChangeType_ConfChangeAddNode
		learner = raftpb.ConfChangeType_ConfChangeAddLearnerNode
		remove  = raftpb.ConfChangeType_ConfChangeRemoveNode
		update  = raftpb.ConfChangeType_ConfChangeUpdateNode
	)
	// Raft put the initial members in its configuration at bootstrap,
	// before their entries are checked.
	conf := raftnode.ConfMembers{1: false, 2: false, 3: false}
	steps := []struct {
		name string
		cc   *raftpb.ConfChangeV2
		want error
	}{
		{"bootstrap 1", confChange(t, add, 1, "http://a:1"), nil},
		{"bootstrap 2", confChange(t, add, 2, "http://b:1"), nil},
		{"bootstrap 3", confChange(t, add, 3, "http://c:1"), nil},
		{"add with a member's URL", confChange(t, learner, 4, "http://c:1"), ErrPeerURLExist},
		{"add with one URL of two in use", confChange(t, add, 4, "http://d:1", "http://a:1"), ErrPeerURLExist},
		{"add a learner", confChange(t, learner, 4, "http://d:1"), nil},
		{"a second learner", confChange(t, learner, 5, "http://e:1"), ErrTooManyLearners},
		{"promote it (no record)", confChange(t, add, 4), nil},
		{"remove an unknown member", confChange(t, remove, 9), ErrMemberNotFound},
		{"update an unknown member", confChange(t, update, 9, "http://z:1"), ErrMemberNotFound},
		{"update to another member's URL", confChange(t, update, 2, "http://d:1"), ErrPeerURLExist},
		{"update to its own URL", confChange(t, update, 2, "http://b:1"), nil},
		{"update to a new URL", confChange(t, update, 2, "http://b:2"), nil},
		{"the old URL is free again", confChange(t, learner, 6, "http://b:1"), nil},
		{"remove a member", confChange(t, remove, 3), nil},
		{"remove it twice", confChange(t, remove, 3), ErrMemberNotFound},
		{"promote the second learner", confChange(t, add, 6), nil},
		// The bug this checker fixes: a member re-added with the URL of
		// one removed before it, through a member that has not applied
		// the removal yet (its applier lags; the log does not).
		{"re-add the removed member's URL", confChange(t, add, 7, "http://c:1"), nil},
		{"add without a record", confChange(t, add, 8), errAny},
		{"context that is not Cairn's", &raftpb.ConfChangeV2{Changes: []*raftpb.ConfChangeSingle{{Type: add.Enum(), NodeId: proto.Uint64(8)}}, Context: []byte("{")}, errAny},
	}
	for _, s := range steps {
		err := ck.CheckConfChange(conf, s.cc)
		switch {
		case s.want == errAny && err == nil:
			t.Errorf("%s: accepted, want an error", s.name)
		case s.want != errAny && !errors.Is(err, s.want):
			t.Errorf("%s: got %v, want %v", s.name, err, s.want)
		}
		if err != nil {
			continue
		}
		// What raft does with an accepted change.
		for _, ch := range s.cc.GetChanges() {
			switch ch.GetType() {
			case add:
				conf[ch.GetNodeId()] = false
			case learner:
				conf[ch.GetNodeId()] = true
			case remove:
				delete(conf, ch.GetNodeId())
			}
		}
	}
	if len(conf) != 5 {
		t.Errorf("final configuration %v, want members 1, 2, 4, 6, 7 and no 3", conf)
	}
}

// errAny marks a step that must be rejected, for whatever reason.
var errAny = errors.New("any error")
